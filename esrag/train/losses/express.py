"""Learn-to-express: shallow layers become embedders in their own right."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from esrag.train.config import ExpressReduction
from esrag.train.losses.base import PairEmbeddings, base_terms

__all__ = ["ExpressLoss", "kl_alignment", "layer_weight"]


def layer_weight(layer: int) -> float:
    """ESE's weight of shallow layer ``layer`` (1-based transformer layer): 1 / (1 + ln i)."""
    if layer < 1:
        raise ValueError(f"layer must be >= 1, got {layer}")
    return 1.0 / (1.0 + math.log(layer))


def kl_alignment(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T · KL(softmax(teacher/T) ‖ softmax(student/T))`` over rows, batch-mean.

    The teacher is detached here, so this term never sends gradient into the teacher.
    """
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.softmax(teacher_logits.detach().float() / temperature, dim=-1)
    return F.kl_div(log_student, teacher, reduction="batchmean") * temperature


class ExpressLoss(nn.Module):
    """mean_i w_i · (base(layer i) + kl_weight · KL(last ‖ layer i)), w_i = 1/(1 + ln i).

    For each shallow layer i the base loss (InfoNCE or CoSENT) runs on that layer's pooled
    embedding, and the layer's in-batch similarity distribution (row softmax of the scaled
    cosine logits the base loss uses, divided by ``temperature``) is pulled towards the last
    layer's, which is **detached** (a teacher, as in the paper).

    Choices and deviations (ESE v2 and the angle_emb reference differ, see ESE.md):

    - i is the 1-based transformer layer, so layer 1 has weight 1; the reference counts the
      embedding output as layer 0 and skips the penultimate layer (off by one) — here every
      layer 1..L-1 (or the configured subset) is trained.
    - Shallow layers get the base loss on their full width, as in the paper; the reference
      trains them only on the first K dims. ``prefix_dims`` adds prefix terms if wanted.
    - ``reduction="mean"`` (default) divides by the number of shallow layers as the
      reference code does, so the shallow terms together weigh about half the last layer's
      base term; ``"sum"`` adds them as the paper's equation does (~2.9× the last layer's
      for six layers, which measurably costs full-depth quality, see ExpressReduction).
    - The KL is scaled by T (the reference's ``compute_distillation_loss`` convention)
      rather than Hinton's T²; the current reference code has no such KL at all.
    """

    def __init__(
        self,
        base: nn.Module,
        *,
        kl_weight: float = 1.0,
        temperature: float = 1.0,
        reduction: ExpressReduction | str = ExpressReduction.MEAN,
        prefix_dims: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.base = base
        self.kl_weight = float(kl_weight)
        self.temperature = float(temperature)
        self.reduction = ExpressReduction(reduction)
        self.prefix_dims = tuple(prefix_dims)

    def forward(
        self, shallow: Mapping[int, PairEmbeddings], teacher: PairEmbeddings
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss over the ``shallow`` layers, and per-layer values for logging."""
        if not shallow:
            return teacher.anchors.new_zeros(()), {}
        teacher_logits = self.base.logits(teacher).detach()
        total = teacher.anchors.new_zeros((), dtype=torch.float32)
        parts: dict[str, float] = {}
        for layer, batch in sorted(shallow.items()):
            term = base_terms(self.base, batch, self.prefix_dims)
            parts[f"base_L{layer}"] = float(term.detach())
            if self.kl_weight > 0:
                kl = kl_alignment(self.base.logits(batch), teacher_logits, self.temperature)
                parts[f"kl_L{layer}"] = float(kl.detach())
                term = term + self.kl_weight * kl
            total = total + layer_weight(layer) * term
        if self.reduction is ExpressReduction.MEAN:
            total = total / len(shallow)
        return total, parts
