"""The house's layers, checked from the imports (ARCHITECTURE.md, "Layers").

* ``shared/`` is the ground floor: it imports no stage (``producer``, ``workers``) and no heavy
  runtime (onnxruntime, torch), at the top or inside a function.
* Every arrow between two packages is one :data:`ALLOWED` names: a new one is a decision,
  made here, not an accident. Only the front door (``workers.console``) imports the offline
  wing (``workers.offline``), and only inside the commands that need it.
* No import circle between modules, counting imports inside functions.
* What runs in a worker loads no offline tooling and no torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import ROOT

FORBIDDEN = ("producer", "workers", "torch", "onnxruntime", "tensorflow")
STAGES = {"producer", "workers.pose", "workers.action", "workers.alerting", "workers.history",
          "workers.web", "workers.archive", "workers.jobs", "workers.inference"}
# package -> the packages it may import (besides itself and shared)
ALLOWED = {
    "shared": set(),
    "producer": set(),
    "workers.inference": set(),
    "workers.pose": {"workers.inference"},
    "workers.action": {"workers.inference"},
    "workers.alerting": set(),
    "workers.history": set(),
    "workers.archive": set(),
    "workers.web": {"workers.history", "workers.jobs"},  # the history's store; the replay jobs' list
    "workers.jobs": {"producer", "workers.archive", "workers.action", "workers.inference"},
    "workers.offline": STAGES,
    "workers.console": STAGES | {"workers.offline"},
    "workers.__main__": {"workers.console"},
}


def imported_modules(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] in ("shared", "producer"):
        return parts[0]
    if parts[0] == "workers" and len(parts) > 1:
        return f"workers.{parts[1]}"
    return None


def our_modules(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for every module of the project's packages under ``root``."""
    out = {}
    for top in ("shared", "producer", "workers"):
        for path in (root / top).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = our_modules()


def module_graph() -> dict[str, set[str]]:
    graph = defaultdict(set)
    for name, path in MODULES.items():
        for imported in imported_modules(path.read_text()):
            if imported in MODULES and imported != name:
                graph[name].add(imported)
    return graph


def test_the_checker_sees_nested_imports():
    code = "import os\ndef f():\n    from workers.console.up import run_up\n    import torch.nn\n"
    assert imported_modules(code) == {"os", "workers.console.up", "workers.console.up.run_up", "torch.nn"}


def test_every_package_has_its_row():
    assert {package(m) for m in MODULES} - {None} <= set(ALLOWED)


@pytest.mark.parametrize("path", sorted((ROOT / "shared").glob("*.py")), ids=lambda p: p.name)
def test_shared_imports_no_stage_and_nothing_heavy(path):
    bad = sorted(m for m in imported_modules(path.read_text()) if m.split(".")[0] in FORBIDDEN)
    assert bad == [], f"{path.name} imports {bad}"


def test_arrows_between_packages_are_the_declared_ones():
    unexpected = []
    for name, imports in module_graph().items():
        src = package(name)
        for imported in imports:
            dst = package(imported)
            if dst not in (src, "shared") and dst not in ALLOWED.get(src, set()):
                unexpected.append(f"{name} -> {imported}")
    assert unexpected == []


def test_no_import_circle():
    graph, seen, on_path, circles = module_graph(), set(), [], []

    def visit(node):
        seen.add(node)
        on_path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_path:
                circles.append(" -> ".join(on_path[on_path.index(nxt):] + [nxt]))
            elif nxt not in seen:
                visit(nxt)
        on_path.pop()

    for node in sorted(MODULES):
        if node not in seen:
            visit(node)
    assert circles == []


def test_what_runs_in_a_worker_imports_no_offline_tooling():
    """Training, fine-tuning, evaluation and fetching stay apart from the running stages."""
    code = ("import sys, workers.console.cli, workers.console.up, workers.pose.worker, "
            "workers.action.worker, workers.pose.adapters, workers.action.classifier, "
            "producer.producer, workers.alerting.service, workers.web.server, workers.jobs.celery_app\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', "
            "'pycocotools', 'h5py') or m.startswith('workers.offline')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
