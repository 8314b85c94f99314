"""Guards that keep the layout honest: no import cycles, no reaching into other objects'
private attributes, pinned public APIs, every module declares ``__all__``."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "esrag"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imported(name: str, tree: ast.AST) -> Iterator[str]:
    """Every esrag module ``name`` imports: top level, inside functions, under
    ``TYPE_CHECKING``, and the string targets of a lazy ``_EXPORTS`` map."""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets
        ):
            targets = [v.value for v in getattr(node.value, "values", []) if isinstance(v, ast.Constant)]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import esrag.x.y` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def _graph() -> dict[str, set[str]]:
    return {name: set(_imported(name, ast.parse(path.read_text()))) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_the_guard_sees_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from esrag.index import cascade\n"
    )
    assert "esrag.index.cascade" in set(_imported("esrag.index.search", tree))
    lazy = ast.parse("def f():\n    import esrag.index.format\n")
    assert "esrag.index.format" in set(_imported("esrag.index.search", lazy))


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "modules importing each other (directly or through a chain): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def _private_accesses(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        if not attr.startswith("_") or attr.startswith("__"):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        if isinstance(owner, ast.Call) and ast.unparse(owner.func) == "super":
            continue  # a base class's protected hook that the subclass extends
        yield node.lineno, f"{ast.unparse(owner)}.{attr}"


# Reads of a private name that are not another esrag object's state (same-class instances
# built in a classmethod, third-party internals esrag has no other way to reach).
ALLOWED_PRIVATE = {
    ("esrag.index.cascade", "index._adapter"),  # CascadeIndex.load fills the instance it creates
    ("esrag.index.cascade", "index._state"),
    ("esrag.index.sharded", "index._adapter"),  # ShardedIndex.load fills the instance it creates
    ("esrag.index.sharded", "index._states"),
    ("esrag.index.sharded", "index._next_id"),
    ("esrag.index.sharded", "index._clean"),
    ("esrag.index.sharded", "index._folder"),
    ("esrag.index.rows", "out._id_of_row"),  # RowMap.restore fills the instance it creates
    ("esrag.index.rows", "out._row_of"),
    ("esrag.index.rows", "out._alive"),
    ("esrag.index.rows", "out._coarse_of_row"),
    ("esrag.index.rows", "out._next_coarse"),
    # argparse has no public API to list a parser's actions or tell their kinds
    ("esrag.cli.run", "parser._actions"),
    ("esrag.cli.run", "sub.choices[step]._actions"),
    ("esrag.cli.run", "argparse._SubParsersAction"),
    ("esrag.cli.run", "argparse._AppendAction"),
}


def test_no_module_reads_another_objects_private_attributes() -> None:
    found = []
    for name, path in MODULES.items():
        for line, expr in _private_accesses(ast.parse(path.read_text())):
            if (name, expr) not in ALLOWED_PRIVATE:
                found.append(f"{path.relative_to(ROOT.parent)}:{line}: {expr}")
    assert not found, "private attributes of other objects accessed:\n" + "\n".join(found)


def test_every_module_declares_all() -> None:
    missing = [
        name
        for name, path in MODULES.items()
        if "__all__"
        not in {
            t.id
            for n in ast.parse(path.read_text()).body
            if isinstance(n, ast.Assign)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
        and path.name != "__main__.py"
    ]
    assert not missing, f"modules without __all__: {missing}"


PUBLIC_API = {
    "esrag": [
        "CascadeIndex",
        "CascadeVectorStore",
        "EspressoEmbeddings",
        "EspressoEncoder",
        "View",
        "__version__",
    ],
    "esrag.index": [
        "CascadeConfig",
        "CascadeIndex",
        "FineDType",
        "FittedTransform",
        "IndexFormatError",
        "IndexedDocument",
        "Manifest",
        "ModelMismatchError",
        "SearchMode",
        "SearchResult",
        "Transform",
        "fit_transform",
        "is_index_folder",
    ],
    "esrag.encoder": [
        "DEFAULT_MODEL_NAME",
        "EncoderConfig",
        "EspressoEncoder",
        "Pooling",
        "View",
        "default_model_path",
        "parse_view",
        "validate_views",
    ],
}


@pytest.mark.parametrize("package", sorted(PUBLIC_API))
def test_public_api_is_pinned(package: str) -> None:
    """A change to a package's ``__all__`` is deliberate: update this pin with it."""
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(PUBLIC_API[package])
    for name in module.__all__:
        assert getattr(module, name) is not None


MAX_LINES = 450  # "tens to ~400 lines": a module past this is split, not grown


def test_no_module_is_too_long() -> None:
    long = {
        name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
