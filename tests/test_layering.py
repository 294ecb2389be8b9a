"""The package layering of DESIGN.md as a test over the import graph (``ast``; nothing is imported to check it).

Rules: (1) no import cycle among the top-level parts of the package (config, plugins, scheduling, disagg, bench,
cluster_sim, ...): a cycle hides which one is the framework and which the catalog; (2) bench sits below cluster_sim
(the simulator uses bench's workloads and records; bench gets the simulator injected); (3) the synchronous core
(value types, latency model, plugins, scheduling, config, hashing, index, block pool, step model, cluster_sim) imports
no asyncio, ZMQ, HTTP or Kubernetes client, not even through another llmd_kserve module; (4) the two front ends
(router: HTTP, epp: Envoy ext_proc) never import each other, and what they share (control, governance) imports
neither; control imports no server or client framework (aiohttp, gRPC), not even through another module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "llmd_kserve"
IO_LIBS = frozenset({"asyncio", "zmq", "aiohttp", "uvloop", "kubernetes", "httpx", "requests", "urllib.request",
                     "grpc"})
TRANSPORT_LIBS = frozenset({"aiohttp", "grpc", "httpx", "requests"})
"""What a transport is made of: ``control`` (the director, the runtime) reaches none of them."""
CORE = ("types", "errors", "prompt", "latency", "tokenizer", "builtin", "config", "plugins", "scheduling", "cluster_sim",
        "kvcache.hashing", "kvcache.events", "kvcache.index", "engine_sim.block_pool", "engine_sim.core", "engine_sim.frontend",
        "engine_sim.core_types", "disagg.deciders", "disagg.protocol", "metrics.parse")
"""Packages (every module in them) and modules that must stay free of I/O libraries."""
BELOW = (("bench", "cluster_sim"),)
"""(lower, upper): the lower part never imports the upper one."""
APART = (("router", "epp"), ("epp", "router"), ("control", "router"), ("control", "epp"), ("governance", "control"),
         ("governance", "router"), ("governance", "epp"))
"""(part, other): ``part`` never imports ``other`` (the front ends stand side by side on control and governance)."""


def _module_name(path: Path, root: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.Module) -> Iterable[tuple[str, tuple[str, ...]]]:
    """(module, imported names) of every import that runs (``if TYPE_CHECKING:`` blocks skipped)."""
    def walk(nodes: Iterable[ast.stmt]) -> Iterable[tuple[str, tuple[str, ...]]]:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                yield from walk(node.orelse)
                continue
            if isinstance(node, ast.Import):
                for a in node.names:
                    yield a.name, ()
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield node.module, tuple(a.name for a in node.names)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    yield from walk([child])
    return walk(tree.body)


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> package modules it imports, incl. the packages' ``__init__``; module -> I/O libraries it imports)."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    pkg = root.name
    graph: dict[str, set[str]] = {}
    io: dict[str, set[str]] = {}
    for mod, path in files.items():
        deps: set[str] = set()
        libs: set[str] = set()
        for name, names in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if name == pkg or name.startswith(pkg + "."):
                targets = [f"{name}.{n}" if f"{name}.{n}" in files else name for n in names] or [name]
                for t in targets:
                    parts = t.split(".")
                    deps.update(".".join(parts[:i]) for i in range(2, len(parts) + 1) if ".".join(parts[:i]) in files)
            else:
                libs.update(lib for lib in IO_LIBS if name == lib or name.startswith(lib + "."))
        graph[mod], io[mod] = deps - {mod}, libs
    return graph, io


def part(module: str) -> str:
    """``llmd_kserve.scheduling.scheduler`` -> ``scheduling``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def part_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one top-level part (Tarjan over the part graph)."""
    edges: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        edges.setdefault(part(mod), set()).update(part(d) for d in deps if part(d) != part(mod))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def io_in_core(graph: dict[str, set[str]], io: dict[str, set[str]], core: Iterable[str] = CORE,
               libs: frozenset[str] = IO_LIBS) -> list[str]:
    """``core module -> ... -> module: libs`` for every import of ``libs`` reachable from a core module."""
    prefixes = tuple(f"{ROOT.name}.{c}" for c in core)
    problems = []
    for mod in sorted(graph):
        if not any(mod == p or mod.startswith(p + ".") for p in prefixes):
            continue
        seen, todo = {mod: [mod]}, [mod]
        while todo:
            cur = todo.pop()
            if io[cur] & libs:
                problems.append(f"{' -> '.join(seen[cur])}: {', '.join(sorted(io[cur] & libs))}")
            for dep in graph[cur]:
                if dep not in seen:
                    seen[dep] = [*seen[cur], dep]
                    todo.append(dep)
    return problems


def below_violations(graph: dict[str, set[str]], rules: Iterable[tuple[str, str]] = BELOW) -> list[str]:
    return [f"{mod} imports {dep}" for lower, upper in rules for mod, deps in sorted(graph.items())
            for dep in sorted(deps) if part(mod) == lower and part(dep) == upper]


def test_no_cycles_between_parts() -> None:
    assert part_cycles(import_graph()[0]) == []


def test_bench_below_cluster_sim() -> None:
    assert below_violations(import_graph()[0]) == []


def test_core_does_no_io() -> None:
    graph, io = import_graph()
    assert io_in_core(graph, io) == []


def test_front_ends_apart() -> None:
    assert below_violations(import_graph()[0], APART) == []


def test_control_is_transport_free() -> None:
    graph, io = import_graph()
    assert io_in_core(graph, io, ("control",), TRANSPORT_LIBS) == []


def test_the_graph_sees_the_real_edges() -> None:
    graph, io = import_graph()
    assert "llmd_kserve.plugins.base" in graph["llmd_kserve.scheduling.scheduler"]
    assert "llmd_kserve.scheduling" in graph["llmd_kserve.builtin"]  # package __init__ counts as imported
    assert "aiohttp" in io["llmd_kserve.router.app"]
    assert "asyncio" not in io["llmd_kserve.scheduling.scheduler"]
    assert "grpc" in io["llmd_kserve.epp.server"]
    assert "llmd_kserve.control.director" in graph["llmd_kserve.epp.picker"]


@pytest.fixture
def fake_pkg(tmp_path: Path) -> Path:
    """A tiny copy of the layering: plugins/base, scheduling/a, config/loader, bench/stats, cluster_sim/sim."""
    root = tmp_path / "llmd_kserve"
    for rel, text in {
        "__init__.py": "",
        "plugins/__init__.py": "",
        "plugins/base.py": "X = 1\n",
        "scheduling/__init__.py": "",
        "scheduling/a.py": "from llmd_kserve.plugins.base import X\n",
        "config/__init__.py": "",
        "config/loader.py": "from llmd_kserve.scheduling import a\n",
        "bench/__init__.py": "",
        "bench/stats.py": "Y = 2\n",
        "cluster_sim/__init__.py": "",
        "cluster_sim/sim.py": "from llmd_kserve.bench.stats import Y\nfrom llmd_kserve.config import loader\n",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_checker_passes_the_clean_fake(fake_pkg: Path) -> None:
    graph, io = import_graph(fake_pkg)
    assert part_cycles(graph) == [] and below_violations(graph) == [] and io_in_core(graph, io) == []


def test_checker_catches_a_cycle(fake_pkg: Path) -> None:
    (fake_pkg / "plugins" / "registry.py").write_text("from llmd_kserve.scheduling.a import X\n")
    (fake_pkg / "plugins" / "base.py").write_text("X = 1\nfrom llmd_kserve.plugins import registry\n")
    assert part_cycles(import_graph(fake_pkg)[0]) == [["plugins", "scheduling"]]
    (fake_pkg / "plugins" / "registry.py").unlink()
    (fake_pkg / "plugins" / "base.py").write_text("X = 1\n")
    (fake_pkg / "scheduling" / "b.py").write_text("def f():\n    from llmd_kserve.config.loader import g\n")
    assert part_cycles(import_graph(fake_pkg)[0]) == [["config", "scheduling"]]  # a lazy import counts too


def test_checker_catches_bench_importing_cluster_sim(fake_pkg: Path) -> None:
    (fake_pkg / "bench" / "runner.py").write_text("from llmd_kserve.cluster_sim import sim\n")
    graph = import_graph(fake_pkg)[0]
    assert below_violations(graph) == ["llmd_kserve.bench.runner imports llmd_kserve.cluster_sim",
                                       "llmd_kserve.bench.runner imports llmd_kserve.cluster_sim.sim"]


def test_checker_catches_io_in_core_even_indirectly(fake_pkg: Path) -> None:
    (fake_pkg / "kvcache").mkdir()
    (fake_pkg / "kvcache" / "__init__.py").write_text("")
    (fake_pkg / "kvcache" / "subscriber.py").write_text("import zmq.asyncio\n")
    (fake_pkg / "scheduling" / "a.py").write_text("from llmd_kserve.plugins.base import X\n"
                                                  "from llmd_kserve.kvcache.subscriber import S\n")
    graph, io = import_graph(fake_pkg)
    assert io_in_core(graph, io, core=("scheduling",)) == [
        "llmd_kserve.scheduling.a -> llmd_kserve.kvcache.subscriber: zmq"]
    (fake_pkg / "scheduling" / "a.py").write_text("import asyncio\nif TYPE_CHECKING:\n    import aiohttp\n")
    graph, io = import_graph(fake_pkg)
    assert io_in_core(graph, io, core=("scheduling",)) == ["llmd_kserve.scheduling.a: asyncio"]


def test_checker_catches_front_ends_importing_each_other(fake_pkg: Path) -> None:
    for rel, text in {"router/__init__.py": "", "router/app.py": "import aiohttp\n", "epp/__init__.py": "",
                      "epp/picker.py": "from llmd_kserve.router.app import X\n", "control/__init__.py": "",
                      "control/director.py": "from llmd_kserve.router import app\n"}.items():
        (fake_pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake_pkg / rel).write_text(text)
    graph, io = import_graph(fake_pkg)
    assert sorted(below_violations(graph, APART)) == [
        f"llmd_kserve.{mod} imports llmd_kserve.{dep}" for mod in ("control.director", "epp.picker")
        for dep in ("router", "router.app")]
    assert io_in_core(graph, io, ("control",), TRANSPORT_LIBS) == [
        "llmd_kserve.control.director -> llmd_kserve.router.app: aiohttp"]
