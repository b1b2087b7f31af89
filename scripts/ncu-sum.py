#!/usr/bin/env python3
"""Sums an Nsight Compute CSV (--metrics gpu__time_duration.sum --csv) by
kernel name: launches, total and mean microseconds, share of the total.

    python3 scripts/ncu-sum.py ncu.csv
"""
import csv
import sys
from collections import defaultdict


def main(path):
    rows = []
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # skip ncu's own log lines
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        v = float(r["Metric Value"].replace(",", ""))
        unit = r.get("Metric Unit", "ns")
        us = v / 1e3 if unit in ("nsecond", "ns") else v * 1e3 if unit in ("msecond", "ms") else v
        rows.append((r["Kernel Name"], us))
    by = defaultdict(lambda: [0, 0.0])
    for name, us in rows:
        short = name.split("(")[0][:70]
        by[short][0] += 1
        by[short][1] += us
    total = sum(v[1] for v in by.values())
    print(f"{len(rows)} kernels, {total:.1f} us in all")
    print(f"{'kernel':70} {'n':>5} {'total us':>10} {'mean us':>9} {'share':>6}")
    for k, (n, us) in sorted(by.items(), key=lambda kv: -kv[1][1]):
        print(f"{k:70} {n:5d} {us:10.1f} {us / n:9.2f} {100 * us / total:5.1f}%")


if __name__ == "__main__":
    main(sys.argv[1])
