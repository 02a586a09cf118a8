"""The package layout: no import cycles, dependencies point down the flow, every package says what it owns.

Imports are read from the source (module level and inside functions alike: a lazy import is still
a dependency), so the test needs nothing imported and sees what a reader sees.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "parity"

# The flow, upstream first. A stage may import the shared modules, itself and the stages before it.
STAGES = ["cases", "preprocessing", "models", "runners", "metrics", "runs", "training", "decisions"]
SHARED = {"errors", "atomic", "provenance", "colour", "_colour", "config", "progress"}  # _colour: colour's compiled NV12 decoding
ENTRY = {"cli", "__main__", "__init__"}  # the top: may import anything


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    """Python modules and the compiled ones (a C source builds the module of its name; it imports none)."""
    return {module_name(p): p for p in [*PKG.rglob("*.py"), *PKG.rglob("*.c")]}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every parity module that `name` imports, resolved to the most specific module."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out = set()

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "parity" or a.name.startswith("parity."):
                    out.add(resolve(a.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not (mod == "parity" or mod.startswith("parity.")):
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.add(sub if sub in modules else resolve(mod))
    out.discard(None)
    out.discard(name)
    return out


@pytest.fixture(scope="module")
def graph():
    modules = all_modules()
    return {n: imports_of(n, p, modules) if p.suffix == ".py" else set() for n, p in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_the_walker_sees_a_cycle_and_lazy_imports():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles(graph):
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_dependencies_point_down_the_flow(graph):
    bad = []
    for mod, deps in graph.items():
        src = _stage(mod)
        if src in ENTRY:
            continue
        for dep in deps:
            dst = _stage(dep)
            if src in SHARED:
                ok = dst in SHARED
            else:
                ok = dst in SHARED or dst == src or (dst in STAGES and STAGES.index(dst) < STAGES.index(src))
            if not ok:
                bad.append(f"{mod} imports {dep}")
    assert not bad, "imports against the flow:\n" + "\n".join(sorted(bad))


def test_every_module_belongs_to_a_stage_or_the_shared_top():
    top = {p.stem for p in PKG.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert top <= set(STAGES) | SHARED | ENTRY, sorted(top - set(STAGES) - SHARED - ENTRY)


def test_each_package_opens_with_what_it_owns_and_may_import():
    for init in PKG.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.split()) >= 20, f"{init}: needs an opening paragraph"
        if init.parent != PKG:
            assert re.search(r"\bmay import\b", doc), f"{init}: the paragraph says what it may import"


def test_architecture_doc_matches_the_tree():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for init in PKG.rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT).as_posix() + "/"
        if init.parent != PKG:
            assert rel in doc, f"docs/architecture.md does not mention {rel}"
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(ROOT).as_posix()
        if p.name != "__init__.py":
            assert rel in doc or p.name in doc, f"docs/architecture.md does not mention {rel}"
    for named in set(re.findall(r"parity/[\w/]+\.py", doc)):
        assert (ROOT / named).is_file(), f"docs/architecture.md names {named}, which does not exist"
    for section in ("runner", "perturbation", "metric", "model adapter", "training recipe"):
        assert re.search(rf"## .*add(ing)? a {section}", doc, re.I), f"docs/architecture.md: where to add a {section}"


def test_public_api_keeps_working():
    import parity
    import parity.metrics as M
    from parity.runners import RUNNERS, create, resolve

    for fn in ("tusimple_frame", "tusimple", "tusimple_batch", "lateral_difference", "resample_rows", "lane_masks_iou",
               "culane_counts", "culane_counts_at", "f1", "kink_threshold", "chord_deviation", "bending",
               "lookahead_rows", "jitter", "tensor_parity", "argmax_flips", "metres_per_pixel"):
        assert callable(getattr(M, fn)), fn
    assert callable(parity.replay.replay) and parity.replay.ReplayConfig
    assert "torch" in RUNNERS and callable(create) and resolve("torch") == ["torch"]
