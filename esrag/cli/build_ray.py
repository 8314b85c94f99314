"""``esrag build ... --ray [ADDRESS]``: the build on a Ray cluster, into a sharded index."""

from __future__ import annotations

import argparse
from typing import Any

from esrag.cli._common import CliError, corpus_spec, progress_flag

__all__ = ["add_ray_arguments", "build_ray"]


def add_ray_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``--ray`` options of ``esrag build`` to ``p``."""
    g = p.add_argument_group("Ray (pip install 'esrag[ray]'): encode on a cluster into a sharded index")
    g.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="build with Ray: at ADDRESS (e.g. ray://head:10001 or auto), or on a local cluster "
        "sized to this machine when no address is given",
    )
    g.add_argument("--ray-actors", type=int, default=2, metavar="N", help="encoder actors (default 2)")
    g.add_argument(
        "--ray-threads-per-actor",
        type=int,
        metavar="N",
        help="CPUs (torch threads) per actor (default: the cluster's CPUs / actors)",
    )
    g.add_argument(
        "--ray-gpus-per-actor", type=float, default=0.0, metavar="G", help="GPUs per actor (default 0)"
    )
    g.add_argument(
        "--shards", type=int, default=4, metavar="N", help="index shards of a new index (default 4)"
    )


def build_ray(args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
    """Run the Ray build the command line asks for; returns the build report."""
    from esrag.index import CascadeConfig
    from esrag.scale.ray_build import RayOptions, build_sharded

    spec = corpus_spec(args)
    try:
        options = RayOptions(
            address=None if args.ray == "local" else args.ray,
            actors=args.ray_actors,
            threads_per_actor=args.ray_threads_per_actor,
            gpus_per_actor=args.ray_gpus_per_actor,
            shards=args.shards,
            batch_size=args.batch_size,
        )
    except (TypeError, ValueError) as exc:
        raise CliError(f"--ray options: {exc}") from None
    if args.cache_embeddings:
        raise CliError(
            "--cache-embeddings is not supported with --ray (the actors encode each document once)"
        )
    return build_sharded(
        args.corpus,
        args.index,
        model=args.model,
        config=CascadeConfig(**overrides),
        spec=spec,
        fmt=args.format,
        options=options,
        rebuild=args.rebuild,
        device=args.device,
        show_progress_bar=progress_flag(args),
    )
