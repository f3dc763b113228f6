"""The layering of ../shared/DESIGN.md, read from the import graph: arrows point down, faces do not
import each other, nothing imports in a circle, and only the WebUI glue imports the WebUI.

Every `import` and `from ... import` counts, also those inside functions (a lazy import is still an
arrow); only `if TYPE_CHECKING:` blocks are left out (they never run). What does not hold yet is
listed in PENDING with the issue that removes it, so the list can only shrink.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lora_trainer"

# DESIGN.md: faces -> app -> compare, train, dataset, demo -> host, network -> models -> shared leaves.
RANK = {"__main__": 6, "ui": 6, "cli": 6, "app": 5, "compare": 4, "train": 4, "dataset": 4, "demo": 4, "host": 3, "network": 3, "models": 2}
LEAF = 1  # the top-level modules: errors, fileio, paths, progress, jobs, project, trash, settings, ...
FACES = {"ui", "cli"}

PENDING = {
    # issue 14, "One application layer": the HTTP routes move to app/.
    ("host.webui_api", "compare.plan"): "issue 14",
    ("host.webui_api", "compare.render"): "issue 14",
    ("host.webui_api", "train.config"): "issue 14",
    ("host.webui_api", "train.run"): "issue 14",
    ("host.webui_api", "dataset.tagger"): "issue 14",
    ("host.webui_api", "dataset.captioner"): "issue 14",
}
# Arrows that are the point of the module: the `ui` and `demo` commands start the tab.
ALLOWED = {
    ("cli._common", "ui.context"): "the serve arguments build the tab's context",
    ("cli._common", "ui.standalone"): "the serve arguments start the tab",
}


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _runtime_nodes(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(our modules `name` imports, the outside top-level packages it imports)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    ours, outside = set(), set()

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for node in _runtime_nodes(ast.parse(path.read_text("utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [(a.name, False) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                mod = ".".join([*base, node.module] if node.module else base)
                targets = [(f"{mod}.{a.name}" if mod else a.name, True) for a in node.names] + [(mod, True)]
            else:
                targets = [(node.module or "", False)] + [(f"{node.module}.{a.name}", False) for a in node.names]
        for dotted, relative in targets:
            if relative or dotted.startswith("lora_trainer."):
                dotted = dotted.removeprefix("lora_trainer.")
                found = resolve(dotted)
                if found is not None and found != name:
                    ours.add(found)
            elif dotted:
                outside.add(dotted.split(".")[0])
    return ours, outside


@pytest.fixture(scope="module")
def graph():
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def rank(module: str) -> int:
    return RANK.get(module.split(".")[0], LEAF) if "." in module or module in RANK else LEAF


def test_arrows_point_down_and_faces_do_not_import_each_other(graph):
    found = set()
    for source, (ours, _) in graph.items():
        for target in ours:
            top_s, top_t = source.split(".")[0], target.split(".")[0]
            up = rank(target) > rank(source)
            across = top_s in FACES and top_t in FACES and top_s != top_t
            if up or across:
                found.add((source, target))
    unexpected = sorted(found - set(PENDING) - set(ALLOWED))
    assert unexpected == [], "arrows against DESIGN.md's layers:\n" + "\n".join(f"  {s} -> {t}" for s, t in unexpected)
    gone = sorted((set(PENDING) | set(ALLOWED)) - found)
    assert gone == [], f"no longer there, so remove them from PENDING / ALLOWED: {gone}"


def test_no_module_imports_in_a_circle(graph):
    edges = {name: ours for name, (ours, _) in graph.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert cycles == []


def test_only_the_webui_glue_imports_the_webui(graph):
    webui_packages = {"modules", "modules_forge", "backend", "ldm_patched", "ldm", "sgm", "networks"}
    offenders = sorted(name for name, (_, outside) in graph.items()
                       if outside & webui_packages and not name.startswith("host.webui"))
    assert offenders == []


def test_the_graph_reader_sees_lazy_and_relative_imports(graph):
    ours, outside = graph["cli.generate"]
    assert {"models.sampler", "network.io", "cli._console"} <= ours  # all inside run()
    assert "torch" in outside
    assert "ui.context" not in graph["host.webui_api"][0]  # imported for type hints only: not an arrow
    assert "train.run" in graph["host.webui_api"][0]  # ... a lazy import inside a function is one


def test_every_job_starts_in_one_place():
    """StudioContext.submit is the only caller of JobManager.submit (it applies the host's wrapper)."""
    callers = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "jobs.submit(" in p.read_text("utf-8"))
    assert callers == ["ui/context.py"]
