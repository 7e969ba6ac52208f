"""``shared/`` is the ground floor: no module of it imports a stage (``producer``, ``workers``)
or a heavy runtime (onnxruntime, torch), at the top or inside a function."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import ROOT

FORBIDDEN = ("producer", "workers", "torch", "onnxruntime", "tensorflow")


def imported_modules(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_checker_sees_nested_imports():
    code = "import os\ndef f():\n    from workers.up import run_up\n    import torch.nn\n"
    assert imported_modules(code) == {"os", "workers.up", "torch.nn"}


@pytest.mark.parametrize("path", sorted((ROOT / "shared").glob("*.py")), ids=lambda p: p.name)
def test_shared_imports_no_stage_and_nothing_heavy(path):
    bad = sorted(m for m in imported_modules(path.read_text())
                 if m.split(".")[0] in FORBIDDEN)
    assert bad == [], f"{path.name} imports {bad}"


def test_what_runs_in_a_worker_imports_no_offline_tooling():
    """Training, fine-tuning, evaluation and fetching stay apart from the running stages."""
    import subprocess
    import sys

    code = ("import sys, workers.cli, workers.up, workers.pose.worker, workers.action.worker, "
            "workers.pose.models, workers.action.classifier, producer.producer\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', "
            "'pycocotools', 'h5py') or m.startswith(('workers.models', 'workers.pose.finetune', "
            "'workers.pose.evaluate', 'workers.action.stgcn'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
