"""The bnorm CLI's contract for inspect and fold: exit codes, error messages,
--fail-on, the JSON schemas of docs/CLI.md, and that bad input loses nothing
(the input is never modified, no partial or temporary file is left).

Usage: check_cli.py BNORM MODEL_DIR WORK_DIR

MODEL_DIR holds the exported test models (make_models.py). Run with
/usr/bin/python3.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
from onnx import numpy_helper

BNORM = ""
failures = 0


def check(ok, what, detail=""):
    global failures
    print(("ok   " if ok else "FAIL ") + what + ("" if ok or not detail else "\n     " + detail))
    failures += not ok


def bnorm(*args):
    return subprocess.run([BNORM, *args], capture_output=True, text=True)


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def files(directory):
    return sorted(os.listdir(directory))


def expect_error(args, code, needles, what):
    r = bnorm(*args)
    ok = r.returncode == code and r.stderr.startswith("bnorm: error: ") and all(n in r.stderr for n in needles)
    check(ok, what, f"exit {r.returncode}, stderr: {r.stderr.strip()}")


def with_bn_params(src, dst, edit):
    """A copy of src where edit(name -> array) changed the first BN's parameters."""
    m = onnx.load(src)
    bn = next(n for n in m.graph.node if n.op_type == "BatchNormalization")
    inits = {t.name: t for t in m.graph.initializer}
    arrays = {k: numpy_helper.to_array(inits[name]).copy() for k, name in
              zip(("scale", "bias", "mean", "var"), bn.input[1:5])}
    edit(arrays)
    for k, name in zip(("scale", "bias", "mean", "var"), bn.input[1:5]):
        inits[name].CopyFrom(numpy_helper.from_array(arrays[k], name))
    onnx.save(m, dst)
    return bn.name


SCHEMA_INSPECT_ROW = {"name", "op_type", "producer", "input", "output", "channels", "epsilon", "momentum",
                      "training_mode", "scale", "bias", "mean", "var", "foldable", "fold_into", "fold_refusal"}
SCHEMA_FINDING = {"severity", "code", "node", "message"}
SCHEMA_FOLD_ITEM = {"batch_norm", "action", "target", "reason"}


def main():
    global BNORM
    BNORM, model_dir, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    block = os.path.join(work, "block.onnx")
    shutil.copy(os.path.join(model_dir, "resnet_block.onnx"), block)
    block_digest = digest(block)

    # --help and usage errors
    r = bnorm("--help")
    check(r.returncode == 0 and "inspect" in r.stdout and "fold" in r.stdout, "bnorm --help lists the subcommands")
    r = bnorm("fold", "--help")
    check(r.returncode == 0 and all(s in r.stdout for s in ("--scale-shift", "--in-place", "--json", "-o")),
          "bnorm fold --help lists its options")
    r = bnorm("inspect", "--help")
    check(r.returncode == 0 and "--fail-on" in r.stdout, "bnorm inspect --help lists --fail-on")
    check(bnorm().returncode == 2, "no subcommand is a usage error (2)")
    check(bnorm("inspect", block, "--fail-on", "info").returncode == 2, "--fail-on info is a usage error (2)")
    r = bnorm("inspect", block, "--bogus")
    check(r.returncode == 2 and r.stderr.startswith("bnorm: error: ") and "--bogus" in r.stderr,
          "a usage error is reported as 'bnorm: error: ...' naming the option", r.stderr)
    # --batch-size: a whole number in 1..INT64_MAX, or a usage error naming the value (CLI11 alone
    # clamped 99999999999999999999 to INT64_MAX, and named another value for a negative one).
    data = os.path.join(work, "batch_size_x.npy")
    np.save(data, np.zeros((2, 3), np.float32))
    for sub in ("run", "verify", "calibrate", "prepare"):
        for value in ("99999999999999999999", "-99999999999999999999", "0", "2.5", "0x10"):
            args = {"run": [block, "--data", data, "-o", os.path.join(work, "bs.npz")],
                    "verify": [block, block, "--data", data],
                    "calibrate": [block, "--data", data, "-o", os.path.join(work, "bs.onnx")],
                    "prepare": [block, "--calib", data, "-o", os.path.join(work, "bs.onnx")]}[sub]
            expect_error([sub, *args, "--batch-size", value], 2, ["--batch-size", f"'{value}'", "whole number"],
                         f"{sub} --batch-size {value} is a usage error naming the value")
    check(not any(f.startswith("bs.") for f in files(work)), "no output written after a bad --batch-size")

    # inspect: text and JSON
    r = bnorm("inspect", block)
    check(r.returncode == 0 and "4 BatchNormalization nodes" in r.stdout, "inspect prints one row per BN",
          r.stdout + r.stderr)
    r = bnorm("inspect", block, "--json")
    report = json.loads(r.stdout)
    check(set(report) == {"model", "batch_norms", "findings", "summary"}, "inspect JSON top-level keys")
    check(len(report["batch_norms"]) == 4 and all(set(row) == SCHEMA_INSPECT_ROW for row in report["batch_norms"]),
          "inspect JSON rows follow the schema")
    check(all(row["epsilon"] == 1e-5 and row["momentum"] == 0.9 for row in report["batch_norms"]),
          "inspect JSON gives epsilon and momentum as written (1e-05, not the float's 9.999999747378752e-06)",
          str([(row["epsilon"], row["momentum"]) for row in report["batch_norms"]]))
    check(all(set(f) == SCHEMA_FINDING for f in report["findings"]), "inspect JSON findings follow the schema")
    check(set(report["summary"]) == {"batch_norms", "errors", "warnings", "infos"}, "inspect JSON summary keys")
    row = report["batch_norms"][0]
    check(row["channels"] == 8 and row["producer"].startswith("Conv") and row["foldable"] is True,
          "inspect JSON row content", json.dumps(row))

    # inspect --fail-on gates on severity
    untrained = os.path.join(work, "untrained.onnx")
    with_bn_params(block, untrained, lambda a: (a["mean"].fill(0), a["var"].fill(1)))
    r = bnorm("inspect", untrained, "--json")
    codes = {f["code"] for f in json.loads(r.stdout)["findings"]}
    check("untrained_statistics" in codes, "untrained statistics are found", str(codes))
    check(bnorm("inspect", untrained).returncode == 0, "without --fail-on, findings do not fail")
    check(bnorm("inspect", untrained, "--fail-on", "warning").returncode == 1, "--fail-on warning fails on a warning")
    check(bnorm("inspect", untrained, "--fail-on", "error").returncode == 0, "--fail-on error passes a warning")
    broken = os.path.join(work, "nan.onnx")
    with_bn_params(block, broken, lambda a: a["var"].__setitem__(0, np.nan))
    check(bnorm("inspect", broken, "--fail-on", "error").returncode == 1, "--fail-on error fails on NaN")
    check(bnorm("inspect", block, "--fail-on", "warning").returncode == 0, "a clean model passes --fail-on warning")

    # bad files
    expect_error(["inspect", os.path.join(work, "absent.onnx")], 4, ["absent.onnx"], "a missing model is an I/O error")
    text = os.path.join(work, "notes.txt")
    with open(text, "w") as f:
        f.write("not a model\n")
    expect_error(["inspect", text], 5, ["notes.txt", "not a valid ONNX model"], "a text file is an invalid model")
    truncated = os.path.join(work, "truncated.onnx")
    with open(block, "rb") as f, open(truncated, "wb") as g:
        g.write(f.read()[: os.path.getsize(block) // 2])
    expect_error(["inspect", truncated], 5, ["truncated.onnx"], "a truncated model is an invalid model")
    escaping = os.path.join(work, "escaping.onnx")
    m = onnx.load(block)
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", "../../etc/passwd"
    onnx.save(m, escaping)
    expect_error(["fold", escaping, "-o", os.path.join(work, "out.onnx")], 5, ["../../etc/passwd", "directory"],
                 "external data escaping the directory is refused")

    # -o naming the model's external data file (an input too) is refused by every command that writes,
    # and the file is left as it was (fold -o weights.bin replaced it, and the model then read garbage).
    ext_dir = os.path.join(work, "ext")
    os.makedirs(ext_dir)
    m = onnx.load(block)
    from onnx.external_data_helper import convert_model_to_external_data
    convert_model_to_external_data(m, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    ext_model = os.path.join(ext_dir, "model.onnx")
    onnx.save(m, ext_model)
    weights = os.path.join(ext_dir, "weights.bin")
    weights_digest = digest(weights)
    x_block = os.path.join(work, "x_block.npy")
    np.save(x_block, np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32))
    for args in (["fold", ext_model], ["calibrate", ext_model, "--data", x_block], ["run", ext_model, "--data", x_block],
                 ["prepare", ext_model, "--calib", x_block]):
        expect_error(args + ["-o", weights], 3, ["weights.bin", "never overwritten"],
                     f"{args[0]} -o the model's external data file is refused")
    check(digest(weights) == weights_digest and files(ext_dir) == ["model.onnx", "weights.bin"],
          "the external data file is unchanged and nothing else was written")

    # --json with a name that is not UTF-8 (protobuf does not check): the byte prints as U+FFFD; the
    # JSON writer threw after fold had written its output (exit 6, no report).
    m = onnx.load(block)
    bn = next(n for n in m.graph.node if n.op_type == "BatchNormalization")
    bn.name = "BN_NOT_UTF8"
    raw = m.SerializeToString()
    assert raw.count(b"BN_NOT_UTF8") == 1
    not_utf8 = os.path.join(work, "not_utf8.onnx")
    with open(not_utf8, "wb") as f:
        f.write(raw.replace(b"BN_NOT_UTF8", b"BN_NOT_UTF\xff"))
    for args in (["inspect", not_utf8, "--json"], ["fold", not_utf8, "-o", os.path.join(work, "u8.onnx"), "--json"]):
        r = bnorm(*args)
        ok = r.returncode == 0
        try:
            names = [row.get("name") or row.get("batch_norm") for row in json.loads(r.stdout)["batch_norms"]]
        except (ValueError, KeyError):
            ok, names = False, []
        check(ok and "BN_NOT_UTF\ufffd" in names, f"{args[0]} --json reports a name that is not UTF-8",
              r.stdout[-300:] + r.stderr)
    os.remove(os.path.join(work, "u8.onnx"))

    # Data without rows is refused by every command that reads data (verify and prepare passed on it,
    # with nothing compared, and prepare printed an accuracy of nan%).
    no_rows = os.path.join(work, "no_rows.npy")
    np.save(no_rows, np.zeros((0, 3, 16, 16), np.float32))
    for args in (["run", block, "--data", no_rows, "-o", os.path.join(work, "nr.npy")],
                 ["verify", block, block, "--data", no_rows],
                 ["calibrate", block, "--data", no_rows, "-o", os.path.join(work, "nr.onnx")],
                 ["prepare", block, "--calib", x_block, "--eval", no_rows, "-o", os.path.join(work, "nr.onnx")]):
        expect_error(args, 3, ["no_rows.npy", "holds no rows"], f"{args[0]} refuses data without rows")
    check(not any(f.startswith("nr.") for f in files(work)), "nothing written for data without rows")

    # A signal while run writes its output (Ctrl-C, kill) removes the temporary file (it was left behind,
    # as large as the output written so far) and ends the process as the signal does.
    sig_dir = os.path.join(work, "signal")
    os.makedirs(sig_dir)
    big = os.path.join(work, "big_x.npy")
    np.save(big, np.random.default_rng(1).standard_normal((20000, 3, 16, 16)).astype(np.float32))
    for sig in (signal.SIGTERM, signal.SIGINT):
        p = subprocess.Popen([BNORM, "run", block, "--data", big, "-o", os.path.join(sig_dir, "y.npy")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seen = False
        while p.poll() is None and not seen:
            seen = any(".tmp-" in f for f in os.listdir(sig_dir))
            time.sleep(0.001)
        if seen:
            p.send_signal(sig)
        p.wait(timeout=60)
        check(seen and p.returncode == -sig and os.listdir(sig_dir) == [],
              f"{signal.Signals(sig).name} while run writes leaves no file behind",
              f"temporary seen {seen}, exit {p.returncode}, left {os.listdir(sig_dir)}")
    os.remove(big)

    # fold: outputs, and nothing lost on error
    before = files(work)
    expect_error(["fold", block], 2, ["-o", "--in-place"], "fold without -o or --in-place is a usage error")
    expect_error(["fold", block, "-o", os.path.join(work, "both.onnx"), "--in-place"], 2, ["exclude each other"],
                 "fold with -o and --in-place is a usage error")
    expect_error(["inspect", work], 4, ["it is a directory"], "a directory as MODEL is an I/O error")
    expect_error(["fold", block, "-o", block], 3, ["never overwritten", "--in-place"], "fold -o INPUT is refused")
    expect_error(["fold", block, "-o", os.path.join(work, ".", "block.onnx")], 3, ["--in-place"],
                 "fold -o INPUT by another spelling is refused")
    expect_error(["fold", block, "-o", os.path.join(work, "no_dir", "x.onnx")], 4, ["no_dir"],
                 "fold into a missing directory is an I/O error")
    expect_error(["fold", truncated, "-o", os.path.join(work, "x.onnx")], 5, ["truncated.onnx"],
                 "fold of a truncated model is an invalid model")
    check(files(work) == before, "failed folds leave no file behind", f"{before} -> {files(work)}")
    check(digest(block) == block_digest, "failed folds leave the input unchanged")

    out = os.path.join(work, "folded.onnx")
    r = bnorm("fold", block, "-o", out, "--json")
    report = json.loads(r.stdout)
    check(r.returncode == 0 and set(report) == {"model", "output", "batch_norms", "summary"}, "fold JSON top-level keys",
          r.stderr)
    check(all(set(i) == SCHEMA_FOLD_ITEM for i in report["batch_norms"]), "fold JSON items follow the schema")
    check(report["summary"] == {"folded": 4, "scale_shift": 0, "left": 0}, "fold folds the block's 4 BNs",
          json.dumps(report["summary"]))
    check(digest(block) == block_digest, "fold -o leaves the input unchanged")
    onnx.checker.check_model(onnx.load(out))
    r = bnorm("fold", block, "-o", out)
    check(r.returncode == 0 and r.stdout.count("folded BatchNormalization") == 4
          and "4 folded, 0 replaced by Mul + Add, 0 left" in r.stdout, "fold text report", r.stdout)

    in_place = os.path.join(work, "in_place.onnx")
    shutil.copy(block, in_place)
    listing = files(work)
    r = bnorm("fold", in_place, "--in-place")
    check(r.returncode == 0 and digest(in_place) != block_digest and files(work) == listing,
          "--in-place rewrites the model and leaves no temporary file", r.stderr)
    check(not any(n.op_type == "BatchNormalization" for n in onnx.load(in_place).graph.node),
          "--in-place result has no BN left")

    # --in-place on a link (model.onnx -> versions/v3.onnx) rewrites the file
    # it points to and keeps the link; a private model stays private.
    versions = os.path.join(work, "versions")
    os.makedirs(versions, exist_ok=True)
    target = os.path.join(versions, "v3.onnx")
    shutil.copy(block, target)
    os.chmod(target, 0o600)
    link = os.path.join(work, "linked.onnx")
    os.symlink("versions/v3.onnx", link)
    listing = files(work)
    r = bnorm("fold", link, "--in-place")
    check(r.returncode == 0 and os.path.islink(link) and os.readlink(link) == "versions/v3.onnx",
          "--in-place on a symbolic link keeps the link", r.stderr)
    check(digest(target) != block_digest and files(work) == listing and files(versions) == ["v3.onnx"],
          "--in-place on a symbolic link rewrites the file it points to, no temporary left")
    check(os.stat(target).st_mode & 0o777 == 0o600, "--in-place keeps the model's permission bits",
          oct(os.stat(target).st_mode & 0o777))

    unfoldable = os.path.join(model_dir, "unfoldable.onnx")
    r = bnorm("fold", unfoldable, "-o", os.path.join(work, "u.onnx"))
    check(r.returncode == 0 and r.stdout.count("left BatchNormalization") == 3, "unfoldable BNs are left, each with a reason",
          r.stdout)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
