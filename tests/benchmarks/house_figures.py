"""Figures of the code's structure (issue 21): lines per package, import circles between
modules, arrows running up (a lower layer importing a higher one), the largest class and
function. Run on purpose: ``python tests/benchmarks/house_figures.py [ROOT]``."""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.shared.test_layers import imported_modules, our_modules  # noqa: E402

# lower number = lower layer; a package importing one with a higher number is an arrow up
RANK = {"shared": 0, "producer": 1, "workers.inference": 1, "workers.offline": 3,
        "workers.console": 4, "workers.__main__": 5}
OLD_TOP = {"workers.cli": 4, "workers.up": 4, "workers.up_args": 4, "workers.up_outputs": 4,
           "workers.up_skeletons": 4, "workers.supervisor": 4, "workers.k8s": 4,
           "workers.models": 3}


def package(module: str) -> str:
    parts = module.split(".")
    return parts[0] if parts[0] in ("shared", "producer") or len(parts) == 1 else ".".join(parts[:2])


def rank(module: str) -> int:
    if module.startswith(("workers.action.stgcn", "workers.pose.finetune", "workers.pose.evaluate",
                          "workers.pose.detections")):
        return 3
    pkg = package(module)
    return RANK.get(pkg, OLD_TOP.get(pkg, 2))


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main(root: Path) -> None:
    mods = our_modules(root)
    lines = defaultdict(int)
    graph = defaultdict(set)
    biggest_class, biggest_func = (0, ""), (0, "")
    for name, path in mods.items():
        text = path.read_text()
        lines[package(name)] += len(text.splitlines())
        tree = ast.parse(text)
        graph[name] = {m for m in imported_modules(text) if m in mods and m != name}
        for node in ast.walk(tree):
            size = (getattr(node, "end_lineno", 0) or 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, ast.ClassDef) and size > biggest_class[0]:
                biggest_class = (size, f"{name}.{node.name}")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > biggest_func[0]:
                biggest_func = (size, f"{name}.{node.name}")
    print("lines per package:")
    for pkg, n in sorted(lines.items(), key=lambda kv: -kv[1]):
        print(f"  {pkg:28s} {n:6d}")
    print(f"  {'total':28s} {sum(lines.values()):6d}")
    loops = circles(graph)
    print(f"import circles: {len(loops)}")
    for loop in loops:
        print("  " + " <-> ".join(loop))
    up = sorted(f"{a} -> {b}" for a, bs in graph.items() for b in bs if rank(b) > rank(a))
    print(f"arrows running up: {len(up)}")
    for arrow in up:
        print("  " + arrow)
    print(f"largest class: {biggest_class[1]} ({biggest_class[0]} lines)")
    print(f"largest function: {biggest_func[1]} ({biggest_func[0]} lines)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2])
