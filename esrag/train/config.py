"""TrainConfig: every knob of an ESE fine-tuning run, frozen and JSON round-trippable."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from esrag.validation import check_int, is_int, is_number

__all__ = [
    "RESUME_IGNORED_FIELDS",
    "CorpusPairs",
    "DataKind",
    "ExpressReduction",
    "PcaMode",
    "Precision",
    "QueryLoss",
    "TrainConfig",
]


class DataKind(str, enum.Enum):
    """What a ``train`` source is; ``auto`` decides from the path and the columns."""

    AUTO = "auto"
    PAIRS = "pairs"  # (anchor, positive[, negative]) rows
    SCORED = "scored"  # (text1, text2, score) rows
    BEIR = "beir"  # a BEIR folder: qrels/<split>.tsv → (query, document) pairs
    CORPUS = "corpus"  # a corpus file: pairs mined from the documents themselves


class CorpusPairs(str, enum.Enum):
    """Label-free pairs mined from a corpus (for ``corpus`` sources, and extra for ``beir``)."""

    NONE = "none"
    TITLE = "title"  # title → text
    SENTENCE = "sentence"  # one sentence → the rest of its document (inverse cloze)


class Precision(str, enum.Enum):
    """Autocast dtype; fp16/bf16 only on CUDA (``auto``: bf16, else fp16 on CUDA; fp32 on CPU)."""

    AUTO = "auto"
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


class PcaMode(str, enum.Enum):
    """Where learn-to-compress gets its PCA: a running (EMA) covariance, or each batch alone."""

    RUNNING = "running"
    BATCH = "batch"


class ExpressReduction(str, enum.Enum):
    """How the weighted shallow-layer terms combine: averaged (reference, default) or summed (paper).

    ``mean`` is the default since it was measured: with ``sum`` the shallow terms of a
    6-layer model weigh ~2.9× the last layer's and the full view gained nothing on SciFact
    (0.645 → 0.644 nDCG@10); with ``mean`` (~0.57×) it gained (→ 0.668) on the same rows.
    """

    SUM = "sum"
    MEAN = "mean"


class QueryLoss(str, enum.Enum):
    """The shallow-query terms of ``query_layers`` (see :mod:`esrag.train.losses.query`)."""

    DISTILL = "distill"  # label-free: layer-k query → its own detached last layer
    CONTRASTIVE = "contrastive"  # layer-k query vs the last layer of its positive (in-batch negatives)
    BOTH = "both"


_ENUMS: dict[str, type[enum.Enum]] = {
    "kind": DataKind,
    "corpus_pairs": CorpusPairs,
    "precision": Precision,
    "pca": PcaMode,
    "express_reduction": ExpressReduction,
    "query_loss": QueryLoss,
}
_INT_MINIMUMS = {
    **dict.fromkeys(("batch_size", "grad_accum", "compress_dim", "keep_checkpoints", "log_every"), 1),
    **dict.fromkeys(("min_grade", "negative_depth", "eval_docs", "max_steps", "max_examples"), 1),
    **dict.fromkeys(("save_every", "seed", "negative_skip", "early_stopping", "eval_every"), 0),
    "max_length": 2,
}
_OPTIONAL_INTS = frozenset({"max_steps", "max_examples", "max_length", "eval_every"})
_AUTO = frozenset({"epochs", "warmup_ratio", "eval_fraction"})  # None: chosen from the data
_STR_TUPLES = ("train", "eval", "eval_views", "where")
_INT_TUPLES = ("layers", "prefix_dims", "query_layers")

# Fields that may change between an interrupted run and its resumption.
RESUME_IGNORED_FIELDS = frozenset(
    {"show_progress", "log_every", "resume", "device", "checkpoint_dir", "output", "strict"}
)


@dataclass(frozen=True)
class TrainConfig:
    """One ESE training run (learn-to-express, and learn-to-compress when ``compress``).

    Data
        train: sources, each a JSONL/CSV/TSV/Parquet file, a BEIR folder, a corpus file
            (``kind="corpus"``) or, when online, a Hugging Face hub dataset name.
        kind: how to read every source (``auto`` detects per source).
        corpus_pairs: mined pairs for ``corpus`` sources (default ``title`` there) and, for
            ``beir`` sources, extra pairs from the folder's corpus.
        anchor_column / positive_column / negative_column / score_column: column names;
            ``None`` tries common names (anchor/query/sentence1/sent0, positive/sentence2/
            sent1, negative/hard_neg, score/label).
        score_range: declared (low, high) of scores; a score outside it is an error.
        where: row filters ``"column=value"`` applied to file and hub sources.
        split: BEIR qrels split, or hub split (default ``train``).
        max_examples: cap per source (a seeded random sample).
        min_grade: BEIR judgments of at least this grade become training pairs; judged
            documents of a lower positive grade are neither positives nor negatives (masked
            out of the in-batch negatives and never mined as hard negatives).
        hard_negatives: mine one hard negative per pair with the base model: a seeded random
            pick among the dense top ``negative_depth`` documents of the anchor, skipping the
            first ``negative_skip`` ranks (likely unjudged positives) and every judged one.
    Held-out selection (see :mod:`esrag.train.selection`)
        eval: explicit held-out sources; else ``eval_fraction`` of the distinct training
            anchors (whole queries) is held out. ``None`` (default): 10% of them, at most 300
            and only when that gives at least 20; never from label-free mined pairs.
        eval_every: evaluate every N optimizer steps (0: only at the end; ``None``: about
            six evaluations per run); the selected checkpoint becomes the output.
        eval_views: ``"layer:dim"`` views to score; default the shallowest trained layer
            ≥ 2 at ``compress_dim``; the full view is always scored.
        eval_docs: documents the held-out queries are ranked against: the source's whole
            corpus up to this many (every judged document, then a seeded random sample).
        early_stopping: stop after this many evaluations that neither choose a new
            checkpoint nor raise the best full-view score (0: never).
        strict: a run whose selected checkpoint is the base model (training did not beat
            it on the held-out slice) is an error for ``esrag train`` (non-zero exit).
    Model
        base: model folder or name (default all-MiniLM-L6-v2, offline); max_length: tokens
            per text while training (default from the data, see :mod:`esrag.train.defaults`);
            pooling: mean/cls override.
    Optimisation
        epochs (fractional allowed) or max_steps (default: from the data's size); batch_size
        (texts per anchor side); grad_accum; lr; weight_decay; warmup_ratio (linear warmup,
        then linear decay; default 10% of the steps, at most 100); max_grad_norm;
        precision; gradient_checkpointing; seed; device.
    Loss (see :mod:`esrag.train.losses`)
        scale: cosine scale (1/τ) of InfoNCE and CoSENT. express: train shallow layers
        (weights 1/(1+ln i)), express_weight, express_reduction, kl_weight and
        kl_temperature of the alignment to the detached last layer; layers: shallow layers
        to train (default all). compress: learn-to-compress on the first compress_dim dims
        (off by default: measured on SciFact, STS-B and SNLI it improved no view, width
        being compressed at index time by the corpus-fitted ``pca``/``adapter`` transforms,
        and it cost the full view ~0.005 nDCG@10 on SciFact; ``--compress`` turns it on),
        compress_weight, compress_temperature, pca (running/batch), pca_momentum.
        prefix_dims: extra base-loss terms on these prefix widths of every trained layer (a
        2DMSE/Matryoshka ingredient, not in the ESE paper; off by default).
    Shallow queries (see :mod:`esrag.train.losses.query`)
        query_layers: layers a query's encoder pass will stop at, against last-layer
            documents (an index with ``query_layer=k, query_map="none"``); each adds
            ``query_weight`` · the ``query_loss`` terms, averaged over the layers, to the ESE
            loss: ``distill`` (the anchor's layer-k embedding towards its own detached last
            layer; label-free), ``contrastive`` (InfoNCE of the anchor's layer-k embedding
            against the detached last-layer positives, in-batch and hard negatives) or
            ``both``. Held-out selection then scores each layer-k query against the full
            view's documents (the default ``eval_views`` become the full view alone).
    Checkpoints
        checkpoint_dir (default ``<output>-checkpoints``), save_every (steps; 0: only at
        evaluations and the end), keep_checkpoints, resume (continue an interrupted run).
    """

    train: tuple[str, ...]
    output: str
    base: str | None = None
    # data
    kind: DataKind = DataKind.AUTO
    corpus_pairs: CorpusPairs = CorpusPairs.NONE
    anchor_column: str | None = None
    positive_column: str | None = None
    negative_column: str | None = None
    score_column: str | None = None
    score_range: tuple[float, float] | None = None
    where: tuple[str, ...] = ()
    split: str = "train"
    max_examples: int | None = None
    min_grade: int = 1
    hard_negatives: bool = False
    negative_skip: int = 3
    negative_depth: int = 30
    eval: tuple[str, ...] = ()
    eval_fraction: float | None = None
    eval_every: int | None = None
    eval_views: tuple[str, ...] = ()
    eval_docs: int = 1000
    early_stopping: int = 3
    strict: bool = False
    # model
    max_length: int | None = None
    pooling: str | None = None
    # optimisation
    epochs: float | None = None
    max_steps: int | None = None
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float | None = None
    max_grad_norm: float = 1.0
    precision: Precision = Precision.AUTO
    gradient_checkpointing: bool = False
    seed: int = 42
    device: str | None = None
    # loss
    scale: float = 20.0
    express: bool = True
    express_weight: float = 1.0
    express_reduction: ExpressReduction = ExpressReduction.MEAN
    kl_weight: float = 1.0
    kl_temperature: float = 1.0
    layers: tuple[int, ...] = ()
    compress: bool = False
    compress_dim: int = 64
    compress_weight: float = 1.0
    compress_temperature: float = 1.0
    pca: PcaMode = PcaMode.RUNNING
    pca_momentum: float = 0.99
    prefix_dims: tuple[int, ...] = ()
    query_layers: tuple[int, ...] = ()
    query_loss: QueryLoss = QueryLoss.DISTILL
    query_weight: float = 1.0
    # checkpoints and reporting
    checkpoint_dir: str | None = None
    save_every: int = 50
    keep_checkpoints: int = 1
    resume: bool = True
    show_progress: bool | None = None
    log_every: int = 10

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name, enum_type in _ENUMS.items():
            value = getattr(self, name)
            try:
                set_(self, name, enum_type(value))
            except ValueError:
                choices = ", ".join(repr(m.value) for m in enum_type)  # type: ignore[attr-defined]
                raise ValueError(f"{name} must be one of {choices}, got {value!r}") from None
        for name in _STR_TUPLES:
            set_(self, name, _as_tuple(name, getattr(self, name), str))
        for name in _INT_TUPLES:
            set_(self, name, _as_tuple(name, getattr(self, name), int))
        if not self.train:
            raise ValueError("train must name at least one data source")
        if not isinstance(self.output, str) or not self.output:
            raise ValueError(f"output must be a non-empty folder path, got {self.output!r}")
        if self.score_range is not None:
            pair = _as_tuple("score_range", self.score_range, float)
            if len(pair) != 2:
                raise ValueError(f"score_range must be (low, high), got {self.score_range!r}")
            low, high = pair
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(f"score_range must be (low, high) with low < high, got {self.score_range!r}")
            set_(self, "score_range", (float(low), float(high)))
        for item in self.where:
            if "=" not in item or not item.split("=", 1)[0]:
                raise ValueError(f"where entries must look like 'column=value', got {item!r}")
        self._check_numbers()

    def _check_ints(self) -> None:
        for name, minimum in _INT_MINIMUMS.items():
            if getattr(self, name) is not None or name not in _OPTIONAL_INTS:
                _check_int(name, getattr(self, name), minimum)
        if self.negative_depth <= self.negative_skip:
            raise ValueError(
                f"negative_depth ({self.negative_depth}) must exceed negative_skip ({self.negative_skip})"
            )

    def _check_numbers(self) -> None:
        self._check_ints()
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2: in-batch negatives need company")
        checks: dict[str, Callable[[float], bool]] = {
            "epochs": lambda v: v > 0,
            "lr": lambda v: v > 0,
            "weight_decay": lambda v: v >= 0,
            "warmup_ratio": lambda v: 0 <= v < 1,
            "max_grad_norm": lambda v: v >= 0,
            "scale": lambda v: v > 0,
            "express_weight": lambda v: v >= 0,
            "kl_weight": lambda v: v >= 0,
            "kl_temperature": lambda v: v > 0,
            "compress_weight": lambda v: v >= 0,
            "compress_temperature": lambda v: v >= 0,
            "pca_momentum": lambda v: 0 <= v < 1,
            "eval_fraction": lambda v: 0 <= v < 1,
            "query_weight": lambda v: v > 0,
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if value is None and name in _AUTO:
                continue
            if not is_number(value) or not ok(value):
                raise ValueError(f"{name} has an invalid value {value!r}")
        for name in ("layers", "prefix_dims", "query_layers"):
            for position, value in enumerate(getattr(self, name)):
                if value < 1:
                    raise ValueError(f"{name}[{position}] must be >= 1, got {value}")

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        """The config as a JSON object (enums as values, tuples as lists)."""
        out = asdict(self)
        for name in _ENUMS:
            out[name] = getattr(self, name).value
        for name in (*_STR_TUPLES, *_INT_TUPLES):
            out[name] = list(out[name])
        if self.score_range is not None:
            out["score_range"] = list(self.score_range)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_json`; unknown fields are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        values = dict(data)
        if values.get("score_range") is not None:
            values["score_range"] = tuple(values["score_range"])
        return cls(**values)

    def differences(self, other: TrainConfig) -> list[str]:
        """Names of fields (outside :data:`RESUME_IGNORED_FIELDS`) that differ."""
        mine, theirs = self.to_json(), other.to_json()
        return [k for k in mine if k not in RESUME_IGNORED_FIELDS and mine[k] != theirs[k]]


def field_defaults() -> dict[str, Any]:
    """Default of every optional field (for CLI generation)."""
    return {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


def _as_tuple(name: str, value: Any, kind: type) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) and kind is str:
        value = (value,)
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of {kind.__name__}, got {value!r}")
    out = []
    for position, item in enumerate(value):
        if kind is str and not isinstance(item, str):
            raise TypeError(f"{name}[{position}] must be a str, got {item!r}")
        if kind is int and not is_int(item):
            raise TypeError(f"{name}[{position}] must be an int, got {item!r}")
        if kind is float and not is_number(item):
            raise TypeError(f"{name}[{position}] must be a number, got {item!r}")
        out.append(kind(item))
    return tuple(out)


def _check_int(name: str, value: Any, minimum: int) -> None:
    check_int(value, name, minimum=minimum)
