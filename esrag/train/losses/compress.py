"""Learn-to-compress: the leading dimensions carry the principal components."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from esrag.train.config import PcaMode
from esrag.train.losses.base import float32_region

__all__ = ["CompressLoss", "RunningPCA"]

logger = logging.getLogger(__name__)


class RunningPCA:
    """Centred PCA of one layer's embeddings from an exponential moving covariance.

    ``update(x)`` folds a batch's mean and (biased) covariance into EMAs; the first updates
    are plain running averages (momentum min(m, n/(n+1)) for the n-th update), so early
    estimates are not biased towards zero. ``components(k)`` is the top-k eigenvectors
    (H, k) of the covariance, in float64 eigendecomposition, each with the sign that makes
    its k-th coordinate non-negative (its largest entry positive if that coordinate is 0): the
    target then stays as close as possible to the current coordinates and does not flip sign
    from one step to the next.
    """

    def __init__(self, momentum: float) -> None:
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.mean: torch.Tensor | None = None
        self.cov: torch.Tensor | None = None
        self.updates = 0

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch of embeddings (N, H) into the running mean and covariance."""
        x = x.detach().to(torch.float64)
        if self.mean is not None and self.cov is not None and self.mean.device != x.device:
            self.mean, self.cov = self.mean.to(x.device), self.cov.to(x.device)
        mean = x.mean(dim=0)
        centred = x - mean
        cov = centred.T @ centred / x.shape[0]
        m = min(self.momentum, self.updates / (self.updates + 1))
        if self.mean is None or self.cov is None:
            self.mean, self.cov = mean, cov
        else:
            # E[xxᵀ] mixes linearly; re-centre on the mixed mean.
            second = m * (self.cov + torch.outer(self.mean, self.mean)) + (1 - m) * (
                cov + torch.outer(mean, mean)
            )
            self.mean = m * self.mean + (1 - m) * mean
            self.cov = second - torch.outer(self.mean, self.mean)
        self.updates += 1

    @torch.no_grad()
    def components(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean (H,), components (H, k)) as float32."""
        if self.mean is None or self.cov is None:
            raise RuntimeError("RunningPCA.components() before any update()")
        _values, vectors = torch.linalg.eigh(self.cov)
        top = vectors[:, -k:].flip(dims=[1])  # descending variance
        diag = top[torch.arange(k), torch.arange(k)]
        largest = top.gather(0, top.abs().argmax(dim=0, keepdim=True))[0]
        pivot = torch.where(diag.abs() > 1e-12, diag, largest)  # tie: largest entry positive
        signs = torch.where(pivot < 0, -1.0, 1.0).to(top.dtype)
        return self.mean.float(), (top * signs).float()

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors to checkpoint (mean, covariance, update count)."""
        if self.mean is None or self.cov is None:
            return {"updates": torch.tensor(self.updates)}
        return {"mean": self.mean, "cov": self.cov, "updates": torch.tensor(self.updates)}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state` returned."""
        self.updates = int(state["updates"])
        self.mean = state.get("mean")
        self.cov = state.get("cov")


class CompressLoss(nn.Module):
    """``MSE(x[:, :K], t) + T · KL(softmax(t/T) ‖ softmax(x[:, :K]/T))`` per layer.

    ``t = (x − μ) · U_K`` is the real, **centred** PCA projection of the layer's embeddings
    onto its top-K principal directions, computed without gradient (a fixed target, as in
    the reference's ``@torch.no_grad`` ``pca_compress``). x is the un-normalised pooled
    embedding of every text of the batch (anchors, positives, negatives). The KL runs over
    the K features of each row, as in the paper and the reference's distillation loss.

    PCA source (``mode``):

    - ``running`` (default): an EMA covariance per layer (momentum ``momentum``), updated
      with each batch before the target is computed. A batch of B texts spans at most B−1
      directions, so a per-batch PCA cannot define K=64..128 components at batch 32; the
      running estimate can, and it changes slowly, so the target is stable across steps.
      Its state is saved in checkpoints, so resuming is exact.
    - ``batch``: the PCA of the current batch alone (what the reference recomputes every
      batch). Components beyond the batch's rank are arbitrary; a warning says so.

    Deviations from the reference: it decomposes softmax(mᵀm/√D) — an uncentred, softmaxed
    Gram matrix — with ``torch.svd_lowrank`` and scales the projection by the singular
    values; here it is the textbook centred covariance PCA with orthonormal components, so
    the target has the variance of the data along each direction.
    """

    def __init__(
        self,
        dim: int,
        *,
        temperature: float = 1.0,
        mse_weight: float = 1.0,
        mode: PcaMode | str = PcaMode.RUNNING,
        momentum: float = 0.99,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.dim = int(dim)
        self.temperature = float(temperature)
        self.mse_weight = float(mse_weight)
        self.mode = PcaMode(mode)
        self.momentum = float(momentum)
        self.pcas: dict[int, RunningPCA] = {}
        self._warned = False

    def target(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """The PCA target (N, K) for embeddings ``x`` (N, H) of ``layer``; no gradient."""
        k = min(self.dim, x.shape[1])
        if self.mode is PcaMode.BATCH:
            pca = RunningPCA(0.0)
            if x.shape[0] - 1 < k and not self._warned:
                logger.warning(
                    "per-batch PCA: %d texts span at most %d directions, fewer "
                    "than compress_dim=%d; the rest are arbitrary",
                    x.shape[0],
                    x.shape[0] - 1,
                    k,
                )
                self._warned = True
        else:
            pca = self.pcas.setdefault(layer, RunningPCA(self.momentum))
        pca.update(x)
        mean, components = pca.components(k)
        with torch.no_grad(), float32_region(x.device):  # a float32 projection under autocast too
            return (x.detach().float() - mean.to(x.device)) @ components.to(x.device)

    def forward(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """The compression loss of embeddings ``x`` (N, H) of ``layer``."""
        target = self.target(x, layer)
        with float32_region(x.device):
            prefix = x[:, : target.shape[1]].float()
            loss = self.mse_weight * F.mse_loss(prefix, target)
            if self.temperature > 0:
                t = self.temperature
                loss = loss + t * F.kl_div(
                    F.log_softmax(prefix / t, dim=-1),
                    F.softmax(target / t, dim=-1),
                    reduction="batchmean",
                )
        return loss

    # ------------------------------------------------------------------ state
    def pca_state(self, *, to_cpu: bool = True) -> dict[str, torch.Tensor]:
        """Flat tensor dict of the running PCA state (for ``torch.save``).

        ``to_cpu=False`` keeps the tensors where they are: a cheap snapshot (updates replace
        the tensors rather than modifying them, so the snapshot stays valid).
        """
        out: dict[str, torch.Tensor] = {}
        for layer, pca in self.pcas.items():
            for key, value in pca.state().items():
                out[f"{layer}.{key}"] = value.cpu() if to_cpu else value
        return out

    def load_pca_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`pca_state` returned."""
        grouped: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in state.items():
            layer, key = name.split(".", 1)
            grouped.setdefault(int(layer), {})[key] = value
        self.pcas = {}
        for layer, values in grouped.items():
            pca = RunningPCA(self.momentum)
            pca.load_state(values)
            self.pcas[layer] = pca
