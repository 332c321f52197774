#!/usr/bin/env python3
"""Print the Kiln-vs-peers table from benchmark JSON lines.

Usage:
    python bench/report.py [FILE.jsonl ...]      # default: newest bench/results/*.jsonl
    python bench/report.py --markdown FILE.jsonl

Reads records written by bench/src/main.rs (framework "kiln") and bench/peers.py
(one framework per process), and prints one row per workload: each framework's
metric value with its median time in ms, then Kiln/peer ratios oriented so that
> 1 means Kiln is better (value ratio for higher-is-better units such as GB/s,
inverse ratio for lower-is-better units such as us/op), and Kiln against the best
peer on that row (the bar Kiln has to clear).

A value marked `*` was measured while other processes kept more than
--contended cores busy (record field other_load), so it is likely inflated.
If a file holds the same (framework, workload) twice, the last record wins.
Python 3 standard library only, so it runs without the venv.
"""
import argparse
import glob
import json
import math
import os
import sys

ORDER = ["kiln", "numpy", "mlx", "torch", "jax", "llamacpp"]
LOWER_IS_BETTER_UNITS = {"us/op", "ns/op", "ms/op", "ms", "s", "us", "ms/token", "ms/step"}


def lower_is_better(metric):
    return metric in LOWER_IS_BETTER_UNITS or (metric or "").split("/")[0] in ("ns", "us", "ms", "s")


def load(paths):
    recs = {}
    order_w, order_f = [], []
    for path in paths:
        with open(path) as f:
            for line_no, line in enumerate(f, 1):
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    print(f"{path}:{line_no}: not JSON, skipped", file=sys.stderr)
                    continue
                w, fw = r.get("workload"), r.get("framework")
                if not w or not fw or w.startswith("_"):
                    continue
                if w not in order_w:
                    order_w.append(w)
                if fw not in order_f:
                    order_f.append(fw)
                recs[(fw, w)] = r
    fws = [f for f in ORDER if f in order_f] + sorted(f for f in order_f if f not in ORDER)
    return recs, order_w, fws


def ok(r):
    return (r is not None and r.get("status") in (None, "ok")
            and isinstance(r.get("value"), (int, float)) and r["value"] > 0)


def fmt_num(v):
    if v is None or not math.isfinite(v):
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 0.1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def cell(r, contended):
    if r is None:
        return "-"
    if not ok(r):
        return {"skipped": "n/a", "failed": "FAIL"}.get(r.get("status"), "-")
    star = "*" if (r.get("other_load") or 0) > contended else ""
    ms = r.get("median_ms")
    return f"{fmt_num(r['value'])}{star} ({fmt_num(ms)})" if ms is not None else fmt_num(r["value"])


def ratio(kiln, peer, metric):
    """Kiln/peer, > 1 means Kiln is better."""
    if not (ok(kiln) and ok(peer)):
        return None
    if lower_is_better(metric):
        return peer["value"] / kiln["value"]
    return kiln["value"] / peer["value"]


def fmt_ratio(x):
    if x is None:
        return "-"
    return f"{x:.2f}x" if x < 100 else f"{x:.0f}x"


def build_table(recs, workloads, fws, contended):
    peers = [f for f in fws if f != "kiln"]
    has_kiln = "kiln" in fws
    header = ["workload", "unit"] + [f"{f} val (ms)" for f in fws]
    if has_kiln:
        header += [f"kiln/{p}" for p in peers] + ["kiln/best", "best peer"]
    rows = []
    for w in workloads:
        rs = {f: recs.get((f, w)) for f in fws}
        metric = next((r.get("metric") for r in rs.values() if r and r.get("metric")), "")
        row = [w, metric + (" (lower)" if lower_is_better(metric) else "")]
        row += [cell(rs[f], contended) for f in fws]
        if has_kiln:
            row += [fmt_ratio(ratio(rs["kiln"], rs[p], metric)) for p in peers]
            good = [p for p in peers if ok(rs[p])]
            if good:
                pick = min if lower_is_better(metric) else max
                best = pick(good, key=lambda p: rs[p]["value"])
                row += [fmt_ratio(ratio(rs["kiln"], rs[best], metric)), best]
            else:
                row += ["-", "-"]
        rows.append(row)
    return header, rows


def render_text(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(  # noqa: E731
        (str(c).ljust(wd) if i < 2 else str(c).rjust(wd)) for i, (c, wd) in enumerate(zip(cells, widths)))
    out = [line(header), "  ".join("-" * wd for wd in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def render_markdown(header, rows):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*", help="JSONL files (default: newest in bench/results)")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--contended", type=float, default=0.5,
                    help="mark values whose other_load exceeds this many cores (default 0.5)")
    args = ap.parse_args()
    files = args.files
    if not files:
        res = sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                            "results", "*.jsonl")))
        if not res:
            sys.exit("report.py: no files given and bench/results/ has no .jsonl")
        files = [res[-1]]
    recs, workloads, fws = load(files)
    if not recs:
        sys.exit("report.py: no benchmark records found in " + ", ".join(files))
    header, rows = build_table(recs, workloads, fws, args.contended)
    print((render_markdown if args.markdown else render_text)(header, rows))
    print()
    print("val = metric value in the unit column ('(lower)': smaller is better), (ms) = median "
          "ms per call;\nkiln/X > 1 means Kiln is better; kiln/best compares with the best "
          "peer on the row.")
    if any("*" in c for r in rows for c in r):
        print(f"* = other processes kept > {args.contended} cores busy while timing "
              "(likely inflated).")
    fails = [(fw, w, r.get("reason")) for (fw, w), r in recs.items() if r.get("status") == "failed"]
    for fw, w, why in fails:
        print(f"FAIL {fw} {w}: {why}")


if __name__ == "__main__":
    main()
