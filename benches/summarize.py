#!/usr/bin/env python3
"""Summarise a benches/engine-vs-fio run directory.

Rounds are paired: in round r both tools ran the same workload back to
back, so the ratio shardnode/fio of one round cancels slow drift of a
shared, noisy host. The headline figure is the median of those per-round
ratios; the ratio of the two tools' medians is shown beside it.

usage: summarize.py RESULTS_DIR NAME|FIELD_PATH [NAME|FIELD_PATH ...]
       e.g. randread-4k-qd32|read.iops

Files are NAME.BASE.ROUND.json and NAME.SUBJECT.ROUND.json; BASE and
SUBJECT are fio and shardbench unless the environment says otherwise
(SUMMARIZE_BASE=store SUMMARIZE_SUBJECT=agent for benches/agent-vs-store).
"""
import glob
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


def main():
    out = sys.argv[1]
    base = os.environ.get("SUMMARIZE_BASE", "fio")
    subject = os.environ.get("SUMMARIZE_SUBJECT", "shardbench")
    b, s = (base, "shardnode") if subject == "shardbench" else (base, subject)
    rows = [
        f"| workload | metric | {b} median | {s} median | **median of paired ratios** | ratio of medians | per-round ratios | p99 lat µs {b} / {s} | CPU µs per I/O {b} / {s} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for spec in sys.argv[2:]:
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
        rows.append(
            f"| {name} | {direction} {field} | {fmt(fm)} | {fmt(sm)} | **{statistics.median(ratios):.3f}** | "
            f"{sm / fm:.3f} | {', '.join(f'{x:.2f}' for x in ratios)} | "
            f"{med(fio, 'p99_us'):.0f} / {med(ours, 'p99_us'):.0f} | "
            f"{med(fio, 'cpu_us_per_io'):.1f} / {med(ours, 'cpu_us_per_io'):.1f} |"
        )
    table = "\n".join(rows)
    header = open(os.path.join(out, "machine.txt")).read()
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(header + "\n" + table + "\n")
    print(table)


if __name__ == "__main__":
    main()
