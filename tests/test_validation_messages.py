"""Every validation and corruption message of the encoder, index and storage, by pytest.raises.

Messages already exercised elsewhere (tests/test_encoder.py, test_index*.py, test_embeddings.py,
test_vectorstore*.py) are not repeated here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faiss
import numpy as np
import pytest
import torch

from esrag.encoder import EspressoEncoder, View, validate_views
from esrag.encoder.config import read_folder_config
from esrag.index import (
    CascadeConfig,
    CascadeIndex,
    IndexFormatError,
    ModelMismatchError,
    fit_transform,
)
from esrag.index.coarse import CoarseIndex
from esrag.index.format import data_folder

N, DIM, COARSE = 300, 16, 8


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    fine = _unit(rng.standard_normal((N, DIM)))
    return _unit(fine + 0.1 * rng.standard_normal((N, DIM))), fine


def _build(vectors: tuple[np.ndarray, np.ndarray], **config: Any) -> CascadeIndex:
    return CascadeIndex.build_from_embeddings(
        *vectors,
        ids=[f"d{i}" for i in range(N)],
        texts=[f"text {i}" for i in range(N)],
        metadatas=[{"g": i % 3} for i in range(N)],
        config=CascadeConfig(coarse_dim=COARSE, **config),
    )


@pytest.fixture(scope="module")
def index(vectors: tuple[np.ndarray, np.ndarray]) -> CascadeIndex:
    return _build(vectors)


@pytest.fixture(scope="module")
def saved_indexes(
    tmp_path_factory: pytest.TempPathFactory, vectors: tuple[np.ndarray, np.ndarray]
) -> dict[str, Path]:
    """Pristine saved indexes to copy from: a ``pca`` one and a ``prefix`` one."""
    root = tmp_path_factory.mktemp("saved")
    return {kind: _build(vectors, transform=kind).save(root / kind) for kind in ("pca", "prefix")}


# ------------------------------------------------------------------ index input


class FlatEmbeddings:
    """A LangChain-like embedder that returns one flat list instead of one list per text."""

    def embed_documents(self, texts: list[str]) -> list[float]:
        return [0.5] * len(texts)

    def embed_query(self, text: str) -> list[float]:
        return [0.5]


def _input_cases(index: CascadeIndex, vectors: tuple[np.ndarray, np.ndarray]) -> dict[str, Callable[[], Any]]:
    src, fine = vectors[0][:2], vectors[1][:2]
    return {
        "config type": lambda: CascadeIndex(None, {"coarse_dim": 8}),  # type: ignore[arg-type]
        "batch_size type": lambda: index.add(["a"], batch_size="8"),  # type: ignore[arg-type]
        "batch_size value": lambda: index.add(["a"], batch_size=0),
        "texts None": lambda: index.add(None),  # type: ignore[arg-type]
        "texts count": lambda: index.add_embeddings(src, fine, texts=["a"]),
        "ids single str": lambda: index.add_embeddings(src, fine, ids="ab"),  # type: ignore[arg-type]
        "ids not a list": lambda: index.add_embeddings(src, fine, ids=5),  # type: ignore[arg-type]
        "metadata key": lambda: index.add_embeddings(src, fine, metadatas=[{1: "x"}, {}]),  # type: ignore[dict-item]
        "metadatas dict": lambda: index.add_embeddings(src, fine, metadatas={"a": 1}),  # type: ignore[arg-type]
        "not 2-D": lambda: index.add_embeddings(np.zeros((2, 2, 2)), fine),
        "delete None": lambda: index.delete(None),  # type: ignore[arg-type]
        "delete str": lambda: index.delete("d1"),
        "delete non-str id": lambda: index.delete(["d1", 3]),  # type: ignore[list-item]
        "filter field": lambda: index.search_embeddings(src, fine, filter={1: "x"}),
        "fine missing": lambda: index.search_embeddings(src, None),
        "shortlist type": lambda: index.search_embeddings(src, fine, shortlist="5"),  # type: ignore[arg-type]
        "embedder 1-D": lambda: CascadeIndex(FlatEmbeddings()).add(["a", "b"]),
        "search texts None": lambda: CascadeIndex(FlatEmbeddings()).search(None),  # type: ignore[arg-type]
    }


INPUT_ERRORS = [
    ("config type", TypeError, "config must be a CascadeConfig, got dict"),
    ("batch_size type", TypeError, "batch_size must be an int >= 1, got '8'"),
    ("batch_size value", ValueError, "batch_size must be an int >= 1, got 0"),
    ("texts None", TypeError, "texts must be a list of strings, got NoneType"),
    ("texts count", ValueError, "got 1 texts for 2 vectors"),
    ("ids single str", TypeError, "ids must be a list of strings, not a single string"),
    ("ids not a list", TypeError, "ids must be a list of strings, got int"),
    ("metadata key", TypeError, r"metadatas\[0\] has a non-str key 1"),
    ("metadatas dict", TypeError, "metadatas must be a list of dicts, got dict"),
    ("not 2-D", ValueError, r"coarse_source must be a 2-D array \(n, dim\), got shape \(2, 2, 2\)"),
    ("delete None", TypeError, "ids must be a list of strings, got NoneType"),
    ("delete str", TypeError, "ids must be a list of strings, not a single string"),
    ("delete non-str id", TypeError, r"ids\[1\] must be a str, got int"),
    ("filter field", TypeError, "filter field names must be str, got 1"),
    ("fine missing", ValueError, r"fine query vectors are required with mode='cascade'"),
    ("shortlist type", TypeError, "shortlist must be an int, got '5'"),
    ("embedder 1-D", ValueError, r"the embeddings returned an array of shape \(2,\), expected 2-D"),
    ("search texts None", TypeError, "texts must be a list of strings, got NoneType"),
]


@pytest.mark.parametrize(("case", "error", "message"), INPUT_ERRORS, ids=[c[0] for c in INPUT_ERRORS])
def test_index_input_errors(
    index: CascadeIndex, vectors: tuple[np.ndarray, np.ndarray], case: str, error: type, message: str
) -> None:
    before = (len(index), index.stats())
    with pytest.raises(error, match=message):
        _input_cases(index, vectors)[case]()
    assert (len(index), index.stats()) == before  # a refused call changes nothing


def test_wrapper_views_of_different_dims(tiny_encoder: Any) -> None:
    wrapper = SimpleNamespace(encoder=tiny_encoder, document_view=View(3, 32), query_view=View(2, 16))
    with pytest.raises(
        ValueError, match="query_view 2:16 and document_view 3:32 of SimpleNamespace must have"
    ):
        CascadeIndex(wrapper)


# ------------------------------------------------------------------ configuration

CONFIG_ERRORS = [
    ({"coarse_layer": 0}, "CascadeConfig.coarse_layer must be a 1-based layer or None, got 0"),
    ({"coarse_layer": True}, "CascadeConfig.coarse_layer must be a 1-based layer or None, got True"),
    ({"coarse_layer": "2"}, "CascadeConfig.coarse_layer must be a 1-based layer or None, got '2'"),
    ({"index_type": ""}, "CascadeConfig.index_type must be a faiss factory string, got ''"),
    ({"index_type": 32}, "CascadeConfig.index_type must be a faiss factory string, got 32"),
    ({"adapter_ridge": 0}, "CascadeConfig.adapter_ridge must be a number > 0, got 0"),
    ({"adapter_ridge": "0.1"}, "CascadeConfig.adapter_ridge must be a number > 0, got '0.1'"),
    ({"exact_filter_threshold": -1}, "CascadeConfig.exact_filter_threshold must be an int >= 0, got -1"),
    ({"exact_filter_threshold": "9"}, "CascadeConfig.exact_filter_threshold must be an int >= 0, got '9'"),
    ({"use_gpu": "yes"}, "CascadeConfig.use_gpu must be None, True or False, got 'yes'"),
    ({"use_gpu": 1}, "CascadeConfig.use_gpu must be None, True or False, got 1"),
    ({"shortlist": True}, "CascadeConfig.shortlist must be a positive int, got True"),
    ({"fine_dtype": "int8"}, "CascadeConfig.fine_dtype must be one of 'float32', 'float16', got 'int8'"),
    ({"fine_view": "3x8"}, "fine_view '3x8' is not of the form LAYER:DIM"),
]


@pytest.mark.parametrize(("fields", "message"), CONFIG_ERRORS, ids=[str(c[0]) for c in CONFIG_ERRORS])
def test_config_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CascadeConfig(**fields)


def test_config_from_dict_needs_a_dict() -> None:
    with pytest.raises(TypeError, match=r"CascadeConfig\.from_dict expects a dict, got list"):
        CascadeConfig.from_dict([])  # type: ignore[arg-type]


def test_config_views_beyond_the_encoder(tiny_encoder: Any) -> None:
    with pytest.raises(
        ValueError, match=r"CascadeConfig\.coarse_layer 5 is outside the encoder's layers 1\.\.3"
    ):
        CascadeIndex(tiny_encoder, CascadeConfig(coarse_layer=5))
    with pytest.raises(
        ValueError, match=r"CascadeConfig\.fine_view: views\[0\] = .*dim 40 is outside 1\.\.32"
    ):
        CascadeIndex(tiny_encoder, CascadeConfig(fine_view=(3, 40)))


# ------------------------------------------------------------------ coarse stage and transforms


def test_coarse_and_transform_errors() -> None:
    with pytest.raises(ValueError, match="coarse index has 4 dims, expected 8"):
        CoarseIndex(8, "Flat", index=faiss.IndexIDMap2(faiss.IndexFlatIP(4)))
    with pytest.raises(RuntimeError, match="the coarse index must be trained before adding vectors"):
        CoarseIndex(8, "IVF4,Flat").add(np.zeros((1, 8), np.float32), np.zeros(1, np.int64))
    src = _unit(np.random.default_rng(0).standard_normal((10, 6)))
    with pytest.raises(ValueError, match=r"source vectors must be 2-D, got shape \(6,\)"):
        fit_transform("pca", src[0], 2)
    with pytest.raises(ValueError, match="fitting a pca transform needs at least 2 vectors, got 1"):
        fit_transform("pca", src[:1], 2)
    with pytest.raises(ValueError, match=r"fine vectors must have shape \(10, d\), got \(9, 6\)"):
        fit_transform("adapter", src, 2, fine=src[:9])
    with pytest.raises(ValueError, match="adapter dim 5 exceeds the fine dimension 4"):
        fit_transform("adapter", src, 5, fine=src[:, :4])


# ------------------------------------------------------------------ encoder


def test_view_list_errors(tiny_encoder: Any) -> None:
    with pytest.raises(TypeError, match=r"views must be a list of \(layer, dim\) pairs, got '2:8'"):
        tiny_encoder.encode(["a"], "2:8")
    with pytest.raises(TypeError, match=r"views\[0\] \(2, 8.0\): dim must be an int, got float"):
        tiny_encoder.encode(["a"], [(2, 8.0)])
    with pytest.raises(TypeError, match=r"views must be a list of \(layer, dim\) pairs, got View"):
        validate_views(View(1, 2), 3, 32)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_length": 0}, ValueError, "max_length must be an int >= 2, got 0"),
        ({"max_length": 1}, ValueError, "max_length must be an int >= 2, got 1"),
        ({"max_length": "32"}, ValueError, "max_length must be an int >= 2, got '32'"),
        ({"default_view": "3x8"}, ValueError, "default_view '3x8' is not of the form LAYER:DIM"),
        ({"default_view": (3, 40)}, ValueError, r"default_view: views\[0\] = \(3, 40\): dim 40 is outside"),
        ({"default_view": 3}, TypeError, "default_view must be a View, a \\(layer, dim\\) pair"),
    ],
)
def test_encoder_constructor_errors(tiny_model_dir: Path, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        EspressoEncoder(tiny_model_dir, device="cpu", **kwargs)


def test_non_bert_model_is_refused() -> None:
    from esrag.encoder.encoder import _layer_container

    with pytest.raises(
        ValueError, match=r"Linear has none of encoder\.layer, .*: esrag supports BERT-family"
    ):
        _layer_container(torch.nn.Linear(2, 2))


def test_unknown_encoder_attribute() -> None:
    import esrag.encoder

    with pytest.raises(AttributeError, match=r"module 'esrag\.encoder' has no attribute 'Nope'"):
        _ = esrag.encoder.Nope  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def saved_encoder(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Any) -> Path:
    return tiny_encoder.save(tmp_path_factory.mktemp("encoder") / "model")


ESRAG_JSON_ERRORS = [
    ("[1, 2]", r"esrag\.json: expected a JSON object, got list"),
    ('{"format_version": "1"}', r"esrag\.json: field 'format_version' must be an int, got '1'"),
    ('{"default_view": [3]}', r"field 'default_view' must be \[layer, dim\] \(two ints >= 1\), got \[3\]"),
    ('{"default_view": ["3", 8]}', r"field 'default_view' must be \[layer, dim\].*got \['3', 8\]"),
    ('{"default_view": [2.5, 8]}', r"field 'default_view' must be \[layer, dim\].*got \[2\.5, 8\]"),
    ('{"default_view": [0, 8]}', r"field 'default_view' must be \[layer, dim\].*got \[0, 8\]"),
    ('{"default_view": [9, 8]}', r"default_view \(from .*esrag\.json\): views\[0\] = .*layer 9 is outside"),
    ('{"max_length": 1}', r"esrag\.json: field 'max_length' must be an int >= 2, got 1"),
    ('{"max_length": "64"}', r"esrag\.json: field 'max_length' must be an int >= 2, got '64'"),
    ('{"max_length": true}', r"esrag\.json: field 'max_length' must be an int >= 2, got True"),
    ('{"name": 5}', r"esrag\.json: field 'name' must be a str, got 5"),
]


@pytest.mark.parametrize(("text", "message"), ESRAG_JSON_ERRORS, ids=[c[0] for c in ESRAG_JSON_ERRORS])
def test_esrag_json_field_errors(saved_encoder: Path, tmp_path: Path, text: str, message: str) -> None:
    folder = Path(shutil.copytree(saved_encoder, tmp_path / "model"))
    (folder / "esrag.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        EspressoEncoder(folder, device="cpu")


def test_unreadable_esrag_json(saved_encoder: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(saved_encoder, tmp_path / "model"))
    (folder / "esrag.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match=r"esrag\.json: unreadable"):
        EspressoEncoder(folder, device="cpu")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("1_Pooling/config.json", "[]", r"1_Pooling/config\.json: expected a JSON object, got list"),
        ("1_Pooling/config.json", "{oops", r"1_Pooling/config\.json: line 1: invalid JSON"),
        ("sentence_bert_config.json", '"x"', r"sentence_bert_config\.json: expected a JSON object, got str"),
        (
            "sentence_bert_config.json",
            '{"max_seq_length": 1}',
            r"sentence_bert_config\.json: field 'max_seq_length' must be an int >= 2, got 1",
        ),
    ],
)
def test_sentence_transformers_config_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_folder_config(tmp_path)


# ------------------------------------------------------------------ load-time corruption


def _manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text())


def _write_manifest(folder: Path, data: object) -> None:
    (folder / "manifest.json").write_text(json.dumps(data))


def _reseal(folder: Path) -> None:
    """Record the current size and checksum of every listed file: only the content is wrong."""
    data = _manifest(folder)
    files = data_folder(folder)
    for name in data["files"]:
        blob = (files / name).read_bytes()
        data["files"][name] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    _write_manifest(folder, data)


def _edit(**changes: Any) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        data = _manifest(folder)
        for key, value in changes.items():
            if value is _DELETE:
                del data[key]
            else:
                data[key] = value
        _write_manifest(folder, data)

    return apply


_DELETE = object()


def _replace_file(name: str, write: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        write(data_folder(folder) / name)
        _reseal(folder)

    return apply


def _drop_listed(name: str, *, corrupt: bool = False) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        data = _manifest(folder)
        del data["files"][name]
        _write_manifest(folder, data)
        if corrupt:
            (data_folder(folder) / name).write_bytes(b"garbage")

    return apply


def _edit_ids(change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    return _replace_file("ids.npy", lambda p: np.save(p, change(np.load(p)), allow_pickle=False))


def _set(arr: np.ndarray, position: int, value: int) -> np.ndarray:
    arr = arr.copy()
    arr[position] = value
    return arr


def _edit_docs(change: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(change(lines)))

    return _replace_file("docs.jsonl", write)


def _doc_line(line: str, **fields: Any) -> str:
    return json.dumps({**json.loads(line), **fields}) + "\n"


def _write_faiss(index: Any) -> Callable[[Path], None]:
    return lambda path: faiss.write_index(index, str(path))


def _one_removed(path: Path) -> None:
    index = faiss.read_index(str(path))
    index.remove_ids(np.array([0], dtype=np.int64))
    faiss.write_index(index, str(path))


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not the right format at all\n" * 4)


CORRUPTIONS: list[tuple[str, str, Callable[[Path], None], str]] = [
    # manifest
    (
        "not an object",
        "pca",
        lambda f: _write_manifest(f, [1, 2]),
        r"manifest\.json: the manifest is not a JSON object",
    ),
    ("no format_version", "pca", _edit(format_version=_DELETE), r"missing or invalid 'format_version'"),
    ("str format_version", "pca", _edit(format_version="1"), r"missing or invalid 'format_version'"),
    (
        "count type",
        "pca",
        _edit(count="300"),
        r"malformed manifest \(field 'count' must be a non-negative int",
    ),
    ("negative next_id", "pca", _edit(next_id=-1), r"field 'next_id' must be a non-negative int, got -1"),
    ("files a list", "pca", _edit(files=[]), r"field 'files' must be an object of file name"),
    ("files entry", "pca", _edit(files={"fine.npy": {"sha256": 5}}), r"files\['fine\.npy'\] must be"),
    (
        "files path",
        "pca",
        _edit(files={"../x": {"sha256": "0", "bytes": 1}}),
        r"'\.\./x' is not a plain file",
    ),
    ("embedder kind", "pca", _edit(embedder_kind="robot"), r"field 'embedder_kind' must be one of"),
    (
        "view shape",
        "pca",
        _edit(fine_view=[3]),
        r"field 'fine_view' must be \[layer, dim\] or null, got \[3\]",
    ),
    ("config type", "pca", _edit(config="Flat"), r"field 'config' must be an object, got 'Flat'"),
    ("transform type", "pca", _edit(transform=5), r"field 'transform' must be a str, got 5"),
    ("model name type", "pca", _edit(model_name=5), r"field 'model_name' must be a str or null, got 5"),
    # required files: an edited manifest cannot skip a checksum
    (
        "files empty",
        "pca",
        _edit(files={}),
        r"required file\(s\) \['coarse\.faiss', 'docs\.jsonl', 'fine\.npy'",
    ),
    (
        "fine unlisted",
        "pca",
        _drop_listed("fine.npy", corrupt=True),
        r"required file\(s\) \['fine\.npy'\] are not",
    ),
    (
        "matrix unlisted",
        "pca",
        _drop_listed("transform_matrix.npy"),
        r"\['transform_matrix\.npy'\] are not listed",
    ),
    (
        "prefix to pca",
        "prefix",
        _edit(transform="pca"),
        r"\['transform_bias\.npy', 'transform_matrix\.npy'\]",
    ),
    # config
    (
        "bad config",
        "pca",
        _edit(config={"coarse_dim": 0}),
        r"bad config \(CascadeConfig\.coarse_dim must be a pos",
    ),
    (
        "unknown config",
        "pca",
        _edit(config={"colour": 1}),
        r"bad config \(unknown CascadeConfig field\(s\) \['colour'",
    ),
    # transform
    (
        "transform dims",
        "prefix",
        _replace_file(
            "transform.json", lambda p: p.write_text('{"kind": "prefix", "source_dim": 16, "dim": 4}')
        ),
        r"transform\.json: dims disagree with the manifest",
    ),
    (
        "transform kind",
        "pca",
        _edit(transform="adapter"),
        r"transform 'pca' disagrees with the manifest \('adapter'\)",
    ),
    (
        "transform json",
        "pca",
        _replace_file("transform.json", _garbage),
        r"transform\.json: unreadable transform desc",
    ),
    (
        "matrix shape",
        "pca",
        _replace_file("transform_matrix.npy", lambda p: np.save(p, np.zeros((3, 3), np.float32))),
        r"transform_matrix\.npy: expected float32 array of shape \(16, 8\), got float32 \(3, 3\)",
    ),
    (
        "bias unreadable",
        "pca",
        _replace_file("transform_bias.npy", _garbage),
        r"transform_bias\.npy: unreadable array",
    ),
    # fine vectors
    ("fine unreadable", "pca", _replace_file("fine.npy", _garbage), r"fine\.npy: unreadable fine vectors"),
    (
        "fine shape",
        "pca",
        _replace_file("fine.npy", lambda p: np.save(p, np.zeros((N, DIM + 1), np.float32))),
        r"fine\.npy: expected float32 vectors of shape \(300, 16\), found float32 \(300, 17\)",
    ),
    # documents
    (
        "doc field type",
        "pca",
        _edit_docs(lambda lines: [_doc_line(lines[0], id=5), *lines[1:]]),
        r"docs\.jsonl, line 1: bad document record \(wrong field types\)",
    ),
    (
        "doc metadata type",
        "pca",
        _edit_docs(lambda lines: [lines[0], _doc_line(lines[1], metadata=[1]), *lines[2:]]),
        r"docs\.jsonl, line 2: bad document record \(wrong field types\)",
    ),
    (
        "doc count",
        "pca",
        _edit_docs(lambda lines: lines[:-1]),
        r"docs\.jsonl: expected 300 documents, found 299",
    ),
    (
        "doc duplicate",
        "pca",
        _edit_docs(lambda lines: [lines[0], _doc_line(lines[1], id="d0"), *lines[2:]]),
        r"docs\.jsonl, line 2: duplicate document id 'd0'",
    ),
    (
        "doc encoding",
        "pca",
        _replace_file("docs.jsonl", lambda p: p.write_bytes(b"\xff\xfe\n")),
        r"docs\.jsonl: cannot read documents",
    ),
    # ids
    ("ids unreadable", "pca", _replace_file("ids.npy", _garbage), r"ids\.npy: unreadable ids"),
    (
        "ids dtype",
        "pca",
        _edit_ids(lambda a: a.astype(np.int32)),
        r"ids\.npy: expected int64 ids of shape \(300,\), got int32",
    ),
    ("ids range", "pca", _edit_ids(lambda a: _set(a, 0, N)), r"ids\.npy: ids outside 0\.\.299"),
    ("ids duplicate", "pca", _edit_ids(lambda a: _set(a, 1, int(a[0]))), r"ids\.npy: duplicate ids"),
    (
        "tombstone count",
        "pca",
        _replace_file("tombstones.npy", lambda p: np.save(p, np.array([1, 2], np.int64))),
        r"tombstones\.npy: expected int64 ids of shape \(0,\), got int64 \(2,\)",
    ),
    # coarse index
    (
        "faiss unreadable",
        "pca",
        _replace_file("coarse.faiss", _garbage),
        r"coarse\.faiss: unreadable FAISS index",
    ),
    (
        "faiss type",
        "pca",
        _replace_file("coarse.faiss", _write_faiss(faiss.IndexFlatIP(COARSE))),
        r"coarse\.faiss: expected an IndexIDMap2 or an IVF index, found IndexFlat",
    ),
    (
        "faiss dims",
        "pca",
        _replace_file("coarse.faiss", _write_faiss(faiss.IndexIDMap2(faiss.IndexFlatIP(4)))),
        r"coarse\.faiss: the coarse index has 4 dims, the manifest says 8",
    ),
    (
        "live vectors",
        "pca",
        _replace_file("coarse.faiss", _one_removed),
        r"coarse\.faiss: holds 299 live vectors, the manifest says 300",
    ),
]


@pytest.mark.parametrize(("case", "kind", "corrupt", "message"), CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_load_refuses_corruption(
    saved_indexes: dict[str, Path],
    tmp_path: Path,
    case: str,
    kind: str,
    corrupt: Callable[[Path], None],
    message: str,
) -> None:
    folder = Path(shutil.copytree(saved_indexes[kind], tmp_path / "idx"))
    assert len(CascadeIndex.load(folder)) == N  # the pristine copy loads
    corrupt(folder)
    with pytest.raises(IndexFormatError, match=message):
        CascadeIndex.load(folder)


def test_recorded_views_must_match_the_encoder(tiny_encoder: Any, tmp_path: Path) -> None:
    from esrag.langchain.embeddings import EspressoEmbeddings

    texts = [f"the {w} sees the cat" for w in ("dog", "bird", "fish", "tree", "car")] * 4
    CascadeIndex.build(tiny_encoder, texts, config=CascadeConfig(coarse_layer=2)).save(tmp_path / "idx")
    narrow = EspressoEmbeddings(encoder=tiny_encoder, document_view=(3, 16), query_view=(3, 16))
    with pytest.raises(ModelMismatchError, match=r"fine view is \(3, 32\), the encoder gives \(3, 16\)"):
        CascadeIndex.load(tmp_path / "idx", narrow)
    _edit(coarse_source_view=[1, 32])(tmp_path / "idx")
    with pytest.raises(
        ModelMismatchError, match=r"coarse source view is \(1, 32\), the encoder gives \(2, 32\)"
    ):
        CascadeIndex.load(tmp_path / "idx", tiny_encoder)
