"""What a run optimises, built from its :class:`TrainConfig`: trained layers, evaluation
views, the ESE losses, the shallow-query terms, AdamW with its warmup/decay schedule,
activation checkpointing.

Pure builders: they read the config and the encoder, validate the model's shape against
the config, and return new objects; the :class:`~esrag.train.trainer.Trainer` owns them.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch

from esrag.encoder import EspressoEncoder, View, parse_view, validate_views
from esrag.train.config import Precision, TrainConfig
from esrag.train.losses import (
    CompressLoss,
    CoSENTLoss,
    ESELoss,
    ExpressLoss,
    InfoNCELoss,
    ShallowQueryLoss,
)

__all__ = [
    "autocast_dtype",
    "build_losses",
    "build_optimizer",
    "build_query_loss",
    "eval_views",
    "lr_factor",
    "query_layers",
    "query_views",
    "set_activation_checkpointing",
    "trained_layers",
]

logger = logging.getLogger(__name__)


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the embeddings for ``precision`` on ``device`` (None: float32)."""
    if device.type != "cuda":
        if precision in (Precision.FP16, Precision.BF16):
            logger.warning("precision %s needs CUDA; training in fp32 on %s", precision.value, device)
        return None
    if precision is Precision.FP32:
        return None
    if precision is Precision.FP16:
        return torch.float16
    if precision is Precision.BF16 or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def trained_layers(config: TrainConfig, encoder: EspressoEncoder) -> list[int]:
    """The layers whose embeddings enter the loss (shallow ones, then the last), ascending.

    Raises ValueError when ``compress_dim`` or ``layers`` do not fit the model.
    """
    last = encoder.num_layers
    if config.compress and config.compress_dim > encoder.hidden_size:
        raise ValueError(
            f"compress_dim {config.compress_dim} exceeds the model's hidden size {encoder.hidden_size}"
        )
    for position, layer in enumerate(config.layers):
        if not 1 <= layer < last:
            raise ValueError(
                f"layers[{position}] = {layer} is not a shallow layer of this "
                f"{last}-layer model (1..{last - 1})"
            )
    shallow = sorted(set(config.layers or range(1, last))) if config.express else []
    return [*shallow, last]


def query_layers(config: TrainConfig, encoder: EspressoEncoder) -> list[int]:
    """``config.query_layers`` checked against the model (shallow layers 1..L-1), ascending.

    Raises ValueError naming the position of a layer that is not a shallow layer.
    """
    last = encoder.num_layers
    for position, layer in enumerate(config.query_layers):
        if not 1 <= layer < last:
            raise ValueError(
                f"query_layers[{position}] = {layer} is not a shallow layer of this "
                f"{last}-layer model (1..{last - 1}): a query layer must stop before the documents' layer"
            )
    return sorted(set(config.query_layers))


def query_views(config: TrainConfig, encoder: EspressoEncoder) -> list[View]:
    """The query views held-out selection scores against the full view's documents."""
    return [View(layer, encoder.hidden_size) for layer in query_layers(config, encoder)]


def build_query_loss(config: TrainConfig, encoder: EspressoEncoder) -> ShallowQueryLoss | None:
    """The shallow-query terms of ``config.query_layers`` (None without query layers)."""
    layers = query_layers(config, encoder)
    if not layers:
        return None
    return ShallowQueryLoss(layers, config.query_loss, scale=config.scale, weight=config.query_weight)


def eval_views(config: TrainConfig, encoder: EspressoEncoder) -> list[View]:
    """The views held-out selection scores, the full view last (it is always scored):
    ``config.eval_views`` checked against the model, else layer 2 at ``compress_dim`` (the
    full view alone with ``query_layers``: their shallow queries are scored instead).
    """
    full = View(encoder.num_layers, encoder.hidden_size)
    if not config.eval_views and config.query_layers:
        return [full]
    if config.eval_views:
        views = validate_views(
            [parse_view(v) for v in config.eval_views], encoder.num_layers, encoder.hidden_size
        )
        return [*dict.fromkeys(v for v in views if v != full), full]
    coarse = View(min(2, encoder.num_layers), min(config.compress_dim, encoder.hidden_size))
    return [coarse, full] if coarse != full else [full]


def _ese_loss(config: TrainConfig, base: torch.nn.Module, compress: CompressLoss | None) -> ESELoss:
    express = (
        ExpressLoss(
            base,
            kl_weight=config.kl_weight,
            temperature=config.kl_temperature,
            reduction=config.express_reduction,
            prefix_dims=config.prefix_dims,
        )
        if config.express
        else None
    )
    return ESELoss(
        base,
        express=express,
        compress=compress,
        express_weight=config.express_weight,
        compress_weight=config.compress_weight,
        prefix_dims=config.prefix_dims,
    )


def build_losses(config: TrainConfig) -> tuple[ESELoss, ESELoss, CompressLoss | None]:
    """(InfoNCE-based ESE loss for pairs, CoSENT-based one for scored rows, their shared
    learn-to-compress term or None).
    """
    compress = (
        CompressLoss(
            config.compress_dim,
            temperature=config.compress_temperature,
            mode=config.pca,
            momentum=config.pca_momentum,
        )
        if config.compress
        else None
    )
    infonce = _ese_loss(config, InfoNCELoss(config.scale), compress)
    cosent = _ese_loss(config, CoSENTLoss(config.scale), compress)
    return infonce, cosent, compress


def lr_factor(step: int, *, warmup: int, total: int) -> float:
    """The learning-rate multiplier at ``step``: linear warmup to 1, then linear decay to 0."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


def build_optimizer(
    config: TrainConfig, encoder: EspressoEncoder, total: int, *, warmup: int | None = None
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no weight decay on biases and norms) and its schedule over ``total`` steps
    (``warmup`` steps; default ``warmup_ratio`` of them, 10% when that is None).
    """
    decay: list[torch.nn.Parameter] = []
    plain: list[torch.nn.Parameter] = []
    for name, param in encoder.model.named_parameters():
        if param.requires_grad:
            no_decay = name.endswith("bias") or "norm" in name.lower()
            (plain if no_decay else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": plain, "weight_decay": 0.0}],
        lr=config.lr,
    )
    if warmup is None:
        warmup = round((0.1 if config.warmup_ratio is None else config.warmup_ratio) * total)
    factor = functools.partial(lr_factor, warmup=warmup, total=total)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_activation_checkpointing(model: Any, enable: bool) -> None:
    """Switch activation (gradient) checkpointing; transformers 5 renamed the methods."""
    if enable:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()
