"""Writes the ONNX backend node test cases whose graphs use only the given
op types.

Usage: generate_node_tests.py OUT_DIR OP_TYPE [OP_TYPE ...]

A case is written when every node of its graph is one of the OP_TYPEs (so
the "_expanded" form of a function op is included when its body uses only
them). Debian's python3-onnx (1.12) ships the case generators but not their
data. With numpy >= 1.24 the generators need numpy's removed aliases back
first (DESIGN.md section 5). Run with /usr/bin/python3, where python3-onnx
lives.
"""
import argparse
import os
import sys

import numpy as np

for alias, builtin in (("float", float), ("int", int), ("bool", bool), ("object", object)):
    if alias not in np.__dict__:
        setattr(np, alias, builtin)

from onnx.backend.test import cmd_tools  # noqa: E402  (needs the aliases)
from onnx.backend.test.case import node as node_test  # noqa: E402


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir, op_types = sys.argv[1], set(sys.argv[2:])
    # collect_testcases imports the case modules once: collect them all in
    # one call, then keep the cases made of the wanted ops only.
    cases = [c for c in node_test.collect_testcases(None)
             if c.model.graph.node and all(n.op_type in op_types for n in c.model.graph.node)]
    # cmd_tools writes the files (model.onnx, test_data_set_*); give it our list.
    node_test.collect_testcases = lambda _op_type: cases
    cmd_tools.model_test.collect_testcases = lambda: []
    cmd_tools.generate_data(argparse.Namespace(output=out_dir, op_type=None))
    print(f"wrote {len(cases)} node test cases to {os.path.join(out_dir, 'node')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
