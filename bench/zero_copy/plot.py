#!/usr/bin/env python3
"""Chart of bench_zero_copy's JSON (build/bench/zero_copy.json).

    python3 bench/zero_copy/plot.py [build/bench/zero_copy.json] [-o docs/zero_copy.png]

Four panels: GEMM latency p50 against n for each mode and dtype (with the
native cuBLAS figures when the run embedded them); the decode step per
mode (and native); bytes moved per step and RSS growth for the 16 MiB
case (f32 2048, or the largest size run); the empty-op cost from the guest
and from C. The footer names the device, the date, the commit and the
command. Needs matplotlib (pip install matplotlib).
"""
import argparse
import json
import os
import sys

MODE_STYLE = {
    "mapped": ("tab:blue", "o"),
    "resident": ("tab:green", "s"),
    "resident_all": ("tab:olive", "D"),
    "copy": ("tab:red", "^"),
    "native": ("black", "x"),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", nargs="?", default="build/bench/zero_copy.json")
    ap.add_argument("-o", "--out", default=None,
                    help="PNG path (default: the JSON path with .png)")
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot.py needs matplotlib: pip install matplotlib")
    with open(args.json) as f:
        d = json.load(f)
    out = args.out or os.path.splitext(args.json)[0] + ".png"

    fig, ax = plt.subplots(2, 2, figsize=(13, 9))
    gemm = d.get("gemm", [])
    native = d.get("native") or {}

    # 1. GEMM latency.
    a = ax[0][0]
    for dtype, ls in (("f32", "-"), ("bf16", "--")):
        for mode in ("mapped", "resident", "copy"):
            rows = sorted((g for g in gemm
                           if g["dtype"] == dtype and g["mode"] == mode),
                          key=lambda g: g["n"])
            if not rows:
                continue
            c, m = MODE_STYLE[mode]
            a.plot([g["n"] for g in rows], [g["p50_us"] for g in rows],
                   ls=ls, color=c, marker=m, label=f"kiln {mode} {dtype}")
        nrows = sorted((g for g in native.get("gemm", [])
                        if g["dtype"] == dtype and g["mode"] == "device"),
                       key=lambda g: g["n"])
        if nrows:
            a.plot([g["n"] for g in nrows], [g["p50_us"] for g in nrows],
                   ls=ls, color="black", marker="x",
                   label=f"native cuBLAS {dtype}")
    a.set_xscale("log", base=2)
    a.set_yscale("log")
    a.set_xlabel("n (n x n GEMM)")
    a.set_ylabel("latency p50 (us), guest call incl. sync")
    a.set_title("GEMM from a Wasm guest")
    a.grid(True, which="both", alpha=0.3)
    a.legend(fontsize=7, ncol=2)

    # 2. Decode step.
    a = ax[0][1]
    dec = d.get("decode", [])
    labels, p50, p99, colors = [], [], [], []
    for r in dec:
        labels.append("kiln\n" + r["mode"].replace("_", "\n"))
        p50.append(r["p50_us"])
        p99.append(r["p99_us"])
        colors.append(MODE_STYLE.get(r["mode"], ("gray", ""))[0])
    for r in native.get("decode", []):
        m = r["mode"].replace("w_device_xy_memcpy_", "memcpy\n")
        labels.append("native\n" + m.replace("_", "\n"))
        p50.append(r["p50_us"])
        p99.append(r["p99_us"])
        colors.append("black")
    if labels:
        xs = range(len(labels))
        a.bar(xs, p50, color=colors, alpha=0.8, label="p50")
        a.scatter(xs, p99, color="gray", marker="_", s=300, label="p99")
        a.set_xticks(list(xs))
        a.set_xticklabels(labels, fontsize=6)
        a.set_yscale("log")
        w_mib = dec[0]["w_bytes"] / 2**20 if dec else 0
        steps = dec[0]["steps"] if dec else 0
        a.set_title(f"decode step y = W x (W {w_mib:.0f} MiB f32, "
                    f"{steps} steps)")
        a.set_ylabel("us per step")
        a.legend(fontsize=8)
        a.grid(True, axis="y", alpha=0.3)

    # 3. Bytes moved and RSS growth for the 16 MiB case.
    a = ax[1][0]
    f32 = [g for g in gemm if g["dtype"] == "f32"]
    if f32:
        sizes = sorted({g["n"] for g in f32})
        n = 2048 if 2048 in sizes else sizes[-1]
        rows = [g for g in f32 if g["n"] == n]
        xs = range(len(rows))
        mb = 1e6
        a.bar([x - 0.2 for x in xs], [g["bytes_moved_per_step"] / mb
                                      for g in rows],
              width=0.4, color="tab:purple", label="bytes moved / step (MB)")
        a.bar([x + 0.2 for x in xs], [g["rss_growth_bytes"] / mb
                                      for g in rows],
              width=0.4, color="tab:orange", label="RSS growth (MB)")
        a.set_xticks(list(xs))
        a.set_xticklabels([g["mode"] for g in rows])
        for x, g in zip(xs, rows):
            p = g.get("pointer", {})
            ident = "dev==host" if p.get("device_equals_host") else "dev!=host"
            if g["mode"] == "copy":
                ident = "staging copy"
            a.annotate(ident, (x, 0), textcoords="offset points",
                       xytext=(0, -28), ha="center", fontsize=7)
        a.set_title(f"f32 {n}x{n} ({n * n * 4 / 2**20:.3g} MiB per matrix): "
                    "copies and memory")
        a.set_ylabel("MB")
        a.legend(fontsize=8)
        a.grid(True, axis="y", alpha=0.3)

    # 4. Empty op.
    a = ax[1][1]
    e = d.get("empty_op", {})
    labels = ["guest\nsubmit", "C\nsubmit", "guest\nsubmit+sync",
              "C\nsubmit+sync"]
    vals = [e.get("guest_submit_ns", 0), e.get("native_submit_ns", 0),
            e.get("guest_submit_sync_ns", 0), e.get("native_submit_sync_ns", 0)]
    cols = ["tab:blue", "tab:gray", "tab:blue", "tab:gray"]
    ek = native.get("empty_kernel")
    if ek:
        labels += ["CUDA\nlaunch", "CUDA\nlaunch+sync"]
        vals += [ek["launch_ns"], ek["launch_sync_ns"]]
        cols += ["black", "black"]
    a.bar(range(len(vals)), vals, color=cols)
    a.set_xticks(range(len(vals)))
    a.set_xticklabels(labels, fontsize=8)
    a.set_ylabel("ns per op (p50)")
    a.set_title("empty op: guest import vs native call "
                f"(overhead {e.get('guest_overhead_ns', 0):.0f} ns)")
    a.grid(True, axis="y", alpha=0.3)

    m = d.get("machine", {})
    fig.suptitle(f"kiln zero-copy GPU plane: {d.get('device', '?')}",
                 fontsize=12)
    fig.text(0.01, 0.005,
             f"{m.get('date', '?')}  commit {m.get('commit', '?')}  "
             f"cpu {m.get('cpu', '?')}  command: {d.get('command', '?')}",
             fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
