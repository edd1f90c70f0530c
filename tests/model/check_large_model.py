"""Inspects and folds a ResNet-50-sized model with the bnorm CLI and checks
the result and the peak memory of each command.

Usage: check_large_model.py BNORM MODEL WORK_DIR

Asserts that every one of the model's BatchNormalization nodes is reported
and folded, that the folded model has none left and the same number of
Conv nodes, and that each command's peak resident memory stays under three
times the model's file size. Wall time is printed, not asserted: timings
belong to benchmarks, not tests. Run with /usr/bin/python3.
"""
import json
import math
import os
import subprocess
import sys
import time

import onnx


def measured(cmd, stdout_path):
    """Runs cmd with stdout to stdout_path; returns (exit code, wall seconds,
    peak RSS in bytes of that process alone, from wait4)."""
    start = time.perf_counter()
    with open(stdout_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - start, usage.ru_maxrss * 1024


def main():
    bnorm, model_path, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    size = os.path.getsize(model_path)
    # Measure first: a child's peak RSS includes what this process held when
    # it forked, so nothing large may be loaded here before the commands ran.
    inspect_json = os.path.join(work, "inspect.json")
    inspect_run = measured([bnorm, "inspect", model_path, "--json"], inspect_json)
    folded_path = os.path.join(work, "resnet50_folded.onnx")
    fold_json = os.path.join(work, "fold.json")
    fold_run = measured([bnorm, "fold", model_path, "-o", folded_path, "--json"], fold_json)

    model = onnx.load(model_path)
    bn_count = sum(n.op_type == "BatchNormalization" for n in model.graph.node)
    conv_count = sum(n.op_type == "Conv" for n in model.graph.node)
    outputs = [o.name for o in model.graph.output]
    params = sum(math.prod(t.dims) for t in model.graph.initializer)
    del model
    print(f"model {model_path}: {size / 1e6:.1f} MB, {params / 1e6:.1f} M parameters, {bn_count} BatchNormalization")
    failures = 0

    def check(ok, what):
        nonlocal failures
        print(("ok   " if ok else "FAIL ") + what)
        failures += not ok

    check(bn_count >= 50 and params >= 20e6, "the model is ResNet-50-sized")

    code, seconds, rss = inspect_run
    print(f"inspect: {seconds:.3f} s wall, peak RSS {rss / 1e6:.1f} MB = {rss / size:.2f}x the model")
    check(code == 0, f"inspect exits 0 (got {code})")
    with open(inspect_json) as f:
        report = json.load(f)
    check(report["summary"]["batch_norms"] == bn_count, "inspect reports every BatchNormalization")
    check(all(row["foldable"] for row in report["batch_norms"]), "inspect finds every one foldable")
    check(rss < 3 * size, "inspect peak memory under 3x the model size")

    code, seconds, rss = fold_run
    print(f"fold:    {seconds:.3f} s wall, peak RSS {rss / 1e6:.1f} MB = {rss / size:.2f}x the model")
    check(code == 0, f"fold exits 0 (got {code})")
    with open(fold_json) as f:
        report = json.load(f)
    check(report["summary"]["folded"] == bn_count, f"fold folds all {bn_count} ({report['summary']})")
    check(rss < 3 * size, "fold peak memory under 3x the model size")
    folded = onnx.load(folded_path)
    onnx.checker.check_model(folded)
    check(not any(n.op_type == "BatchNormalization" for n in folded.graph.node), "no BatchNormalization left")
    check(sum(n.op_type == "Conv" for n in folded.graph.node) == conv_count, "every Conv kept")
    check([o.name for o in folded.graph.output] == outputs, "graph outputs keep their names")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
