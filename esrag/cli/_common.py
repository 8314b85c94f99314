"""Shared CLI helpers: loading the encoder and an index, printing results."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from esrag.errors import EsragError

__all__ = [
    "CliError",
    "corpus_spec",
    "load_encoder",
    "model_of_index",
    "open_index",
    "print_json",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
_ENCODERS: dict[tuple[str, str | None], Any] = {}


class CliError(EsragError):
    """A user-facing error: printed as ``esrag: error: ...``, exit code 2."""


def load_encoder(model: str | None, device: str | None = None) -> Any:
    """The encoder for ``model`` (a folder, or ``default``/None for the shipped default).

    Encoders are cached per process, so a pipeline loads each model once.
    """
    key = (model or DEFAULT_MODEL, device)
    if key in _ENCODERS:
        return _ENCODERS[key]
    from esrag.encoder import DEFAULT_MODEL_NAME, EspressoEncoder

    if not sys.stderr.isatty() or not log.isEnabledFor(logging.INFO):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if model in (None, DEFAULT_MODEL, DEFAULT_MODEL_NAME):
        encoder = EspressoEncoder(device=device)
    else:
        path = Path(model).expanduser()
        if path.exists():
            encoder = EspressoEncoder(path, device=device)
            encoder.name = str(path.resolve())  # so later commands can find it from the manifest
        elif _looks_like_hub_name(model):
            try:  # a Hugging Face hub name: the user asked for a download (or their HF cache)
                encoder = EspressoEncoder(model, device=device)
            except (OSError, ValueError) as exc:
                raise CliError(
                    f"{model}: no such model folder, and loading it as a Hugging Face hub name failed: {exc}"
                ) from None
        else:
            raise CliError(f"{model}: no such model folder")
    _ENCODERS[key] = encoder
    return encoder


def _looks_like_hub_name(model: str) -> bool:
    """``owner/name`` with no path syntax (``./x``, ``/x``, ``~``, ``x/y/z``)."""
    parts = model.split("/")
    return len(parts) == 2 and all(parts) and not model.startswith((".", "~")) and "\\" not in model


def model_of_index(folder: Path) -> str | None:
    """The model recorded in an index folder's manifest (a path or the default's name)."""
    from esrag.index.shardset import index_manifest

    return index_manifest(folder, verify=False).model_name


def check_index_folder(folder: str | os.PathLike[str]) -> Path:
    from esrag.index.format import MANIFEST_FILE, is_index_folder

    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise CliError(f"--index {path}: is a file, not an index folder")
    if not path.is_dir():
        raise CliError(f"{path}: no such index folder (build one with `esrag build CORPUS --index {path}`)")
    if not is_index_folder(path):
        raise CliError(f"{path / MANIFEST_FILE}: missing; {path} is not an esrag index")
    return path


def open_index(
    folder: str | os.PathLike[str], model: str | None, device: str | None = None
) -> tuple[Any, Any]:
    """Load ``(index, encoder)``; the model defaults to the one the index was built with."""
    from esrag.index import CascadeIndex

    path = check_index_folder(folder)
    if model is None:
        model = model_of_index(path)
        if model and model != DEFAULT_MODEL and not Path(model).exists():
            from esrag.encoder import DEFAULT_MODEL_NAME

            if model != DEFAULT_MODEL_NAME:
                raise CliError(
                    f"{path}: built with model {model!r}, which is not a folder here; pass --model PATH"
                )
    encoder = load_encoder(model, device)
    return CascadeIndex.load(path, encoder), encoder


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def add_model_args(parser: argparse.ArgumentParser, *, default_help: str) -> None:
    parser.add_argument(
        "--model",
        metavar="PATH",
        default=None,
        help=f"encoder model folder ('default' = all-MiniLM-L6-v2); {default_help}",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    parser.add_argument(
        "--batch-size", type=int, default=64, metavar="N", help="encoder batch size (default 64)"
    )


def progress_flag(args: argparse.Namespace) -> bool | None:
    return False if getattr(args, "quiet", False) else None


def corpus_spec(args: argparse.Namespace) -> Any:
    """The :class:`~esrag.data.corpus.CorpusSpec` of the corpus options on the command line."""
    from esrag.data.corpus import CorpusSpec

    return CorpusSpec(
        id_field=args.id_field,
        text_field=args.text_field,
        title_field=args.title_field or None,
        metadata_fields=tuple(args.metadata_field) if args.metadata_field else None,
        chunk_size=args.chunk_size,
        chunk_overlap=args.chunk_overlap,
    )
