"""The persisted description of an ESE encoder folder (``esrag.json``)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from esrag.encoder.views import Pooling, View
from esrag.validation import is_int

__all__ = ["ENCODER_CONFIG_FILE", "ENCODER_FORMAT_VERSION", "EncoderConfig", "read_folder_config"]

logger = logging.getLogger(__name__)

ENCODER_CONFIG_FILE = "esrag.json"
ENCODER_FORMAT_VERSION = 1


@dataclass(frozen=True)
class EncoderConfig:
    """What esrag needs beyond the Hugging Face weights: pooling, length limit, default view."""

    pooling: Pooling = Pooling.MEAN
    max_length: int | None = None
    default_view: View | None = None
    name: str | None = None
    format_version: int = ENCODER_FORMAT_VERSION

    def to_json(self) -> dict[str, object]:
        """The config as a JSON object (what ``esrag.json`` holds)."""
        data = asdict(self)
        data["pooling"] = self.pooling.value
        data["default_view"] = self.default_view.to_json() if self.default_view else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, object], *, source: str) -> EncoderConfig:
        """Parse and check an ``esrag.json`` object; errors name ``source``."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        version = data.get("format_version", ENCODER_FORMAT_VERSION)
        if not is_int(version):
            raise ValueError(f"{source}: field 'format_version' must be an int, got {version!r}")
        if version > ENCODER_FORMAT_VERSION:
            raise ValueError(
                f"{source}: format_version {version!r} is newer than this esrag understands "
                f"({ENCODER_FORMAT_VERSION}); upgrade esrag"
            )
        try:
            pooling = Pooling(data.get("pooling", "mean"))
        except ValueError:
            raise ValueError(
                f"{source}: field 'pooling' must be one of "
                f"{[p.value for p in Pooling]}, got {data.get('pooling')!r}"
            ) from None
        view = data.get("default_view")
        if view is not None and (
            not isinstance(view, list) or len(view) != 2 or not all(is_int(v) and v >= 1 for v in view)
        ):
            raise ValueError(
                f"{source}: field 'default_view' must be [layer, dim] (two ints >= 1), got {view!r}"
            )
        max_length = data.get("max_length")
        if max_length is not None and (not is_int(max_length) or max_length < 2):
            raise ValueError(f"{source}: field 'max_length' must be an int >= 2, got {max_length!r}")
        name = data.get("name")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"{source}: field 'name' must be a str, got {name!r}")
        return cls(
            pooling=pooling,
            max_length=max_length,
            default_view=View(view[0], view[1]) if view is not None else None,
            name=name,
            format_version=ENCODER_FORMAT_VERSION,
        )


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from None


def read_folder_config(folder: Path) -> EncoderConfig | None:
    """Read ``esrag.json``, else a sentence-transformers layout, else ``None``."""
    path = folder / ENCODER_CONFIG_FILE
    if path.is_file():
        return EncoderConfig.from_json(_read_json(path), source=str(path))  # type: ignore[arg-type]
    pooling_path = folder / "1_Pooling" / "config.json"
    st_path = folder / "sentence_bert_config.json"
    if not pooling_path.is_file() and not st_path.is_file():
        return None
    pooling = Pooling.MEAN
    if pooling_path.is_file():
        modes = _read_json(pooling_path)
        if not isinstance(modes, dict):
            raise ValueError(f"{pooling_path}: expected a JSON object, got {type(modes).__name__}")
        if modes.get("pooling_mode_cls_token"):
            pooling = Pooling.CLS
        elif not modes.get("pooling_mode_mean_tokens", True):
            logger.warning("%s: pooling mode not supported by esrag; using mean pooling", pooling_path)
    max_length = None
    if st_path.is_file():
        st_config = _read_json(st_path)
        if not isinstance(st_config, dict):
            raise ValueError(f"{st_path}: expected a JSON object, got {type(st_config).__name__}")
        max_length = st_config.get("max_seq_length")
        if max_length is not None and (not is_int(max_length) or max_length < 2):
            raise ValueError(f"{st_path}: field 'max_seq_length' must be an int >= 2, got {max_length!r}")
    return EncoderConfig(pooling=pooling, max_length=max_length)
