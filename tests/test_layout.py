"""The package's folders are the pipeline's stages and imports run one way, downwards
(docs/architecture.md, "Modules"). Read from the sources (every import, those inside functions
too), so a lazy import cannot hide an upward edge or a cycle."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

PACKAGE = REPO / "diffcut_jax"
# Lowest first. A module may import its own unit and any unit of a lower rank.
RANKS = {
    "io": -1,  # the path layer and file formats: under everything (data reads downloads through it)
    "options": 0, "determinism": 0, "models": 0, "data": 0, "presets": 0,  # foundation
    "features": 1, "cut": 2, "masks": 3, "naming": 4,  # the stages, in the pipeline's order
    # The compositions of the stages (imports among them checked for cycles).
    "segmentation": 5, "segmenter": 5, "coherence": 5, "demo": 5, "testing": 5,
    "streaming": 5,  # files through the segmenter at scale (`DiffCut.segment_files`)
    "evaluation": 6, "engine": 6,  # a benchmark's evaluation; a dataset's labelling
    "programs": 7,  # every program a user runs, the evaluator's included: above evaluation
    "configs": 7, "launch": 8,
    "": 9,  # the package's facade (`from diffcut_jax import DiffCut`): for users only
}
STAGES = ("features", "cut", "masks", "naming", "io")
PACKAGES = (*STAGES, "streaming", "engine")  # folders whose __init__ names every module


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name; configs/ and launch/ (linked into the
    package) under their installed names."""
    found = {}
    for root, prefix in ((PACKAGE, "diffcut_jax"), (REPO / "configs", "diffcut_jax.configs"),
                         (REPO / "launch", "diffcut_jax.launch")):
        for path in root.rglob("*.py"):
            rel = path.relative_to(root)
            if rel.parts[0] in ("configs", "launch") and root == PACKAGE:
                continue  # the links: read from the real folders
            parts = [prefix, *rel.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules) -> set[str]:
    """The package's modules that `name` imports, anywhere in its body."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("diffcut_jax")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("diffcut_jax"):
                continue
            for alias in node.names:  # `from pkg import module` imports the module
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in modules else base)
    return {m for m in out if m in modules and m != name}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def package_graph() -> dict[str, set[str]]:
    """unit -> the units it imports (the note's package-level import graph)."""
    units: dict[str, set[str]] = {}
    for name, deps in _graph().items():
        units.setdefault(_unit(name), set()).update(_unit(d) for d in deps if _unit(d) != _unit(name))
    return units


def test_the_stages_are_folders():
    for stage in PACKAGES:
        init = PACKAGE / stage / "__init__.py"
        assert init.is_file(), f"diffcut_jax/{stage}/ is not a package"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        for module in sorted(p.stem for p in (PACKAGE / stage).glob("*.py") if p.stem != "__init__"):
            assert f"`{module}`" in doc, f"diffcut_jax/{stage}/__init__.py does not name {module}"
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert top <= set(RANKS), f"top-level modules without a place in the layering: {top - set(RANKS)}"


def test_imports_run_downwards_without_cycles():
    graph = _graph()
    units = {_unit(m) for m in graph}
    assert units <= set(RANKS), f"units without a rank: {units - set(RANKS)}"
    upward = sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps
                    if _unit(a) != _unit(b) and RANKS[_unit(b)] >= RANKS[_unit(a)]
                    and not (RANKS[_unit(a)] == RANKS[_unit(b)] == 5))
    assert not upward, "imports from a lower stage to a higher one (or across a layer):\n" + \
        "\n".join(upward)
    assert _cycle(package_graph()) is None, f"package-level import cycle: {_cycle(package_graph())}"
    cycle = _cycle(graph)
    assert cycle is None, "module import cycle: " + " -> ".join(cycle)


def test_the_check_sees_lazy_and_relative_imports(tmp_path):
    """The graph reader catches what the layering test relies on: function-level imports,
    `from pkg import module` and relative imports."""
    modules = {"diffcut_jax.cut.ncut": None, "diffcut_jax.features.saved": None,
               "diffcut_jax.features.extractor": None, "diffcut_jax.features": None}
    src = tmp_path / "extractor.py"
    src.write_text("def f():\n    from diffcut_jax.cut import ncut\n    from . import saved\n")
    assert _imports("diffcut_jax.features.extractor", src, modules) == {
        "diffcut_jax.cut.ncut", "diffcut_jax.features.saved"}
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
