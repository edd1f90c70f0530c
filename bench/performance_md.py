"""Writes docs/PERFORMANCE.md from the bnorm-bench runs in a folder.

Usage: bench/take_runs.sh build    (takes the runs into bench/runs/)
       /usr/bin/python3 bench/performance_md.py bench/runs > docs/PERFORMANCE.md

The folder holds one file per run, each starting with a line "$ <command>":
batch_norm.txt (the main table, with --bandwidth), and optionally small.txt
(the small shapes again with more repetitions), patterns.txt (--patterns),
family.txt (--ops bn_relu,...: the normalization family with the targets of
issue #6), family_small.txt (group and instance norm on small maps), sync.txt (bnorm-sync-bench under mpirun) and exec.txt
(bench/exec_speed.sh: bnorm-exec-bench runs, each after its "$ " line).

The tables and every figure in the text about the latest run come from the
runs; the prose says what bounds the ratios. Paragraphs that record how the
kernels were tuned quote the measurements of that time and say on which
machine they were taken.
"""
import argparse
import os
import re
import statistics

DRAM = ("64x256x56x56", "256x1024x14x14")
CACHE = ("32x64x56x56", "128x512x7x7")
SMALL = ("1x64x1x1", "2x64x7x7", "8x2048")
TARGET = {"forward_inference": 1.10, "forward_training": 1.25, "backward": 1.70}


def num(v):
    try:
        return float(v)
    except ValueError:
        return None


def read_run(folder, name):
    """(command, output) of a run file, or None when the folder has no such run."""
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return None
    first, _, rest = open(path).read().rstrip().partition("\n")
    if not first.startswith("$ "):
        raise SystemExit(f"{path}: the first line must be '$ <command>', the command that made the run")
    return first[2:], rest


def run_block(w, command, text):
    """A run's command and its output, each in a code block."""
    w("```\n" + command + "\n```\n")
    w("```\n" + text.rstrip() + "\n```\n")


def scaling(rows):
    """((roof_ms, bnorm_ms) at 1 thread, the same at 2, case) for the DRAM-resident cases run at both."""
    key = lambda r: (r[0], r[1], r[2], r[3])
    t1 = {key(r): (num(r[5]), num(r[6])) for r in rows if r[4] == "1"}
    t2 = {key(r): (num(r[5]), num(r[6])) for r in rows if r[4] == "2"}
    return [(t1[k], t2[k], k) for k in t1 if k[3] in DRAM and k in t2]


def roofline_scaling(rows):
    """(roof_ms at 1 thread, at 2) for the DRAM-resident cases run at both."""
    return [(a[0], b[0]) for a, b, _ in scaling(rows) if a[0] and b[0]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", help="the folder of run files (bench/runs)")
    args = ap.parse_args()
    main_run = read_run(args.runs, "batch_norm.txt")
    if main_run is None:
        raise SystemExit(f"{args.runs}: no batch_norm.txt (bench/take_runs.sh takes it)")
    command, text = main_run
    lines = text.splitlines()
    bw = {}
    rows = []
    for line in lines:
        parts = line.split()
        if len(parts) == 4 and parts[0].isdigit():
            bw[int(parts[0])] = tuple(float(p) for p in parts[1:])
        elif len(parts) == 12 and parts[0] in TARGET:
            rows.append(parts)
    out = []
    w = out.append
    w("# Performance\n")
    w("All figures come from `bnorm-bench`, which runs the roofline, bnorm, oneDNN 2.6 and ATen 1.13 in one")
    w("process, interleaved repetition by repetition, on the same buffers, and reports medians. Judge by the")
    w("ratios: the runs come from 2-core VMs whose absolute speed drifts from minute to minute (20-40% on the")
    w("Intel machine of the early runs; on the AMD Zen 5 VM (family 26) of the runs before the latest, the")
    w("roofline at two threads read from about 50 to 95 GB/s, between runs and between the cases of one run;")
    w("the latest run's machine is named below), so a case can differ by that")
    w("much between two runs, and bnorm's ratio to the roofline is highest where memory happened to be fast.\n")
    w("- **roofline**: `y = a*x + b` over the same elements and dtype with streaming stores (read x, write y:")
    w("  the traffic of inference). **bn/roof** = bnorm / roofline time; the floor is 1.0 for inference.")
    w("- **dnnl/bn**, **aten/bn** = peer time / bnorm time (above 1: bnorm is faster).")
    w("- oneDNN runs plain `nchw` / `nhwc` with scale and shift, as bnorm does: for `nchw` it picks its")
    w("  reference-like `ncsp_bnorm`, for `nhwc` its JIT kernel (`bnorm_jit`); its fast channels-first kernel")
    w("  wants the blocked `nChw16c` layout, which a caller with plain NCHW tensors would have to reorder")
    w("  to and from. So **dnnl/bn** is large channels-first and 1-3 channels-last. ATen gets f32")
    w("  weight, bias and running statistics (its mixed bf16 path); its functional calls allocate their outputs,")
    w("  and the bench keeps freed blocks in malloc's heap so that costs no page faults.")
    w("- `n/a` for training on 1x64x1x1: bnorm refuses one value per channel in training, as")
    w("  `torch.nn.functional.batch_norm` does.\n")
    w("## Latest full run\n")
    isa = re.search(r"isa (\S+),", text)
    machine = re.search(r"^machine: (.*)$", text, re.M)
    w(f"Debian 12 VM: {machine.group(1) if machine else 'machine not recorded'}; bnorm dispatches to "
      f"{isa.group(1) if isa else 'AVX3'}.\n")
    run_block(w, command, text)
    if 1 in bw:
        r1, wr1, rw1 = bw[1]
        w("## What bounds the ratios\n")
        w(f"From `--bandwidth` in the same run: one core reads at {r1:.1f} GB/s, writes with streaming stores at")
        w(f"{wr1:.1f} GB/s, and does both at once (the roofline) at {rw1:.1f} GB/s counted both ways. Over the")
        # Fractions of the roofline time (2 * bytes / rw1) that one read-only
        # or one write-only pass over the same bytes takes.
        rd, wt = rw1 / (2 * r1), rw1 / (2 * wr1)
        w(f"205 MB of the large f32 shapes, a read-only pass therefore costs {rd:.2f} of the roofline and a")
        w(f"write-only pass {wt:.2f}. Two threads: " + ", ".join(
            f"{v:.1f}" for v in bw.get(2, ())) + " GB/s (read, write, both).\n")
        gains = sorted(t1 / t2 for t1, t2 in roofline_scaling(rows))
        if 2 in bw and gains:
            share, median_gain = rw1 / bw[2][2], statistics.median(gains)
            w(f"In that test one core alone moved {share:.0%} of what two did; in the table the roofline gained")
            w(f"{gains[0]:.2f}-{gains[-1]:.2f}x (median {median_gain:.2f}) from a second core on the DRAM-resident shapes.")
            if share >= 0.8 and median_gain >= 1.3:
                w("The two disagree: the test takes a few seconds at the start of the run, and this machine's")
                w("memory speed changes by the minute.")
            if share >= 0.8 or median_gain < 1.3:
                w("Where one core moves most of the bandwidth, a pass at two threads is bound less by DRAM than by")
                w("how fast each core moves and computes on its data: every extra pass over cache, every sum and")
                w("every second stream then costs time that the roofline's single stream does not pay, and the")
                w("floors below (DRAM passes only) understate the real ones; the bare patterns further down")
                w("measure those.")
            w("")
        w("A direction that cannot keep its data in cache between passes pays the passes separately:\n")
        w("| direction | DRAM passes | floor (x roofline) |")
        w("|---|---|---|")
        w("| inference | read x + write y, overlapped | 1.0 |")
        w(f"| training, channels-first | read x (statistics), then x from cache + write y | {rd + wt:.2f} |")
        w(f"| training, channels-last | read x, then x again + write y (every row is needed before any is written) | {rd + 1:.2f} |")
        w(f"| backward, channels-first | read x and dy, then both from cache + write dx | {2 * rd + wt:.2f} |")
        w(f"| backward, channels-last; channels-first with planes under 1 KiB | read x and dy, then both again + write dx | {3 * rd + 1:.2f} |\n")
        w("### How the kernels were tuned\n")
        w("The paragraphs below record the measurements behind the kernels' design as they were taken. Unless")
        w("they say otherwise they come from the machine of the earlier full runs: a 2-core Intel Xeon VM with")
        w("AVX512-BF16 and 2 MiB of L2 per core, whose memory gave one core about 19 GB/s and two about 40 GB/s")
        w("(read and write counted), so that the kernels there were bound by DRAM. \"This machine\" and \"here\"")
        w("in them mean that machine.\n")
        w("Two more effects measured on this machine push the channels-first figures above their floor: a")
        w("channel is N runs of S values a sample apart, and the hardware prefetcher starts cold on each run")
        w("(prefetching the next runs' starts in software took 256x1024x14x14 training from 2.2 to about 1.4 x")
        w("roofline in f32 and from 3.1 to about 1.6 in bf16, 1 thread); and data read once by a streaming pass")
        w("is only partly kept in L2 (re-reading a 256 KB block right away runs at about 90 GB/s, a 1 MB block at")
        w("about 40 GB/s, L3 speed; only a third read runs at L2 speed throughout), so the second pass over a")
        w("channel block runs at L3 rather than L2 bandwidth.\n")
        w("Software prefetch. The hardware prefetcher alone leaves in-order reads short of the bandwidth here,")
        w("most for 16-bit data, and barely follows the channels-last statistics, which walk down a tile's")
        w("columns. bnorm's passes prefetch 4 KiB ahead of each stream they read in order, and the column walk")
        w("prefetches 32 KiB ahead into L2 (into L1 that far ahead, the lines were evicted before use). Measured")
        w("before/after in one process, 2 threads, 64x256x56x56: channels-last training f32 27.9 -> 23.7 ms, bf16")
        w("23.8 -> 14.7 ms; channels-last backward f32 43.6 -> 39.3, bf16 32.0 -> 23.2; inference bf16")
        w("channels-last 10.8 -> 7.7, channels-first 9.7 -> 7.8; group norm channels-last forward bf16 21.3 ->")
        w("11.3. The roofline and the read-only pass prefetch the same way where that makes them faster (16-bit")
        w("data: y = a*x + b in bf16 10.5 -> 6.6 ms; f32 was 1-4% slower with it, so the f32 roofline does")
        w("not), so bf16 ratios from runs before this change are not comparable: their roofline was slow.")
        w("Channels-first reductions fetch the starts of about 4 KiB of runs ahead (2 to 8 runs over the streams")
        w("read): two runs of 392 bytes (bf16 14x14) left DRAM latency uncovered (256x1024x14x14, 2 threads:")
        w("training bf16 19.3 -> 12.7 ms, backward bf16 35.6 -> 30.9 ms).\n")
        w("bf16 rounding. bf16 passes move half of f32's bytes for the same arithmetic, and rounding f32 to bf16")
        w("took ten integer instructions per vector, so with two threads the bf16 kernels ran close to their")
        w("compute limit: in L2 (1 thread) even the roofline's loop moved only 35.5 GB/s in and out, where DRAM")
        w("gives two threads up to 43 GB/s in the machine's fast state. On CPUs with AVX512-BF16 (this one) the")
        w("kernels round with its instruction (`isa` AVX3_BF16; the roofline's stores are the same code); results")
        w("that are NaN or subnormal, which the instruction would keep the payload of or flush, keep the")
        w("emulation, so the bits do not change. In one process, alternating AVX3 and AVX3_BF16, 64x256x56x56")
        w("bf16, 2 threads, medians of 21 paired ratios: batch norm inference 0.95 (channels-first) / 0.87")
        w("(channels-last), training 0.90 / 0.91, backward 0.97; instance norm 0.91 / 0.93 (forward /")
        w("backward), group norm 0.90 / 0.94, layer norm 0.91 / 0.95. bf16 inference at 2 threads on")
        w("64x256x56x56 read 1.24-1.31x the roofline in three of five full runs before this change; over 160")
        w("short runs since (bf16 inference alone, 2 threads, roofline 4.0-9 ms) it read a median of 1.03 and")
        w("at most 1.15, as did the emulation run the same way, so the earlier figures came from the full runs'")
        w("conditions rather than the kernel alone.\n")
        w("Pipelined channel blocks. Channels-first training and backward used to take a block's statistics")
        w("(reads only) and then normalize it (writes only) in turns. With planes of 4 KiB or more they now walk")
        w("as group norm's blocks do: block b's elementwise pass (from cache) goes plane by plane together with")
        w("the sums of block b + 1 (from DRAM), so reads and writes overlap. Measured before/after (both with")
        w("prefetch) in one process, 2 threads, 64x256x56x56: training f32 17.1 -> 12.9 ms, bf16 11.8 -> 8.8 ms;")
        w("backward bf16 16.9 -> 14.8 ms (f32 backward shares each channel between the threads, its x and dy")
        w("being 1.6 MB, and is not pipelined; forcing owned pipelined channels there measured no gain). On")
        w("256x1024x14x14 (784-byte planes) the per-plane walk was slower (17.2 -> 23.7 ms), so those keep the")
        w("turns.\n")
        w("Short segments stream poorly. Walking a block of channels sample by sample reads and writes each")
        w("sample's few planes of the block (3 KiB at 14x14) and then jumps a sample ahead; DRAM serves such")
        w("segments far below its bandwidth. dx with constant statistics over 256x1024x14x14 bf16 (2 threads,")
        w("read x and dy, write dx) took 18.5 ms in blocks of 8 channels, 11.8 ms in blocks of 64 and 10.3 ms")
        w("as one stream over all planes. Three changes follow from it. (1) Backward with nothing to sum")
        w("(constant statistics with dx alone, SyncBatchNorm's second pass) walks all planes as one stream, as")
        w("inference does: 29.7 -> 10.4 ms bf16, 34.1 -> 18.2 ms f32 on that shape. (2) Backward with planes")
        w("under 1 KiB sums in memory order, each thread over a contiguous range of planes, then computes dx")
        w("over the same range as one stream: two DRAM reads of x and dy, but sequential ones (one process,")
        w("blocks -> planes: 256x1024x14x14 2 threads bf16 20.9 -> 16.6 ms, f32 32.3 -> 32.1; 1 thread bf16")
        w("41.3 -> 35.4, f32 70.7 -> 65.5; 128x512x7x7 1 thread bf16 2.29 -> 1.59 ms, f32 2.86 -> 2.53). With")
        w("3 KiB planes it lost (32x64x28x28 f32 0.97 -> 1.14 ms), hence the 1 KiB bound. (3) Channel blocks")
        w("are sized so that a sample's segment of a block is whole cache lines even past the re-read budget")
        w("(half the L2, at least 1 MiB) when the output streams: a line written partly by streaming and partly by")
        w("ordinary stores is slow (backward 256x1024x14x14 before (2): bf16 5 -> 8 channels 31.7 -> 24.3 ms, f32 2 -> 4 channels 40.8 -> 36.6).")
        w("Pipelined blocks of a whole L2 instead of half: 64x256x56x56 bf16 backward 6-9% faster, but")
        w("32x64x56x56 8-24% slower (f32 and bf16, training and backward), so not taken. The per-plane sums")
        w("first ran compute-bound: adding a vector's lanes in double one after another is a chain of dependent")
        w("additions; a shuffle tree instead made the in-cache sum 6.9 -> 4.2 ms (and layer norm's per-row sums")
        w("10-15% faster forward).\n")
    patterns = read_run(args.runs, "patterns.txt")
    if patterns:
        patterns_section(w, patterns[1], patterns[0])
    w("## Issue #3 targets, from this run\n")
    w("DRAM-resident shapes (" + ", ".join(DRAM) + "), bn/roof, f32 and bf16, 1 and 2 threads:\n")
    w("| direction | layout | target | measured | cases within target |")
    w("|---|---|---|---|---|")
    for d in TARGET:
        for lay in ("channels_first", "channels_last"):
            v = [num(r[9]) for r in rows if r[0] == d and r[2] == lay and r[3] in DRAM]
            ok = sum(1 for x in v if x <= TARGET[d])
            w(f"| {d} | {lay} | <= {TARGET[d]:.2f} | {min(v):.2f}-{max(v):.2f} | {ok} of {len(v)} |")
    w("")
    if patterns:
        bare = pattern_ratios(patterns[1])
        walk = lambda k: " / ".join(f"{bare[(DRAM[0], t, k)]:.2f}" for t in ("1", "2") if (DRAM[0], t, k) in bare)
        if walk("train-pipelined") and walk("bwd-pipelined") and walk("bwd-turns"):
            w(f"The bare loops of the walks these directions take, from the patterns run above ({DRAM[0]}, 1 / 2")
            w(f"threads): training's pipelined walk {walk('train-pipelined')}, backward's {walk('bwd-pipelined')}"
              f" (in turns {walk('bwd-turns')}). A target below its walk's bare loop cannot be met by")
            w("a kernel that walks that way on this machine; one above it says how close bnorm comes.\n")
    misses = []
    for r in rows:
        if r[3] in CACHE:
            peers = [num(x) for x in (r[7], r[8]) if num(x) is not None]
            ratio = min(peers) / num(r[6])
            if ratio < 1.3:
                # Where bnorm stands against the roofline, and the peer: at the
                # roofline with a peer under 1.3x it, 1.3x cannot hold.
                misses.append(f"{r[0]} {r[1]} {r[2]} {r[3]} ({r[4]} thread{'s' if r[4] != '1' else ''}): {ratio:.2f} "
                              f"(bnorm {num(r[6]) / num(r[5]):.2f}x the roofline, the faster peer "
                              f"{min(peers) / num(r[5]):.2f}x)")
    cache_cases = sum(1 for r in rows if r[3] in CACHE)
    w(f"Cache-resident shapes ({', '.join(CACHE)}): at least 1.3x faster than the faster of oneDNN and ATen in "
      f"{cache_cases - len(misses)} of {cache_cases} cases." + (" Below that:" if misses else ""))
    for m in misses:
        w(f"- {m}")
    w("")
    slow = [r for r in rows if r[3] in SMALL and num(r[11]) is not None and num(r[11]) < 1.0]
    small_bn = [num(r[6]) for r in rows if r[3] in SMALL and num(r[6]) is not None]
    small_at = [num(r[8]) for r in rows if r[3] in SMALL and num(r[8]) is not None]
    w(f"Small problems ({', '.join(SMALL)}): bnorm {min(small_bn):.3f}-{max(small_bn):.3f} ms per call, ATen "
      f"{min(small_at):.3f}-{max(small_at):.3f} ms; slower than ATen in {len(slow)} case(s)" +
      (": " + "; ".join(" ".join(r[:5]) for r in slow) if slow else "") + ".\n")
    small = read_run(args.runs, "small.txt")
    if small:
        again = [line.split() for line in small[1].splitlines()]
        again = [num(r[11]) for r in again if len(r) == 12 and r[0] in TARGET and num(r[11]) is not None]
        faster = sum(1 for v in again if v > 1.0)
        w("Per-call times of a few microseconds move from run to run. These shapes alone, with more repetitions")
        w(f"(`{small[0]}`, run after this run), had bnorm faster than ATen in {faster} of {len(again)} cases,")
        w(f"ATen/bnorm {min(again):.2f}-{max(again):.2f}.\n")
    sc = [(b1 / b2, r1 / r2, k) for (r1, b1), (r2, b2), k in scaling(rows) if b1 and b2 and r1 and r2]
    low = [s for s in sc if s[0] < 1.6]
    if sc:
        w(f"Scaling from 1 to 2 threads on the DRAM-resident shapes: bnorm {min(s[0] for s in sc):.2f}-"
          f"{max(s[0] for s in sc):.2f}x, the roofline {min(s[1] for s in sc):.2f}-{max(s[1] for s in sc):.2f}x in "
          f"the same run; below 1.6x in {len(low)} of {len(sc)} cases" + (":" if 0 < len(low) <= 8 else "."))
        if len(low) > 8:
            w("Where the roofline itself gains little from a second core, so do the memory-bound kernels: the")
            w("memory, not the split between threads, sets the pace (see the bandwidth above).")
        else:
            for a, b, k in low:
                w(f"- {' '.join(k)}: bnorm {a:.2f}x, roofline {b:.2f}x")
        w("")
    big = [r for r in rows if r[3] in DRAM + CACHE]
    dn = [num(r[10]) for r in big if num(r[10]) is not None]
    at = [num(r[11]) for r in big if num(r[11]) is not None]
    w(f"Against the peers on the four benchmark shapes: oneDNN/bnorm {min(dn):.2f}-{max(dn):.2f} "
      f"(median {statistics.median(dn):.2f}), ATen/bnorm {min(at):.2f}-{max(at):.2f} "
      f"(median {statistics.median(at):.2f}).")
    family = read_run(args.runs, "family.txt")
    if family:
        family_section(w, family[1], family[0], pattern_ratios(patterns[1]) if patterns else {})
    family_small = read_run(args.runs, "family_small.txt")
    if family_small:
        family_small_section(w, family_small[1], family_small[0])
    sync = read_run(args.runs, "sync.txt")
    if sync:
        sync_section(w, sync[1], sync[0])
    exec_path = os.path.join(args.runs, "exec.txt")
    if os.path.exists(exec_path):
        exec_section(w, open(exec_path).read())
    print("\n".join(out))


# The issue #6 rows of the last family run on the Intel machine (bn/roof and
# ATen/bnorm ranges over dtypes and layouts), quoted beside the latest run.
INTEL_FAMILY = (
    ("layer_norm", "forward", "1.05-1.15", "2.39-24.38"),
    ("layer_norm", "backward", "1.68-1.73", "1.80-4.24"),
    ("rms_norm", "forward", "0.94-1.10", "4.80-6.50"),
    ("rms_norm", "backward", "1.39-1.67", "9.15-17.22"),
    ("group_norm", "forward", "1.13-1.63", "1.60-22.66"),
    ("group_norm", "backward", "1.40-2.17", "1.51-5.39"),
    ("instance_norm", "forward_training", "1.08-1.47", "2.95-17.17"),
    ("instance_norm", "forward_inference", "0.96-1.15", "1.22-15.18"),
    ("instance_norm", "backward", "1.46-2.10", "1.74-9.23"),
)

FAMILY_OPS = ("bn_relu", "bn_add_relu", "layer_norm", "rms_norm", "group_norm", "instance_norm")


def family_rows(text):
    """The table rows of a bnorm-bench --ops run, split."""
    return [r for r in (line.split() for line in text.rstrip().splitlines()) if len(r) == 17 and r[0] in FAMILY_OPS]


def family_section(w, text, command, bare):
    """The other normalizations and the fused BN ops, with issue #6's targets;
    `bare`: pattern_ratios of the patterns run ({} when there is none)."""
    rows = family_rows(text)
    w("")
    w("## The normalization family and fused batch norm")
    w("")
    w("Same benchmark, `--ops`: each op on the issue's DRAM-resident shape (layer and RMS norm 8192x4096 over the")
    w("last dim, group norm 64x256x56x56 with 32 groups, instance norm and the fused ops 64x256x56x56), the same")
    w("roofline (`y = a*x + b` over the tensor). Layer, RMS and group norm have one forward (listed as")
    w("`forward_training`). Peers: oneDNN 2.6 has `layer_normalization` and BN with `fuse_norm_relu` and nothing")
    w("else here; ATen 1.13 runs `native_layer_norm`, `group_norm` and `instance_norm` (both backward through")
    w("autograd, as PyTorch runs them; 1.13 copies channels-last input to channels-first in both), RMS norm as")
    w("the composite torch 2.4 uses on CPU (backward through autograd), and the fused ops")
    w("as eager PyTorch does (batch norm, then in-place `add_` / `relu_`; backward `threshold_backward` then batch")
    w("norm's). For the fused ops, **plain** is bnorm's batch norm alone on the same data (**bn/plain** = fused /")
    w("plain) and **unfused** is bnorm's batch norm followed by ATen's separate `add_` / `relu_` passes (backward:")
    w("`threshold_backward`, then bnorm's backward; **unf/bn** = unfused / fused).")
    w("")
    run_block(w, command, text)
    w("### Issue #6 targets, from this run (2 threads)")
    w("")
    two = [r for r in rows if r[5] == "2"]
    w("| op | direction | target bn/roof | measured bn/roof | ATen/bnorm (target >= 1.5) |")
    w("|---|---|---|---|---|")
    for op in ("layer_norm", "rms_norm", "group_norm", "instance_norm"):
        for d in ("forward_training", "forward_inference", "backward"):
            sel = [r for r in two if r[0] == op and r[1] == d]
            if not sel:
                continue
            target = 1.80 if d == "backward" else 1.25
            rr = [num(r[12]) for r in sel if num(r[12]) is not None]
            at = [num(r[14]) for r in sel if num(r[14]) is not None]
            ok = sum(1 for x in rr if x <= target)
            w(f"| {op} | {d} | <= {target:.2f} | {min(rr):.2f}-{max(rr):.2f} ({ok} of {len(rr)} within) | "
              + (f"{min(at):.2f}-{max(at):.2f}" if at else "-") + " |")
    w("")
    floor = lambda shape, k: " / ".join(f"{bare[(shape, t, k)]:.2f}" for t in ("1", "2") if (shape, t, k) in bare)
    rows_shape, planes_shape = "8192x1x64x64", "64x256x56x56"
    if floor(rows_shape, "planes-pipelined") and floor(planes_shape, "planes-pipelined"):
        w("Against the bare loops of the patterns run (1 / 2 threads; a kernel cannot beat the bare loop of the")
        w(f"walk it takes). Layer and RMS norm rows of 4096 f32 are {rows_shape}'s planes: the bare forward walk")
        w(f"(one plane's output from cache while the next plane's sums come from DRAM) costs")
        w(f"{floor(rows_shape, 'planes-pipelined')}x the roofline, its backward with dy")
        w(f"{floor(rows_shape, 'planes-bwd-pipe')}x; one pass that reads x and dy and writes dx with no sums at")
        w(f"all costs {floor(rows_shape, 'bwd-one-stream')}x. On {planes_shape} (instance norm's planes, group")
        w(f"norm channels-first's blocks) the same walks cost {floor(planes_shape, 'planes-pipelined')} and")
        w(f"{floor(planes_shape, 'planes-bwd-pipe')}, the no-sums pass {floor(planes_shape, 'bwd-one-stream')}.")
        w("Where those floors are above 1.25 (forward) or 1.8 (backward), the issue's target cannot be met on this")
        w("machine by any kernel that computes the statistics it normalizes with; channels-last group and instance")
        w("norm also read their samples twice (see below).")
        w("")
    w("| fused op | direction | fused / plain BN | unfused / fused | ATen/bnorm |")
    w("|---|---|---|---|---|")
    for op in ("bn_relu", "bn_add_relu"):
        for d in ("forward_inference", "forward_training", "backward"):
            sel = [r for r in two if r[0] == op and r[1] == d]
            if not sel:
                continue
            pl = [num(r[15]) for r in sel if num(r[15]) is not None]
            un = [num(r[16]) for r in sel if num(r[16]) is not None]
            at = [num(r[14]) for r in sel if num(r[14]) is not None]
            rng = lambda v: f"{min(v):.2f}-{max(v):.2f}" if v else "-"
            w(f"| {op} | {d} | {rng(pl)} | {rng(un)} | {rng(at)} |")
    w("")
    w("For comparison, the last family run on the Intel machine (2 MiB L2 per core, DRAM-bound; before the")
    w("ReLU mask), same command, 2 threads:")
    w("")
    w("| op | direction | bn/roof | ATen/bnorm |")
    w("|---|---|---|---|")
    for op, d, rr, at in INTEL_FAMILY:
        w(f"| {op} | {d} | {rr} | {at} |")
    w("")
    w("The fused ops there: fused / plain BN forward 0.99-1.11 (BN+ReLU) and 1.14-1.62 (BN+Add+ReLU), backward")
    w("1.40-1.50 and 1.34-1.56 (gated by the output).")
    w("")
    w("What bounds the misses (the DRAM passes of the batch-norm analysis above apply). As in \"How the kernels")
    w("were tuned\", figures measured before the latest run come from the Intel machine unless they say")
    w("otherwise:")
    w("")
    w("- On the AMD Zen 5 machine (family 26) one core moved 92-96% of two cores' bandwidth in the bandwidth")
    w("  tests of its runs: where it does, passes that the Intel")
    w("  machine hid behind DRAM transfers show. Layer norm's forward takes a block's statistics from cache")
    w("  while DRAM idles: perf puts that pass at a third of the forward's time (f32, 8192x4096, 2 threads),")
    w("  waiting on its loads; prefetching the next block into L1 instead of L2, or blocks of 16, 64 or 128")
    w("  KiB instead of 32, measured 0.99-1.04x the time (one process, alternating). Group norm")
    w("  channels-last: a sample's second read could come from the 32 MiB L3 (a bare loop here")
    w("  re-reads 3-4 MB at about 80 GB/s against 38 GB/s from DRAM, one thread), but taking turns instead")
    w("  of pipelining measured 1.05-1.09x the time forward and bf16 backward, 0.90x f32 backward, and 0.89x")
    w("  bf16 forward in a run where memory was slow: which walk wins depends on the memory's speed at the")
    w("  time, so the rule stays. Sharing each sample between the two threads (bf16 forward: 0.8 MB each, in")
    w("  L2) measured 1.11-1.17x (a barrier per sample, and the passes no longer overlap). What did pay: the")
    w("  sums down a tile's columns take four channel vectors per step instead of two, more of each row per")
    w("  step (one process, alternating, 2 threads: group and instance norm channels-last forward bf16")
    w("  0.78-0.93x the time, f32 0.96-0.97x, backward unchanged; batch norm channels-last 32x64x56x56,")
    w("  whose 256-byte rows are now walked whole, backward f32 0.91-0.94x, bf16 0.88x, training 0.90-0.93x,")
    w("  which brought the f32 backward that oneDNN had won by 4-13% to between 6% slower and 14% faster")
    w("  than oneDNN across repeated runs).")
    w("- Group and instance norm, channels-last: as batch norm's channels-last training and backward, every row")
    w("  of a sample is needed before any output of it can be written, and one sample of 64x256x56x56 (3.2 MB in")
    w("  f32) does not fit a core's L2, so x (and dy) are read twice: the floors of that table (training")
    w("  channels-last, backward channels-last) are above the targets. Channels-first blocks are one group's")
    w("  contiguous planes and are normalized from cache. Two restructurings measured no better: walking a")
    w("  sample in blocks of 64 or 128 channels (a block of all rows fits L2, but its rows are 256-512 bytes")
    w("  apart in memory) was 3.2-3.3x the roofline for the backward pattern in a bare loop against 2.9x for")
    w("  whole samples; interleaving one sample's dx with the next sample's sums tile by tile: no gain.")
    w("  Now each sample's output (forward) or dx (backward) walks in one loop with the next sample's sums when")
    w("  the sample's x (and dy) are bigger than a core's L2: the second read still comes from memory, but it")
    w("  overlaps the output's writes instead of taking turns with them (bare loops over 3.2 MB blocks, 2")
    w("  threads: 1.02-1.15x a single pass against 1.2-1.45x). Separate processes alternating, 64x256x56x56,")
    w("  2 threads: forward f32 group norm 0.80-0.90x the time, instance norm 0.86-0.95x; backward f32 and")
    w("  bf16 0.77-0.87x. Forward walks down the tiles' columns (in memory order it measured 0.91-0.97x);")
    w("  backward walks in memory order with the next sample's sums in cyclic accumulators (down the columns,")
    w("  four read streams measured 1.03-1.17x). bf16 forward samples (1.6 MB) mostly fit that machine's 2 MB")
    w("  L2 and measured 1.05-1.12x pipelined, so they take turns where a sample fits the L2 (on a 1 MiB L2")
    w("  they pipeline). On a 25 MB tensor (8x512x28x28")
    w("  f32, 3.2 MB of x and dy per sample, pipelined by the L2 rule) backward measured 1.03-1.08x; from 51 MB")
    w("  up it gains. The pipelined walk's own floor, as a bare loop (f32 64x256x56x56, 2 threads: dx of one")
    w("  sample from x and dy while summing the next sample's, four read streams and one write): 2.04-2.10x")
    w("  the roofline, against 1.42-1.47x for dx from x and dy alone and 2.5-2.8x taking turns; bnorm's")
    w("  backward ran within about 1.1x of it in the same minutes. The forward's pipelined walk is the")
    w("  three-stream loop (1.42-1.47x). Meeting 1.8x (backward) or 1.25x (forward) here needs x and dy read")
    w("  once, i.e. samples that fit a core's cache.")
    w("- On the AMD Zen 5 machine (1 MiB L2, 32 MiB L3) taking turns wins the backward back for large samples: a")
    w("  sample's second read then comes from L3, which two samples per worker in flight (pipelined) overflow.")
    w("  The backward now pipelines only samples of x and dy up to 4 L2. One process alternating, 2 threads:")
    w("  turns 0.82-0.93x the time for samples of 6.4-51 MB (f32 64x256x56x56 0.85-0.86x), 0.93-1.05x at")
    w("  3.2 MB, 1.08-1.18x at 1.6 MB; the forward gained nothing from turns (0.90-1.11x). A bare loop of")
    w("  turns (f32 64x256x56x56, 2 threads) runs at 2.04-2.09x the roofline, bnorm's backward before the")
    w("  change at 2.49-2.51x in the same process.")
    w("- BN+Add+ReLU reads a third tensor (the residual): inference, and training now that plain batch norm's")
    w("  channels-first training reads x about once, move three streams where plain BN moves two, so a")
    w("  bandwidth-bound pass costs up to 1.5x plain BN; the 1.15x target cannot hold in DRAM.")
    w("- Fused backward gated by the forward's output reads one tensor more than plain BN's backward.")
    w("  Channels-last, when the residual's gradient is wanted (BN+Add+ReLU), the first pass stores the gated")
    w("  gradient there and the second reads it instead of dy and the output (measured before/after, 2")
    w("  threads: f32 51.2 -> 48.8 ms, bf16 37.4 -> 30.8 ms); BN+ReLU has no such output to reuse and reads the")
    w("  output twice. A forward may now keep the ReLU's mask instead, one bit per element")
    w("  (`BatchNormFusion::relu_mask`), and the backward read it in place of the output: 1/32 of the bytes in")
    w("  f32, 1/16 in bf16. `bnorm-bench` now runs the fused training forward and backward that way (the Intel")
    w("  machine's run quoted above is from before). One process, alternating gate from the output / from the")
    w("  mask, 64x256x56x56, 2 threads, on the AMD Zen 5 machine, medians of 15:")
    w("  backward channels-last 0.70-0.73x the time (BN+ReLU, f32 and bf16), 0.90x with the residual (f32);")
    w("  channels-first 0.92-0.93x. The training forward pays for gathering the bits: channels-last 0.89-0.99x")
    w("  (noise), channels-first f32 1.02-1.03x, bf16 1.07-1.09x with buffers on cache lines (1.08-1.19x 16")
    w("  bytes past one), where the pipelined walk is near compute-bound (a program alternating the two public")
    w("  calls). 128x512x7x7: forward 0.95-1.05x, backward 0.70-0.90x. With the mask read, fused backward /")
    w("  plain BN backward is the fused table's (this run), against 1.40-1.50 (BN+ReLU) and 1.34-1.56")
    w("  (BN+Add+ReLU) gated by the output in the Intel machine's run. The residual's")
    w("  gradient is now written with streaming stores wherever dx is (channels-first) or wherever its rows are")
    w("  whole cache lines (channels-last's first pass): plain stores read each line from memory before")
    w("  writing it. BN+Add+ReLU backward, separate processes alternating, 2 threads: channels-last")
    w("  64x256x56x56 bf16 0.89x the time, f32 0.85x; channels-first 0.94-0.99x.")
    w("- Group and instance norm, channels-first: a worker's (sample, group) blocks are consecutive in memory,")
    w("  and the pipelined walk over the next block used to prefetch only within that block, so the first 4 KiB")
    w("  of every block came from DRAM on demand. Instance norm's blocks are single planes (6 KiB in bf16 at")
    w("  56x56), so that was a large share: prefetching on into the block after it took instance norm's bf16")
    w("  forward from 1.51 to 1.32x the roofline (median of three alternating bench runs each; one process, A/B")
    w("  median: forward 0.82x the time, backward 0.88x). Group norm's 100 KB blocks gained little.")
    w("- Blocks much shorter than that (instance norm on 12x16 planes: 768 bytes) paid the per-block work")
    w("  (statistics, normalizers, pivots, a kernel call) per plane: 2.0x the roofline where the bare walk costs")
    w("  1.17 (pattern run below). Forward and backward now pipeline steps of about 8 KiB of blocks; blocks of")
    w("  8 KiB or more keep steps of one. One process, before/after medians, 2 threads: forward 256x1024x12x16")
    w("  bf16 0.69-0.78x the time, f32 0.83-1.00x, 512x512x7x7 f32 0.63x, bf16 0.83x; backward 256x1024x12x16")
    w("  bf16 0.83x, f32 0.95x, 512x512x7x7 f32 0.73x, bf16 0.62x; 64x256x56x56 unchanged. The pattern run")
    w("  below was taken before the backward change.")
    w("- Group norm on planes under 256 bytes (7x7 and smaller in f32) walked each plane beside the next")
    w("  step's sums and sampled a pivot from up to 64 x 8 values per block in scalar loads: ATen was up to")
    w("  2.3x faster there. The forward now sums the next step's blocks whole after the step's output when a")
    w("  block holds 4 or more such planes, and a small block's pivot reads at most an eighth of it. One")
    w("  process alternating, 2 threads, f32 64x512xS: 0.58-0.86x the time at S = 4 to 49 with 16 planes per")
    w("  block, 0.74-0.92x with 4 or 8; with 1 or 2 (instance norm) summing whole was slower (1.0-1.74x), so")
    w("  those keep the walk. The backward is unchanged: its per-plane sums are inherent (the parameter")
    w("  gradients are per channel), and ATen's group norm backward stays faster on such planes.")
    w("  Samples of one row (S = 1: rank-2 input or 1x1 maps) took per-channel moments of one value each:")
    w("  32x4096 f32 forward ran 0.75 ms on one thread. Their groups' moments now come from the row itself")
    w("  (two passes in double for groups of up to 64 channels, the shifted-sums kernel above): 0.20 ms; at 2")
    w("  threads bnorm-bench reads 0.08-0.18 ms against ATen's 0.11-2.5 ms for 32x4096, 128x256x1x1, 256x512")
    w("  and 64x2048, f32 and bf16 (128x256x1x1 had been 0.19 ms against 0.15).")
    w("- Short 16-bit planes and rows whose length is not a whole number of vectors (7x7, 14x14; layer norm")
    w("  rows of 49 or 196) ran far slower in bf16 than in f32: a bf16 vector is half a cache line, and the")
    w("  streaming stores left lines written half by streaming and half by plain stores, which is slow. Only")
    w("  whole lines are streamed now, the partial lines at a run's ends stored plainly. One process, 2 threads,")
    w("  before/after: group norm 128x512x7x7 bf16 8.0 -> 1.3 ms; instance norm 256x1024x14x14 bf16 forward")
    w("  39.8 -> 24.9 ms, backward 43.7 -> 19.8 ms; layer norm 1048576x49 bf16 134.6 -> 29.1 ms forward,")
    w("  141.9 -> 30.6 ms backward.")
    w("- On the Zen 4 machine of the latest run that mix was still slow for group and instance norm")
    w("  channels-first planes under 2 KiB, which streamed the whole lines inside each plane and stored its")
    w("  two end lines plainly (perf put a third of group norm 64x512x7x7 backward on the instruction after the")
    w("  streaming store). Those planes now store their output plainly. One process alternating, 2 threads:")
    w("  7x7 forward 0.81-0.85x the time, backward 0.74-0.93x (64x512 and 512x512, f32 and bf16); 14x14")
    w("  (256x1024) bf16 0.61x / 0.66x, f32 0.79-0.96x / 0.88-0.92x; from about 2 KiB streaming won or tied")
    w("  (f32 24x24, bf16 40x40: 0.95-1.10x). Batch norm writes a block's planes as one run and keeps")
    w("  streaming (without it: 1.02-1.80x). Group norm 64x512x7x7 f32 backward read ATen/bnorm 0.65 in")
    w("  the small-maps command below before the change, 0.87-0.96 after (four runs).")
    w("- Group and instance norm channels-first backward on planes of 2, 4 or 8 values (2x2 maps) walked")
    w("  each plane with two horizontal sums in double, which cost more than the plane's data: ATen was 1.9x")
    w("  faster on group norm 64x512x2x2. Such planes now go several to a vector: each plane's terms are")
    w("  added in double lanes in the order of the old lane loop (same bits), and dx takes the per-plane")
    w("  coefficients spread over the lanes, step by step in turns. One process alternating, 1 and 2")
    w("  threads: 64x512x2x2 f32 0.44-0.46x the time with 32 groups, 0.62-0.67x with 512 (instance norm),")
    w("  bf16 0.36-0.38x; 2x1 0.32x, 2x4 0.83-0.92x. The small-maps run below is from after both changes.")
    w("- Layer and RMS norm take each block of rows (32 KiB) in two passes: its statistics from cache, then its")
    w("  output from cache while the next block streams in. The first pass is arithmetic with no DRAM traffic of")
    w("  its own. Skipping it (statistics taken as known; one process, alternating, 2 threads, 8192x4096) cut")
    w("  layer norm's forward from 5.3 to 3.9 ms in bf16 and from 7.0-8.3 to 5.7-6.9 ms in f32, and its")
    w("  backward (the sums pass) from 9.5-9.9 to 7.4-7.5 ms in bf16 and from 15.0-15.6 to 12.6-12.9 ms in f32;")
    w("  without it the backward, which reads x and dy and writes dx, would sit at 1.45-1.6x the two-stream")
    w("  roofline. A one-loop forward (each block's output written while the next block's sums are taken from")
    w("  DRAM, the pipelined walk of group and instance norm with gamma and beta per column) measured 0.96-0.97x")
    w("  the two-pass time in bf16 and 1.03-1.05x in f32 (medians of 31, alternating in one process), so the")
    w("  two passes stay. perf puts that loop at about 30 instructions per vector, waiting mostly on the next")
    w("  block's loads; prefetching 4 to 32 KiB ahead into L1 or L2 did not change it. The same holds for the")
    w("  other pipelined walks: in instance norm's bf16 forward a third of the loop's samples sit on the load")
    w("  of the next plane. Since those passes are not overlapped, work taken out of them is time saved: RMS")
    w("  norm's passes no longer add up sums it discards (sum(x) in the statistics, sum(g) and a zero center in")
    w("  the backward sums); separate processes, alternating: forward bf16 0.96x the time, f32 0.93x,")
    w("  backward 0.98-1.01x.")
    w("- Layer and RMS norm backward on rows too long for blocks of more than two rows (x and dy of a row over")
    w("  16 KiB: 8192x4096 in f32 and bf16) now take the one-loop shape that did not pay in the forward: each")
    w("  pair of rows' dx is written in the loop that takes the next pair's sums, and the pair after that is")
    w("  prefetched into L2. Both walks take a row's sums in its order, one accumulator per row and sum, so a")
    w("  row's dx has the same bits pipelined or not, whichever row starts a worker's range. One process,")
    w("  alternating pipelined and not, 2 threads, 8192x4096: layer norm f32 0.85-0.92x the time, bf16")
    w("  0.98-1.0x; RMS norm f32 0.95-0.98x, bf16 0.96x; layer norm f32 4096x8192 0.93x, 16384x2048")
    w("  0.92-1.01x. Without the prefetch the loop gained nothing; prefetching two or three pairs ahead was")
    w("  worse in f32. bf16 rows of 2048 (8 KiB of x and dy), which take blocks of four, measured 1.03-1.07x")
    w("  in pipelined pairs and keep the two passes.")
    w("- Those walks now step the next block with the output's own index when the output starts a cache line")
    w("  (the usual case), instead of keeping a second position with its bounds checks and a catch-up loop. In")
    w("  one process, alternating with the old walk, 2 threads, 64x256x56x56: instance norm forward bf16")
    w("  0.91-0.94x the time, f32 0.96x, backward 0.97-0.99x; group norm forward 0.96-0.98x, backward")
    w("  0.97-0.98x; batch norm training 0.94x (bf16) and 0.97x (f32), backward 0.99-1.02x.")
    w("- Layer norm's bf16 forward on 32x4096 rows in L2 (1 thread) takes about as long per element as on")
    w("  8192x4096 from DRAM: at two threads its passes are close to compute-bound. AVX-512 arithmetic issues")
    w("  on two ports, and a bf16 output vector costs nine operations (widen, shift, subtract, two FMAs, the")
    w("  NaN / subnormal check and its test, the two-part rounding instruction). So operations were cut:")
    w("  forward normalizes rows in pairs, loading gamma and beta once per pair (per row they were two of the")
    w("  three loads per vector, and split loads when not 64-byte aligned; std::vector's, as in this")
    w("  benchmark, are 16); the statistics pass loads bf16 as even and odd elements (one operation per")
    w("  vector instead of two; the sums do not care about order); the backward sums take rows in pairs too,")
    w("  and the column partials of gamma and beta fold into double in a vector kernel. Separate processes,")
    w("  alternating, medians of per-round ratios over random buffer offsets: forward in L2 (1 thread) layer")
    w("  norm bf16 0.90-0.95x the time, f32 0.85-0.88x, RMS norm about 1.0x; 2 threads 8192x4096 layer norm")
    w("  bf16 0.96x, f32 0.92x, RMS 0.98-0.99x; the two backward changes 0.92-0.99x each. Not helping:")
    w("  blocks of 16 to 256 KiB instead of 32, prefetching two blocks ahead, or spreading the next block's")
    w("  prefetches over the statistics pass as well (in one process, alternating: 0.99-1.13x).")
    w("- Two more cuts in those passes. 16-bit rows of whole vector pairs (rows a multiple of 32 elements,")
    w("  the output on a cache line when streamed) store two vectors at once: one NaN / subnormal test for")
    w("  both, one vcvtne2ps2bf16 and one 64-byte store, in the forward's output and the backward's dx. And")
    w("  the statistics keep four accumulators per sum instead of two, whose additions each round had waited")
    w("  on (the kernel alone, 4 rows of 4096 in cache, 1 thread: 0.87-0.90x the time, RMS bf16 0.70x). In")
    w("  one process, alternating, 2 threads, bf16: the paired stores took layer norm 8192x4096 forward to")
    w("  0.94x the time, RMS 0.90x, backward 0.95x / 0.87-0.94x, rows of 512 0.90-0.94x; the accumulators")
    w("  0.96-0.99x on top (f32 0.98-0.99x), measured on a minute when memory was slow, which hides")
    w("  arithmetic. f32 in pairs measured 1.01-1.02x and keeps one vector per step. The Intel machine's")
    w("  last family run (quoted above) came after these cuts (rooflines within a few percent of the run before;")
    w("  group and instance norm, whose code did not change, read 0.77-1.07x that run's times). The two runs")
    w("  after the backward pipelining and before these cuts read layer norm forward 1.13-1.20 / 1.33-1.67x the")
    w("  roofline (f32 / bf16) and backward 1.72-1.75 / 1.79-1.82x, RMS norm forward 0.99-1.04 / 1.01-1.51x")
    w("  and backward 1.72-1.73 / 1.62-1.73x; the three runs before the pipelining read layer norm forward")
    w("  1.11-1.24 / 1.15-1.38x and backward 1.85-1.99 / 1.73-2.04x, RMS norm forward 0.97-1.10 /")
    w("  1.14-1.39x and backward 1.74-1.89 / 1.63-1.92x.")
    w("")


def family_small_section(w, text, command):
    """Group and instance norm on small maps (bnorm-bench --ops ... --shapes)."""
    rows = family_rows(text)
    w("### Group and instance norm on small maps")
    w("")
    w("Planes of 7x7 and 2x2 (late ResNet stages, detection heads), where per-plane work rather than DRAM")
    w("sets the pace; ATen is the peer to beat there.")
    w("")
    run_block(w, command, text)
    at = [(num(r[14]), r) for r in rows if num(r[14]) is not None]
    slow = [" ".join(r[:4]) + " " + r[4] for v, r in at if v < 1.0]
    if at:
        w(f"ATen/bnorm {min(v for v, _ in at):.2f}-{max(v for v, _ in at):.2f}; ATen faster in {len(slow)} of "
          f"{len(at)} cases" + (": " + "; ".join(slow) if slow else "") + ".")
        w("")


def pattern_ratios(text):
    """{(shape, threads, pattern): x roofline} from a --patterns run."""
    rows = [line.split() for line in text.rstrip().splitlines()]
    return {(r[1], r[2], r[0]): num(r[4]) for r in rows if len(r) == 5 and r[2].isdigit() and num(r[4]) is not None}


def patterns_section(w, text, command):
    """Bare loops of channels-first access patterns beside bnorm (bnorm-bench --patterns)."""
    x = pattern_ratios(text)
    rows = [(k[0], k[1]) for k in x]
    shapes = list(dict.fromkeys(r[0] for r in rows))
    w("## Bare access patterns\n")
    w("`bnorm-bench --patterns` times bare loops of the access patterns channels-first batch norm can walk (f32,")
    w("one FMA per element and an add and an FMA per summed element, the same software prefetch as bnorm's")
    w("passes), interleaved repetition by repetition with the main table's roofline and with bnorm's own")
    w("training and backward on the same data. A direction cannot beat the bare loop of the pattern it walks,")
    w("so these say which target a pattern can reach at all. 256x1024x12x16 stands in for 256x1024x14x14: its")
    w("planes are 768 bytes against 784 (the bare loops take whole aligned vectors, so S must be a multiple")
    w("of 16). 8192x1x64x64 holds layer and RMS norm's rows of 4096 as planes (read in the family section).\n")
    run_block(w, command, text)
    if not rows:
        return
    pair = lambda shape, k: " / ".join(f"{x[(shape, t, k)]:.2f}" for t in ("1", "2") if (shape, t, k) in x)
    w("Read at 1 / 2 threads:\n")
    for shape in shapes:
        tp = [x[(shape, t, "train-pipelined")] for t in ("1", "2") if (shape, t, "train-pipelined") in x]
        reach = ("within the 1.25 target" if max(tp) <= 1.25 else
                 "above the 1.25 target" if min(tp) > 1.25 else "around the 1.25 target")
        one_read = [x[(shape, t, k)] for t in ("1", "2") for k in ("bwd-pipelined", "bwd-turns")
                    if (shape, t, k) in x]
        w(f"- {shape}. Training: the bare pipelined pattern (the next channel block's statistics from DRAM while")
        w(f"  this block is normalized from cache) costs {pair(shape, 'train-pipelined')}, {reach} in this run;")
        w(f"  sums then normalize in turns {pair(shape, 'train-turns')}; bnorm's training")
        w(f"  {pair(shape, 'bnorm-training')}. Backward: the bare patterns that read x and dy from DRAM once cost")
        w(f"  {min(one_read):.2f} or more (pipelined {pair(shape, 'bwd-pipelined')}, turns")
        w(f"  {pair(shape, 'bwd-turns')}), reading twice in memory order {pair(shape, 'bwd-two-reads')};")
        w(f"  bnorm's backward {pair(shape, 'bnorm-backward')}. Only walks that never come back to a value")
        w(f"  are cheaper (one stream {pair(shape, 'bwd-one-stream')}, channel runs {pair(shape, 'bwd-runs')}),")
        w(f"  and backward with batch statistics needs a whole channel's sums before any of its dx.")
        if (shape, "2", "planes-pipelined") in x:
            w(f"  Instance norm walks whole planes in memory order: the bare pipelined walk (this plane's y")
            w(f"  from cache, the next plane's sums from DRAM) costs {pair(shape, 'planes-pipelined')}, with dy")
            w(f"  {pair(shape, 'planes-bwd-pipe')}; bnorm's instance norm training {pair(shape, 'bnorm-in-training')},")
            w(f"  backward {pair(shape, 'bnorm-in-backward')}.")
    w("")
    w("The bare loops' own ratios move between runs as bnorm's do (on the Intel machine the pipelined training")
    w("loop on 64x256x56x56 read 1.12-1.19 in two runs of one session and 1.33-1.35 in a third), so a target is read")
    w("against the pattern measured beside it. The step from `bwd-runs` to `bwd-pipelined` is the current")
    w("block read again from cache while the next block streams in: a block read once by a streaming pass is")
    w("only partly kept in L2 (measured on the Intel machine, above).\n")


def sync_section(w, text, command):
    """SyncBatchNorm against local batch norm, from bnorm-sync-bench."""
    rows = [line.split() for line in text.rstrip().splitlines()]
    rows = [r for r in rows if len(r) == 8 and r[0] in ("forward_training", "backward")]
    w("")
    w("## SyncBatchNorm (2 processes)")
    w("")
    w("`bnorm-sync-bench` under `mpirun -np 2`, one thread per process, f32: per case, interleaved and each call")
    w("started with the processes in step, local batch norm (`local_ms`) and SyncBatchNorm (`sync_ms`) on the same")
    w("per-process shape, and the two bare allgathers one SyncBatchNorm call makes (`coll_ms`: the 32-byte call")
    w("header, then 1 + 2C doubles). Both processes share this machine's two cores and its memory bandwidth.")
    w("")
    run_block(w, command, text)
    if rows:
        big = [r for r in rows if r[2] not in ("8x2048", "2x64x7x7")]
        small = [r for r in rows if r[2] in ("8x2048", "2x64x7x7")]
        rng = lambda v: f"{min(v):.2f}-{max(v):.2f} (median {statistics.median(v):.2f})"
        w(f"On the three large shapes SyncBatchNorm takes {rng([num(r[5]) for r in big])} x local batch norm and "
          f"the collectives are {rng([num(r[7]) for r in big])} of its time: the difference is structural. The "
          "global statistics exist only after every process has read its whole shard, so the forward reads x twice "
          "(moments, then normalize) where local batch norm normalizes channels-first blocks from cache, and the "
          "backward reads x and dy twice (sums, then dx); channels-last local batch norm already reads twice, "
          "hence about 1.0 there. On the two small shapes, "
          f"{rng([num(r[5]) for r in small])} x, fixed per-call costs dominate: the collectives are "
          f"{rng([num(r[7]) for r in small])} of the time, and two passes with their own setup replace one.")
    w("")


def exec_section(w, text):
    """The executor's throughput, from bnorm-exec-bench runs."""
    w("")
    w("## The executor (`bnorm run`)")
    w("")
    w("`bnorm-exec-bench` runs each model on random input of one batch size, the models interleaved repetition by")
    w("repetition, and reports the median time per batch (`run_ms`), rows per second, and from profiled runs the")
    w("time inside oneDNN's convolution primitives (`onednn_conv`: their execute calls only, no reorders) and the")
    w("time per op type. `conv/run` is the share of the run that oneDNN's convolutions take; the rest is bnorm's:")
    w("reorders into and out of oneDNN's blocked layouts, BatchNormalization (bnorm's kernels), activations,")
    w("pooling, Add. `Conv+Relu` is a convolution with the activation fused as a oneDNN post-op. The runs below")
    w("come from `bench/exec_speed.sh build` (the example before and after `bnorm prepare`, and a ResNet-18-shaped")
    w("model with random weights before and after `bnorm fold`), on the same machine as the table above.")
    w("")
    block = []
    for line in text.rstrip().splitlines():
        if line.startswith("$ "):
            if block:
                w("```")
                w("\n".join(block))
                w("```")
                w("")
                block = []
            w(f"`{line[2:]}`")
            w("")
        else:
            block.append(line)
    if block:
        w("```")
        w("\n".join(block))
        w("```")


if __name__ == "__main__":
    main()
