#!/usr/bin/env python3
"""Summarise a benches/engine-vs-fio run directory.

Rounds are paired: in round r both tools ran the same workload back to
back, so the ratio shardnode/fio of one round cancels slow drift of a
shared, noisy host. The headline figure is the median of those per-round
ratios; the ratio of the two tools' medians is shown beside it.

usage: summarize.py [--chart] RESULTS_DIR NAME|FIELD_PATH [NAME|FIELD_PATH ...]
       e.g. randread-4k-qd32|read.iops

--chart also writes RESULTS_DIR/chart.svg: per workload, the median paired
throughput ratio (a line marks 1.0, parity with the base) and the median
p99 total latency of both tools.

Files are NAME.BASE.ROUND.json and NAME.SUBJECT.ROUND.json; BASE and
SUBJECT are fio and shardbench unless the environment says otherwise
(SUMMARIZE_BASE=store SUMMARIZE_SUBJECT=agent for benches/agent-vs-store).
SUMMARIZE_APPEND=1 adds the table to summary.md under its own heading
(a second anchor in the same run) instead of replacing it.
"""
import glob
import html
import math
import json
import os
import statistics
import sys


def load(out, name, tool, direction, field):
    runs = {}
    for path in glob.glob(os.path.join(out, f"{name}.{tool}.*.json")):
        rnd = int(path.rsplit(".", 2)[1])
        job = json.load(open(path))["jobs"][0]
        d = job[direction]
        cpu_us_per_io = (job["usr_cpu"] + job["sys_cpu"]) / 100 * 1e6 / d["iops"] if d["iops"] else 0.0
        runs[rnd] = {
            "value": d[field],
            # Total latency (queued to reaped): the same span in both tools.
            # fio's clat starts after its submit syscall returns, ours
            # before the single submit-and-wait call, so clat differs by
            # definition (docs/cli.md).
            # (A scrub-only job times no requests: no percentiles.)
            "p99_us": d.get("lat_ns", {}).get("percentile", {}).get("99.000000", 0) / 1000,
            "cpu_us_per_io": cpu_us_per_io,
        }
    return runs


def chart(path, rows, base, subject):
    """A two-panel horizontal bar chart in plain SVG (no plotting library)."""
    bar, gap, label_w, panel_w = 16, 14, 190, 300
    top = 54
    height = top + len(rows) * (2 * bar + gap) + 40
    width = label_w + 2 * panel_w + 80
    # Ratios on a log scale, bars drawn from the 1.0 line: a ratio of 0.5
    # is as far left as 2.0 is right.
    lo = math.log2(min([0.25] + [r["ratio"] / 1.3 for r in rows if r["ratio"] > 0]))
    hi = math.log2(max([4.0] + [r["ratio"] * 1.3 for r in rows]))
    def rx(ratio):
        return x1 + (math.log2(max(ratio, 2 ** lo)) - lo) / (hi - lo) * panel_w
    max_p99 = max([1.0] + [max(r["p99_base"], r["p99_subject"]) for r in rows])
    log_max = math.log10(max_p99 * 2)
    x1 = label_w
    x2 = label_w + panel_w + 60
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{x1}" y="20" font-weight="bold">throughput {subject}/{base}, log scale (median of paired rounds)</text>',
        f'<text x="{x2}" y="20" font-weight="bold">p99 total latency, µs (log scale)</text>',
        f'<rect x="{x2}" y="30" width="10" height="10" fill="#999"/><text x="{x2 + 14}" y="39">{base}</text>',
        f'<rect x="{x2 + 60}" y="30" width="10" height="10" fill="#2a6fdb"/><text x="{x2 + 74}" y="39">{subject}</text>',
    ]
    for i, r in enumerate(rows):
        y = top + i * (2 * bar + gap)
        svg.append(f'<text x="{label_w - 8}" y="{y + bar + 4}" text-anchor="end">{html.escape(r["name"])}</text>')
        a, b_ = sorted([rx(1.0), rx(r["ratio"])])
        color = "#2a6fdb" if r["ratio"] >= 1.0 else "#d9822b"
        svg.append(f'<rect x="{a:.1f}" y="{y + bar // 2}" width="{b_ - a:.1f}" height="{bar}" fill="{color}"/>')
        svg.append(f'<text x="{max(b_, rx(1.0)) + 4:.1f}" y="{y + bar + 4}">{r["ratio"]:.2f}</text>')
        for k, (key, fill) in enumerate([("p99_base", "#999"), ("p99_subject", "#2a6fdb")]):
            v = max(r[key], 1.0)
            w = math.log10(v) / log_max * panel_w
            yy = y + k * bar
            svg.append(f'<rect x="{x2}" y="{yy}" width="{w:.1f}" height="{bar - 2}" fill="{fill}"/>')
            svg.append(f'<text x="{x2 + w + 4:.1f}" y="{yy + bar - 5}">{r[key]:.0f}</text>')
    one = rx(1.0)
    bottom = top + len(rows) * (2 * bar + gap)
    svg.append(f'<line x1="{one:.1f}" y1="{top - 6}" x2="{one:.1f}" y2="{bottom}" stroke="black" stroke-dasharray="4,3"/>')
    svg.append(f'<text x="{one:.1f}" y="{bottom + 14}" text-anchor="middle">1.0 = {base}</text>')
    svg.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(svg) + "\n")


def main():
    args = sys.argv[1:]
    want_chart = "--chart" in args
    args = [a for a in args if a != "--chart"]
    out = args[0]
    base = os.environ.get("SUMMARIZE_BASE", "fio")
    subject = os.environ.get("SUMMARIZE_SUBJECT", "shardbench")
    b, s = (base, "shardnode") if subject == "shardbench" else (base, subject)
    rows = [
        f"| workload | metric | {b} median | {s} median | **median of paired ratios** | ratio of medians | per-round ratios | p99 lat µs {b} / {s} | CPU µs per I/O {b} / {s} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    chart_rows = []
    for spec in args[1:]:
        name, metric = spec.split("|")[0], spec.split("|")[-1]
        direction, field = metric.split(".")
        fio = load(out, name, base, direction, field)
        ours = load(out, name, subject, direction, field)
        rounds = sorted(set(fio) & set(ours))
        if not rounds:
            continue
        ratios = [ours[r]["value"] / fio[r]["value"] for r in rounds]
        med = lambda runs, key: statistics.median(runs[r][key] for r in rounds)
        fm, sm = med(fio, "value"), med(ours, "value")
        fmt = (lambda v: f"{v / 2**20:.0f} MiB/s") if field == "bw_bytes" else (lambda v: f"{v:.0f} IOPS")
        chart_rows.append({
            "name": name,
            "ratio": statistics.median(ratios),
            "p99_base": med(fio, "p99_us"),
            "p99_subject": med(ours, "p99_us"),
        })
        rows.append(
            f"| {name} | {direction} {field} | {fmt(fm)} | {fmt(sm)} | **{statistics.median(ratios):.3f}** | "
            f"{sm / fm:.3f} | {', '.join(f'{x:.2f}' for x in ratios)} | "
            f"{med(fio, 'p99_us'):.0f} / {med(ours, 'p99_us'):.0f} | "
            f"{med(fio, 'cpu_us_per_io'):.1f} / {med(ours, 'cpu_us_per_io'):.1f} |"
        )
    table = "\n".join(rows)
    header = open(os.path.join(out, "machine.txt")).read()
    # SUMMARIZE_APPEND: a further comparison in the same run, added under
    # its own heading instead of replacing the summary.
    if os.environ.get("SUMMARIZE_APPEND"):
        with open(os.path.join(out, "summary.md"), "a") as f:
            f.write(f"\n### {s} against {b}\n\n" + table + "\n")
        print(table)
        return
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(header + "\n" + table + "\n")
        if want_chart and chart_rows:
            f.write("\n![throughput ratio and p99 latency per workload](chart.svg)\n")
    if want_chart and chart_rows:
        chart(os.path.join(out, "chart.svg"), chart_rows, b, s)
    print(table)


if __name__ == "__main__":
    main()
