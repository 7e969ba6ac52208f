"""Post-process a tf2onnx model without changing what it computes.

1. Name the dynamic I/O dims (``in0=batch in1=height out1=height_div8 ...``; tf2onnx writes ``unk__NNN``).
2. Make the file byte-reproducible: tf2onnx numbers the names it generates (``const_fold_opt__1511``,
   ``Transpose__1398``) from a counter whose values vary from run to run, and its optimizer keeps an
   arbitrary member of each group of equal constants/nodes. Generated names (those with ``__<digits>``)
   are renumbered in graph order and initializers are stored in order of first use; with
   ``neutral_names`` every name except the graph I/O is replaced by ``<op>__nK`` / ``const__K`` /
   ``<op>_out__K`` (the MoveNet graph needs it: CSE also merges nodes that carry TF names).
   An explicitly empty node ``domain`` is cleared (some runs set it, some do not).
3. Drop ``value_info`` (re-derivable; it holds stale ``unk__`` symbols) and run the ONNX checker with
   ``full_check=True``. With ``doc_string`` the model's doc string is set and the graph's, where
   tf2onnx writes ``converted from <local path>``, emptied: how the reference files were finished.

Same algorithm and output as the project's shared/models/recipe/postprocess.py (plus ``doc_string``);
``fetch`` reproduces shared/models/*.onnx byte for byte with it. It imports only the
standard library and ``onnx``, because it runs as a script inside the conversion virtualenv:
``python postprocess.py IN.onnx OUT.onnx [in0=batch ...] [--neutral-names] [--doc-string TEXT]``.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

import onnx

log = logging.getLogger(__name__)

GENERATED = re.compile(r"__\d+")


def parse_dims(items: list[str]) -> dict[str, str]:
    """``["in0=batch", "out1=height_div8"]`` -> ``{"in0": "batch", "out1": "height_div8"}``."""
    dims = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"(in|out)\d+", key) or not value:
            raise ValueError(f"bad dim spec {item!r}; expected e.g. in0=batch or out2=width_div8")
        dims[key] = value
    return dims


def name_dims(graph: onnx.GraphProto, dims: dict[str, str]) -> None:
    for prefix, values in (("in", graph.input), ("out", graph.output)):
        for vi in values:
            for i, dim in enumerate(vi.type.tensor_type.shape.dim):
                if f"{prefix}{i}" in dims:
                    dim.Clear()
                    dim.dim_param = dims[f"{prefix}{i}"]


class _Renamer:
    """One shared name mapping; new names are numbered in the order they are first met."""

    def __init__(self, graph: onnx.GraphProto, neutral: bool):
        self.neutral = neutral
        self.mapping: dict[str, str] = {}
        self.io_names = {v.name for v in list(graph.input) + list(graph.output)}
        self.init_names = {t.name for t in graph.initializer}
        self.producer = {out: n.op_type for n in graph.node for out in n.output}

    def __call__(self, name: str, node_op: str | None = None) -> str:
        if not name or name in self.io_names or (not self.neutral and not GENERATED.search(name)):
            return name
        if name not in self.mapping:
            if name in self.init_names:
                base = "const"
            elif node_op is None:
                base = self.producer.get(name, "value") + "_out"
            else:
                base = node_op
            self.mapping[name] = f"{base}__{len(self.mapping)}"
        return self.mapping[name]


def renumber(graph: onnx.GraphProto, neutral: bool = False) -> None:
    """Rename generated (or, with ``neutral``, all non-I/O) names; sort initializers by first use."""
    ren = _Renamer(graph, neutral)
    used: list[str] = []
    for idx, node in enumerate(graph.node):
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ValueError(f"node {node.name!r} has a subgraph; not handled")
        if not node.domain:
            node.ClearField("domain")
        node.name = f"{node.op_type}__n{idx}" if neutral else ren(node.name, node.op_type)
        for k, name in enumerate(node.input):
            used.append(name)
            node.input[k] = ren(name)
        for k, name in enumerate(node.output):
            node.output[k] = ren(name)
    first_use: dict[str, int] = {}
    for i, name in enumerate(used):
        first_use.setdefault(name, i)
    inits = sorted(graph.initializer, key=lambda t: first_use.get(t.name, len(used)))
    inits = [onnx.TensorProto.FromString(t.SerializeToString()) for t in inits]
    for tensor in inits:
        tensor.name = ren(tensor.name)
    del graph.initializer[:]
    graph.initializer.extend(inits)


def postprocess(model: onnx.ModelProto, dims: dict[str, str], neutral: bool = False,
                doc_string: str | None = None, check: bool = True) -> onnx.ModelProto:
    """Apply steps 1-3 in place and return ``model``."""
    graph = model.graph
    name_dims(graph, dims)
    del graph.value_info[:]
    renumber(graph, neutral)
    if doc_string is not None:  # tf2onnx's graph doc string names the local source path
        model.doc_string = doc_string
        graph.doc_string = ""
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def describe_io(model: onnx.ModelProto) -> list[str]:
    out = []
    for vi in list(model.graph.input) + list(model.graph.output):
        tt = vi.type.tensor_type
        shape = [d.dim_value or d.dim_param for d in tt.shape.dim]
        out.append(f"{vi.name} {onnx.TensorProto.DataType.Name(tt.elem_type)} {shape}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("dims", nargs="*", metavar="inK=NAME|outK=NAME")
    parser.add_argument("--neutral-names", action="store_true")
    parser.add_argument("--doc-string")
    args = parser.parse_args(argv)
    try:
        dims = parse_dims(args.dims)
    except ValueError as exc:
        parser.error(str(exc))
    model = postprocess(onnx.load(args.src), dims, args.neutral_names, args.doc_string)
    onnx.save(model, args.dst)
    print("\n".join(describe_io(model)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
