"""The package's shape, checked: no import cycles, no private names across modules, no method special-cased by
name outside its own module, and a registry entry for every built-in learner."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import iclkit
from iclkit import learners

ROOT = Path(iclkit.__file__).resolve().parent
BASELINES = ROOT.parent / "baselines"


def _modules() -> dict[str, Path]:
    """Every module of the package (baselines/ is installed as iclkit.baselines) → its file."""
    out = {}
    for folder, prefix in ((ROOT, "iclkit"), (BASELINES, "iclkit.baselines")):
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([prefix, *parts])] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(imported module, names) for every import of an iclkit module in ``path``, at any depth."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("iclkit")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if not base.startswith("iclkit"):
                continue
            plain = [a.name for a in node.names]
            submodules = [n for n in plain if f"{base}.{n}" in modules]
            out += [(f"{base}.{n}", []) for n in submodules]
            rest = [n for n in plain if n not in submodules]
            if rest:
                out.append((base, rest))
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m, _ in _imports(name, path, modules) if m in modules and m != name}
            for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if state.get(node) is None and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    graph = _graph()
    assert len(graph) > 40 and graph["iclkit.runner.execute"], "the import graph was not read"
    assert _find_cycle(graph) is None, f"import cycle: {' -> '.join(_find_cycle(graph) or [])}"


def test_no_private_names_across_modules():
    modules = _modules()
    crossing = []
    for name, path in modules.items():
        for module, names in _imports(name, path, modules):
            private_module = any(p.startswith("_") and not p.startswith("__") for p in module.split("."))
            private_names = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private_module or private_names:
                crossing.append(f"{path.relative_to(ROOT.parent)}: {module} {private_names}")
    assert not crossing, crossing


def test_no_method_is_named_outside_its_module_registration_and_user_facing_defaults():
    allowed = {ROOT / "learners" / "icl.py",  # the ICL learner itself
               ROOT / "learners" / "registry.py",  # its registration (lazy import map)
               ROOT / "analysis" / "paired.py",  # user-facing default: the reference method
               ROOT / "runner" / "config.py"}  # user-facing defaults: default methods
    found = [f"{p.relative_to(ROOT.parent)}:{i}" for p in ROOT.rglob("*.py") if p not in allowed
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if re.search(r"[\"']icl[\"']", line)]
    assert not found, found


def test_every_baseline_module_is_reachable_by_name():
    """Each built-in learner name imports and registers; no baseline file registers a name the lazy map lacks."""
    names = learners.available()
    for name in names:
        entry = learners.entry(name)
        assert entry.name == name and entry.capabilities.min_shots >= 0
    for info in pkgutil.iter_modules([str(BASELINES)]):
        importlib.import_module(f"iclkit.baselines.{info.name}")
    assert learners.available() == names, "a baseline registers a learner missing from the registry's lazy map"


def test_every_subpackage_is_listed_for_a_non_editable_install():
    """pyproject.toml lists packages by name: one left out installs without its modules (CI's non-editable install
    then fails at import), so each folder holding an ``__init__.py`` must be listed."""
    repo = Path(__file__).resolve().parent.parent  # the source tree (iclkit itself may be installed elsewhere)
    text = (repo / "pyproject.toml").read_text(encoding="utf-8")  # (tomllib is 3.11+; iclkit runs on 3.10)
    listed = set(re.findall(r'"([\w.]+)"', re.search(r"^packages = \[(.*?)\]", text, re.M | re.S).group(1)))
    source = repo / "iclkit"
    found = {".".join(["iclkit", *p.parent.relative_to(source).parts]) for p in source.rglob("__init__.py")}
    assert found - listed == set()
