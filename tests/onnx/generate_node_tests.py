"""Writes the ONNX backend node test cases for the given op types.

Usage: generate_node_tests.py OUT_DIR OP_TYPE [OP_TYPE ...]

Debian's python3-onnx (1.12) ships the case generators but not their data.
With numpy >= 1.24 the generators need numpy's removed aliases back first
(DESIGN.md section 5). Run with /usr/bin/python3, where python3-onnx lives.
"""
import sys

import numpy as np

for alias, builtin in (("float", float), ("int", int), ("bool", bool), ("object", object)):
    if alias not in np.__dict__:
        setattr(np, alias, builtin)

from onnx.backend.test import cmd_tools  # noqa: E402  (needs the aliases)


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = sys.argv[1]
    for op_type in sys.argv[2:]:
        sys.argv = ["generate_node_tests", "generate-data", "-o", out_dir, "--op_type", op_type]
        cmd_tools.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
