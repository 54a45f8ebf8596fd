#!/usr/bin/python3
"""Tables of a benchmark run (benchmarks/run.sh): reads the JSON lines the
programs printed, checks that every implementation agrees on every total
log-likelihood to 1e-9 relative (exit 1 if not), prints the tables and writes
them with the machine's description to RESULTS/<date>.md, plus the scaling
curves to RESULTS/scaling.tsv and RESULTS/scaling.png.

    report.py RAW.jsonl RESULTS_DIR [--tag quick]

Floor: one lnL at global rates needs, per family and internal node, 2 child
edges x (1 subtraction + 2 FMAs) + 2 multiplications for the product +
1 operation for the rescale test = 9 vector operations, each counted as one
FMA slot. floor = 9 x families x internal nodes / (measured FMA rate).
"""
import argparse
import datetime
import json
import math
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

TOL = 1e-9
OPS_PER_NODE = 9
TASKS = ["lnL global", "lnL two-class", "lnL per-family", "gradient global", "gradient per-family"]


def fmt(s):
    if s is None:
        return "-"
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def ratio(a, b):
    return f"{a / b:.1f}x" if a and b else "-"


def table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "| " + " | ".join(str(x).rjust(w) for x, w in zip(r, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in rows])


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def machine():
    cpu = dict(l.split(":", 1) for l in sh("lscpu").splitlines() if ":" in l)
    get = lambda k: cpu.get(k, "?").strip()
    np_version = sh("/usr/bin/python3 -c 'import numpy; print(numpy.__version__)'")
    return "\n".join([
        f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}",
        f"- CPU: {get('Model name')} (family {get('CPU family')}, model {get('Model')}),"
        f" {get('CPU(s)')} CPUs, {get('Core(s) per socket')} cores/socket,"
        f" L2 {get('L2 cache')}, L3 {get('L3 cache')}, hypervisor {get('Hypervisor vendor')}",
        f"- load average at the end: {sh('cat /proc/loadavg')} (the machine is shared)",
        f"- memory: {sh('free -g | sed -n 2p')}",
        f"- kernel {sh('uname -r')}; {sh('gcc --version | head -1')};"
        f" BEAGLE {sh('pkg-config --modversion hmsbeagle-1') or 'absent'};"
        f" numpy {np_version}",
        f"- persiste tree: {sh('git describe --always --dirty')} ({sh('git log -1 --format=%s')})",
    ])


def agreement(rows):
    """Max relative difference to the NumPy total per rate set; failures."""
    ref = {r["task"]: r["lnL"] for r in rows if r["impl"] == "numpy"}
    worst, bad, thread_diff = 0.0, [], []
    for r in rows:
        if r.get("lnL") is None or r["impl"] == "numpy":
            continue
        rate_set = r["task"].split(" ", 1)[1]
        if "lnL " + rate_set not in ref:
            continue
        rel = abs(r["lnL"] - ref["lnL " + rate_set]) / abs(ref["lnL " + rate_set])
        worst = max(worst, rel)
        if not rel <= TOL:
            bad.append(f"{r['label']}: {r['impl']} {r['task']} {r['threads']}T "
                       f"{r['lnL']!r} vs numpy {ref['lnL ' + rate_set]!r} (rel {rel:.2e})")
    per = defaultdict(dict)
    for r in rows:
        if r["impl"] == "persiste" and r.get("lnL") is not None:
            per[r["task"]][r["threads"]] = r["lnL"]
    thread_diff = [t for t, v in per.items() if len(set(v.values())) > 1]
    return worst, bad, thread_diff


def main_table(by_label, labels, fma):
    header = ["genomes x families", "task", "persiste 1T", "persiste 2T", "2T/1T",
              "BEAGLE 1T", "BEAGLE 2T", "NumPy 1T", "vs BEAGLE 1T", "vs BEAGLE 2T",
              "floor 2T", "2T / floor", "2T cores (worker share)", "allocs/call 2T", "max rel diff"]
    rows, failures, notes = [], [], []
    for label in labels:
        rs = by_label[label]
        t = {(r["impl"], r["task"], r["threads"]): r["median_s"] for r in rs}
        diag = {(r["impl"], r["task"], r["threads"]): r for r in rs}
        g, f = rs[0]["genomes"], rs[0]["families"]
        b1, b2 = t.get(("beagle", "lnL global", 1)), t.get(("beagle", "lnL global", 2))
        worst, bad, thread_diff = agreement(rs)
        failures += bad
        notes += [f"{label}: {task}: 1 and 2 threads differ in the last bits" for task in thread_diff]
        floor = OPS_PER_NODE * f * (g - 1) / fma if fma else None
        for task in TASKS:
            p1, p2 = t.get(("persiste", task, 1)), t.get(("persiste", task, 2))
            glob = task == "lnL global"
            d = diag.get(("persiste", task, 2), {})
            rows.append([f"{g} x {f}" if glob else "", task, fmt(p1), fmt(p2), ratio(p1, p2),
                         fmt(b1) if glob else "", fmt(b2) if glob else "",
                         fmt(t.get(("numpy", task, 1))) if task.startswith("lnL") else "",
                         ratio(b1, p1), ratio(b2, p2), fmt(floor) if glob else "",
                         ratio(p2, floor) if glob else "",
                         f"{d.get('cores', 0):.2f} ({d.get('worker_share', 0):.2f})",
                         f"{d.get('allocs', 0):.1f}", f"{worst:.1e}" if glob else ""])
    return header, rows, failures, notes


def site_repeats(by_label, labels):
    rows = []
    for label in labels:
        for task in ("lnL global", "lnL two-class"):
            r = {x["threads"]: x for x in by_label[label] if x["impl"] == "persiste"
                 and x["task"] == task and "blocks_s" in x}
            if 1 not in r or 2 not in r:
                continue
            rows.append([label if task == "lnL global" else "", task] +
                        [fmt(r[t]["blocks_s"]) for t in (1, 2)] +
                        [fmt(r[t]["median_s"]) for t in (1, 2)] +
                        [ratio(r[t]["blocks_s"], r[t]["median_s"]) for t in (1, 2)] +
                        [fmt(r[t]["first_calls_max_s"]) for t in (1, 2)])
    return table(["data", "task", "blocks 1T", "blocks 2T", "repeats 1T", "repeats 2T",
                  "blocks / repeats 1T", "2T", "finding call 1T", "2T"], rows)


def targets(by_label, fma, reads):
    """Issue 6's measurable targets, from this run (2 threads)."""
    def get(label, impl, task, threads, key="median_s"):
        return next((r.get(key) for r in by_label.get(label, []) if r["impl"] == impl
                     and r["task"] == task and r["threads"] == threads), None)
    M = "1324x25420"
    p = lambda task, th=2, label=M: get(label, "persiste", task, th)
    rows = []

    def row(what, value, shown, ok):
        rows.append([what, shown if value is not None else "not measured",
                     "-" if value is None else "yes" if ok(value) else "NO"])
    g, f = 1324, 25420
    floor = OPS_PER_NODE * f * (g - 1) / fma if fma else None
    lg = p("lnL global")
    row("1,324 x 25,420 lnL global <= 2x floor", lg and floor and lg / floor,
        lg and floor and f"{fmt(lg)} = {lg / floor:.2f}x floor {fmt(floor)}", lambda v: v <= 2)
    bg = get(M, "beagle", "lnL global", 2)
    row(">= 50x faster than BEAGLE 2T", lg and bg and bg / lg,
        lg and bg and f"{bg / lg:.1f}x (BEAGLE {fmt(bg)})", lambda v: v >= 50)
    for task, limit in (("lnL per-family", 30e-3), ("gradient global", 20e-3),
                        ("gradient per-family", 70e-3)):
        v = p(task)
        row(f"1,324 x 25,420 {task} <= {limit * 1e3:.0f} ms", v, v and fmt(v), lambda v, l=limit: v <= l)
    v = p("lnL global", 2, "5000x50000")
    row("5,000 x 50,000 lnL global < 45 ms", v, v and fmt(v), lambda v: v < 45e-3)
    one = p("lnL global", 1)
    cores = get(M, "persiste", "lnL global", 2, "cores")
    row("1,324 x 25,420 lnL global: 2T >= 1.6x 1T", one and lg and one / lg,
        one and lg and f"{one / lg:.2f}x ({cores:.2f} cores busy)", lambda v: v >= 1.6)
    allocs = [r["allocs"] for rs in by_label.values() for r in rs
              if r["impl"] == "persiste" and r.get("allocs") is not None and r["task"] != "read+memory"]
    most = max(allocs) if allocs else None
    row("no allocation in the hot path (any task, any size)", most,
        f"up to {most} per call", lambda v: v == 0)
    for r in reads:
        gz = r["file"].endswith(".gz")
        if gz:
            row(f"reading {Path(r['file']).name} as fast as zlib inflates",
                r["median_s"] / r["zlib_read_s"],
                f"{r['mb_per_s']:.0f} MB/s, inflate alone {r['zlib_read_mb_per_s']:.0f} MB/s",
                lambda v: v <= 1.1)
        else:
            row(f"reading {Path(r['file']).name} >= 200 MB/s", r["mb_per_s"],
                f"{r['mb_per_s']:.0f} MB/s", lambda v: v >= 200)
    return table(["target (issue 6)", "measured", "met"], rows)


def slope(xs, ys):
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def scaling(rows, out_dir):
    """Time against genomes and against families: CPU time per call on one
    thread (steady on a shared machine), with wall times in the TSV."""
    curves, lines = {}, ["axis\tgenomes\tfamilies\ttask\tcpu_1T_s\twall_1T_s\twall_2T_s"]
    for axis in ("genomes", "families"):
        pick = [r for r in rows if r["label"] == f"scale-{axis}" and r["impl"] == "persiste"]
        for task in ("lnL global", "lnL per-family", "gradient global"):
            one = sorted((r for r in pick if r["task"] == task and r["threads"] == 1),
                         key=lambda r: r[axis])
            two = {r[axis]: r["median_s"] for r in pick if r["task"] == task and r["threads"] == 2}
            if len(one) >= 2:
                curves[axis, task] = [(r[axis], r["cpu_s"]) for r in one]
                lines += [f"{axis}\t{r['genomes']}\t{r['families']}\t{task}\t{r['cpu_s']:.6g}\t"
                          f"{r['median_s']:.6g}\t{two.get(r[axis], float('nan')):.6g}" for r in one]
    if not curves:
        return ""
    (out_dir / "scaling.tsv").write_text("\n".join(lines) + "\n")
    header = ["axis (other fixed)", "task", "points", "log-log slope", "CPU time / size, first -> last"]
    table_rows = []
    for (axis, task), pts in curves.items():
        xs, ys = zip(*pts)
        other = next(r for r in rows if r["label"] == f"scale-{axis}")
        fixed = f"families {other['families']}" if axis == "genomes" else f"genomes {other['genomes']}"
        table_rows.append([f"{axis} ({fixed})", task, f"{xs[0]}..{xs[-1]} ({len(xs)})",
                           f"{slope(xs, ys):.2f}",
                           f"{ys[0] / xs[0] * 1e9:.1f} -> {ys[-1] / xs[-1] * 1e9:.1f} ns"])
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        for ax, axis in zip(axes, ("genomes", "families")):
            for (a, task), pts in curves.items():
                if a == axis:
                    xs, ys = zip(*pts)
                    ax.loglog(xs, [y * 1e3 for y in ys], "o-", label=task)
            xs = [x for (a, _), p in curves.items() if a == axis for x, _ in p]
            ref = [y for (a, t), p in curves.items() if a == axis and t == "lnL global" for _, y in p]
            if ref:   # slope-1 guide through the first lnL point
                lo, hi = min(xs), max(xs)
                ax.loglog([lo, hi], [ref[0] * 1e3, ref[0] * 1e3 * hi / lo], "k:", label="linear")
            ax.set_xlabel(axis)
            ax.set_ylabel("CPU ms per call (1 thread)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle("persiste: time against genomes (families fixed) and families (genomes fixed)")
        fig.tight_layout()
        fig.savefig(out_dir / "scaling.png", dpi=110)
    except ImportError:
        print("report: matplotlib missing, no scaling.png", file=sys.stderr)
    return table(header, table_rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw")
    ap.add_argument("results")
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    rows = [{"label": "", "task": "", "threads": None, **json.loads(l)}
            for l in open(a.raw) if l.startswith("{")]
    out_dir = Path(a.results)
    out_dir.mkdir(parents=True, exist_ok=True)

    fma_row = next((r for r in rows if r["impl"] == "fma"), None)
    fma = fma_row and max(fma_row["fma_per_s"], fma_row["threads"] * fma_row["fma_per_s_1"])
    by_label = defaultdict(list)
    for r in rows:
        if r["impl"] != "fma":
            by_label[r["label"]].append(r)
    sim = [l for l in by_label if re.fullmatch(r"\d+x\d+", l)]
    sim.sort(key=lambda l: [int(x) for x in l.split("x")])
    header, body, failures, notes = main_table(by_label, sim, fma)
    for label in by_label.keys() - set(sim):
        failures += agreement(by_label[label])[1]

    out = [f"# persiste benchmark {a.tag}".rstrip(), "", machine(), ""]
    if fma_row:
        out += [f"FMA rate ({fma_row['isa']}): {fma_row['fma_per_s_1'] / 1e9:.1f} G/s on 1 thread, "
                f"{fma_row['fma_per_s'] / 1e9:.1f} G/s measured on {fma_row['threads']} threads; "
                f"floor computed at {fma / 1e9:.1f} G FMA/s (the larger of the {fma_row['threads']}-thread "
                f"measurement and {fma_row['threads']} x the 1-thread rate, i.e. idle cores). "
                f"Floor = {OPS_PER_NODE} FMA slots x families x internal nodes / rate "
                "(2 child edges x (subtraction + 2 FMAs) + 2 products + 1 rescale test).", ""]
    out += ["## Times (median) and ratios", "",
            "Conditioning none, stationary root. 'vs BEAGLE nT' = BEAGLE lnL time at global rates / "
            "persiste time for the row's task. BEAGLE: CPU, double, manual rescaling at every node; "
            "2T = two instances over halves of the families in two threads. Times include nothing but "
            "the call (data already loaded). '2T cores': process CPU time / wall time of the "
            "persiste 2-thread calls (below 2: the threads waited, or the shared machine gave the "
            "process less), and in brackets the share of that CPU time spent by the worker thread "
            "(0.5: work split evenly). 'allocs/call': malloc/calloc/realloc calls per persiste call "
            "(the whole process's allocator is counted). 'max rel diff': largest relative "
            "difference of any total log-likelihood of the data set to the NumPy pruning's.", "",
            table(header, body), ""]

    first = {l: next(r for r in rs if "patterns" in r) for l, rs in by_label.items()
             if any("patterns" in r for r in rs)}
    patterns = [[l, r["genomes"], r["families"], r["patterns"], f"{r['patterns'] / r['families']:.3f}"]
                for l, r in first.items() if not l.startswith("scale")]
    real = []
    for name in ("efm", "harris"):
        t = {(l, r["task"], r["threads"]): r["median_s"] for l in (name, name + "-unique")
             for r in by_label.get(l, []) if r["impl"] == "persiste"}
        for task in ("lnL global", "gradient global"):
            a_, b_ = t.get((name, task, 2)), t.get((name + "-unique", task, 2))
            if a_ and b_:
                real.append([name, task, fmt(a_), fmt(b_), ratio(b_, a_)])
    reads = [r for r in rows if r.get("task") == "read"]
    out += ["## Targets", "", targets(by_label, fma, reads), ""]
    out += ["## Site repeats (lnL at one rate pair for all families, or at two)", "",
            "A fit's first 15 calls at up to 4 pairs run in blocks; the 16th finds every node's "
            "distinct subtree patterns (lib/eval/classes.c) and later calls compute each once per pair, "
            "with the same bits. 'blocks': median of calls 2-15; 'repeats': the steady state (the "
            "main table's time); 'finding call': the slowest of the first 20 calls, the one that "
            "finds them. Where they would save little (or need more memory than 2x the data's "
            "bits + 1 MB) they are not found and the blocks serve (a ratio near 1).", "",
            site_repeats(by_label, sim + sorted(by_label.keys() - set(sim))), ""]
    out += ["## Pattern compression", "",
            "Distinct columns (patterns) against families; the bundled real data sets (taxa of the "
            "table that are not in the tree dropped) and the same tables with every repeated column "
            "changed until unique ('-unique').", "",
            table(["data", "genomes", "families", "distinct patterns", "ratio"], patterns), ""]
    if real:
        out += ["persiste, 2 threads, real table against its all-unique copy:", "",
                table(["data", "task", "real", "all unique", "unique / real"], real), ""]

    if reads:
        out += ["## Reading (persiste_data_read, whole call: parse, bind, pack, find patterns)", "",
                "Reference: zlib's gzread of the same file into a buffer (inflate only for .gz; "
                "a plain read otherwise).", "",
                table(["file", "file MB", "text MB", "persiste", "persiste MB/s of text",
                       "reference MB/s", "persiste / reference time"],
                      [[Path(r["file"]).name, f"{r['file_mb']:.1f}", f"{r['text_mb']:.1f}",
                        fmt(r["median_s"]), f"{r['mb_per_s']:.0f}",
                        f"{r['zlib_read_mb_per_s']:.0f}", ratio(r["median_s"], r["zlib_read_s"])]
                       for r in reads]), ""]

    mem = []
    for l in sim:
        r = next(r for r in by_label[l] if r["task"] == "read+memory")
        top = max((x for x in by_label[l] if "rss_growth_mb" in x), key=lambda x: x["rss_growth_mb"])
        mem.append([l, fmt(r["median_s"]), f"{r['rss_after_read_mb']:.0f}", f"{r['workspace_mb']:.1f}",
                    f"{top['task']} {top['threads']}T", f"{r['bits_mb']:.1f}", f"{r['peak_rss_mb']:.0f}"])
    out += ["## Memory (persiste; before BEAGLE runs)", "",
            "RSS after reading tree and table; 'workspace': the largest RSS growth while a context "
            "held its workspace (any task, 1 or 2 threads); bit-packed matrix = genomes x families / 8.",
            "", table(["data set", "read time", "RSS after read MB", "workspace MB", "largest in",
                       "bit-packed matrix MB", "peak RSS MB"], mem), ""]

    scal = scaling(rows, out_dir)
    if scal:
        out += ["## Scaling (persiste, CPU time per call on 1 thread)", "",
                "CPU time rather than wall time, so that other jobs on the shared machine do not bend "
                "the curves; a log-log slope of 1 is linear growth. scaling.tsv (with the 1- and "
                "2-thread wall times) and scaling.png hold the points.",
                "", scal, "", "![scaling](scaling.png)", ""]
    out += ["## Checks", ""]
    out += [f"- FAIL {f}" for f in failures] or [f"- every total agrees with NumPy to {TOL:g} relative"]
    out += [f"- note: {n}" for n in notes]
    text = "\n".join(out) + "\n"
    print(text)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
    name = f"{stamp}{'-' + a.tag if a.tag else ''}"
    (out_dir / f"{name}.md").write_text(text)
    (out_dir / f"{name}.jsonl").write_text(open(a.raw).read())
    if failures:
        print(f"report: {len(failures)} totals disagree beyond {TOL:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
