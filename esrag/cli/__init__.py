"""The ``esrag`` command line (entry point :func:`esrag.cli.main.main`)."""

__all__ = []
