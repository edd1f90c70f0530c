"""The Fashion-MNIST BatchNorm training example (examples/mnist_bn), end to end.

Usage:
  check_mnist_bn.py train BINARY WORK_DIR
  check_mnist_bn.py mpi   BINARY WORK_DIR MPIEXEC

train: 400 steps of the sigmoid network at lr 0.5 with and without BN. Both
  runs' mini-batch loss must fall; BN must end with the lower loss and a test
  accuracy at least 5 points above the plain network's (measured with seed 1:
  loss 0.53 vs 1.00 over the last 50 steps, 77.6% vs 63.3% on the 10k test
  set). The same command with 1 and 2 threads must write identical curves
  (runs are deterministic).
mpi: 200 steps at lr 0.5, BN and plain, in one process and under
  `mpirun -np 2` (SyncBatchNorm, half of each batch of 60 per rank): every
  step's loss must agree within 1e-4.
Run with /usr/bin/python3 (standard library only).
"""
import csv
import os
import shutil
import subprocess
import sys

failures = 0


def check(ok, what, detail=""):
    global failures
    print(("ok   " if ok else "FAIL ") + what + ("" if ok or not detail else "\n     " + str(detail)))
    failures += not ok


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        check(False, " ".join(cmd), f"exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r.returncode == 0


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def step_losses(path):
    """{variant: [loss of step 1, 2, ...]}"""
    out = {}
    for row in read_csv(path):
        out.setdefault(row["variant"], []).append((int(row["step"]), float(row["loss"])))
    return {v: [loss for _, loss in sorted(rows)] for v, rows in out.items()}


def mean(xs):
    return sum(xs) / len(xs)


def train(binary, work):
    common = ["--steps", "400", "--lr", "0.5", "--eval-every", "100", "--eval-rows", "2000", "--quiet"]
    outs = {}
    for threads in (2, 1):
        out = os.path.join(work, f"threads{threads}")
        if not run([binary, *common, "--threads", str(threads), "--out", out,
                    "--log-loss", os.path.join(out, "loss.csv")]):
            return
        outs[threads] = out
    losses = step_losses(os.path.join(outs[2], "loss.csv"))
    summary = {row["variant"]: row for row in read_csv(os.path.join(outs[2], "summary.csv"))}
    check(set(losses) == {"bn", "plain"} and all(len(v) == 400 for v in losses.values()),
          "400 step losses for bn and plain", {k: len(v) for k, v in losses.items()})
    for variant, ls in losses.items():
        first, last = mean(ls[:50]), mean(ls[-50:])
        check(last < 0.6 * first, f"{variant}: loss falls (first 50 steps {first:.3f}, last 50 {last:.3f})")
        check(summary[variant]["diverged"] == "0", f"{variant}: no divergence")
    bn_loss, plain_loss = mean(losses["bn"][-50:]), mean(losses["plain"][-50:])
    check(bn_loss < plain_loss, f"BN ends with the lower loss ({bn_loss:.3f} vs plain {plain_loss:.3f})")
    bn_acc, plain_acc = float(summary["bn"]["final_accuracy"]), float(summary["plain"]["final_accuracy"])
    check(bn_acc >= plain_acc + 0.05,
          f"BN's test accuracy beats plain by 5 points or more ({bn_acc:.4f} vs {plain_acc:.4f})")
    for name in ("curves.csv", "summary.csv"):
        with open(os.path.join(outs[1], name)) as a, open(os.path.join(outs[2], name)) as b:
            one, two = a.read(), b.read()
        if name == "summary.csv":  # the last column is the run time
            one = [line.rsplit(",", 1)[0] for line in one.splitlines()]
            two = [line.rsplit(",", 1)[0] for line in two.splitlines()]
        check(one == two, f"{name} identical with 1 and 2 threads")
    with open(os.path.join(outs[2], "training_curves.svg")) as f:
        svg = f.read()
    check(svg.startswith("<svg") and svg.count("<polyline") == 4, "the SVG has one line per run in each of its 2 panels")


def mpi(binary, work, mpiexec):
    common = ["--steps", "200", "--lr", "0.5", "--eval-every", "100", "--quiet", "--variants", "bn,plain"]
    one = os.path.join(work, "np1")
    two = os.path.join(work, "np2")
    if not run([binary, *common, "--threads", "1", "--out", one, "--log-loss", os.path.join(one, "loss.csv")]):
        return
    # OMP_NUM_THREADS=1: two ranks on two cores.
    launcher = [mpiexec, "--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,vader",
                "-x", "OMP_NUM_THREADS=1", "-np", "2"]
    if not run([*launcher, binary, *common, "--out", two, "--log-loss", os.path.join(two, "loss.csv")]):
        return
    with open(os.path.join(two, "summary.md")) as f:
        check("2 process(es)" in f.read(), "the mpirun job ran as one 2-process job (not 2 single processes)")
    a = step_losses(os.path.join(one, "loss.csv"))
    b = step_losses(os.path.join(two, "loss.csv"))
    for variant in ("bn", "plain"):
        la, lb = a.get(variant, []), b.get(variant, [])
        if len(la) != 200 or len(lb) != 200:
            check(False, f"{variant}: 200 steps in both runs", (len(la), len(lb)))
            continue
        worst = max(range(200), key=lambda i: abs(la[i] - lb[i]))
        diff = abs(la[worst] - lb[worst])
        check(diff <= 1e-4, f"{variant}: 2 ranks vs 1 process, max |loss difference| over 200 steps "
              f"{diff:.3g} (step {worst + 1}); step 200: {la[-1]:.8f} vs {lb[-1]:.8f}")


def main():
    mode, binary, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    if mode == "train":
        train(binary, work)
    elif mode == "mpi":
        mpi(binary, work, sys.argv[4])
    else:
        sys.exit(f"unknown mode {mode}")
    print("FAILED" if failures else "PASSED")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
