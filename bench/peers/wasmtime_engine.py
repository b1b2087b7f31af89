#!/usr/bin/env python3
"""wasmtime (PyPI's `wasmtime` package) on the guests of bench_engine.

Prints a JSON list of results in bench_util.h's form (id, label, unit,
p50, p99, min, max, mean, samples, iterations_per_sample, note) for
bench_engine to add to its table; prints {"skipped": "why"} when wasmtime
is not installed. Python's own overhead stays out where it can: call costs
are taken with the loop inside the guest (guests/bench/calls.wat), one
Python call per batch. What Python cannot avoid (a host function written in
Python, a host-to-guest call from Python) is measured beside a pure-Python
baseline and labelled so.

    wasmtime_engine.py GUEST_DIR [--quick]
"""
import json
import os
import statistics
import sys
import tempfile
import time

try:
    import wasmtime
except ImportError:
    print(json.dumps({"skipped": "wasmtime not installed (pip install wasmtime)"}))
    sys.exit(0)

QUICK = "--quick" in sys.argv
GUESTS = sys.argv[1]
results = []


def stats(samples):
    v = sorted(samples)
    n = len(v)

    def pct(p):
        k = max(1, min(n, int(p / 100.0 * n + 0.999999999)))
        return v[k - 1]

    return {"p50": pct(50), "p99": pct(99), "min": v[0], "max": v[-1],
            "mean": statistics.fmean(v), "samples": n}


def add(id_, label, unit, samples, note=None, iterations=None):
    r = {"id": id_, "label": label, "unit": unit}
    r.update(stats(samples))
    if iterations and iterations > 1:
        r["iterations_per_sample"] = iterations
    if note:
        r["note"] = note
    results.append(r)


def per_iter(fn, target_s, samples):
    """ns per iteration of fn(iters), batches about target_s long."""
    iters = 1
    while True:
        t0 = time.perf_counter_ns()
        fn(iters)
        dt = time.perf_counter_ns() - t0
        if dt >= target_s * 1e9 or iters >= 1 << 30:
            break
        iters = max(iters * 2, int(iters * target_s * 1e9 / max(dt, 1)) + 1) if dt > 1e5 else iters * 2
        iters = min(iters, 1 << 30)
    fn(iters)
    out = []
    for _ in range(samples):
        t0 = time.perf_counter_ns()
        fn(iters)
        out.append((time.perf_counter_ns() - t0) / iters)
    return out, iters


def guest(name):
    return os.path.join(GUESTS, name + ".wasm")


def main():
    samples = 7 if QUICK else 31
    target = 0.005 if QUICK else 0.02
    engine = wasmtime.Engine()

    # ---- call cost -------------------------------------------------------
    store = wasmtime.Store(engine)
    module = wasmtime.Module.from_file(engine, guest("bench_calls"))
    i32 = wasmtime.ValType.i32()
    ft = wasmtime.FuncType([i32], [i32])
    inc = wasmtime.Func(store, ft, lambda x: (x + 1) & 0xFFFFFFFF)
    inc2 = wasmtime.Func(store, ft, lambda x: (x + 1) & 0xFFFFFFFF)
    inst = wasmtime.Instance(store, module, [inc, inc2])
    ex = inst.exports(store)

    def loop(name):
        f = ex[name]

        def run(n):
            r = f(store, n)
            if r != n:
                raise SystemExit(f"{name} returned {r}, not {n}")
        return run

    s, it = per_iter(loop("loop_indirect"), target, samples)
    add("peer.wasmtime.g2g.indirect", "wasmtime: guest loop, call_indirect", "ns", s,
        "Cranelift; compare call.g2g.indirect", it)
    s, it = per_iter(loop("loop_guest"), target, samples)
    add("peer.wasmtime.g2g.direct", "wasmtime: guest loop, direct call", "ns", s,
        "compare call.g2g.direct", it)
    s, it = per_iter(loop("loop_import"), target, samples)
    add("peer.wasmtime.g2h.python", "wasmtime: guest loop calling a Python host function",
        "ns", s, "a Python embedder's guest-to-host call", it)
    add_ = ex["add"]

    def h2g(n):
        acc = 0
        for _ in range(n):
            acc = add_(store, acc, 1)

    def py_baseline(n):
        f = lambda a, b: a + b  # noqa: E731
        acc = 0
        for _ in range(n):
            acc = f(acc, 1)

    s, it = per_iter(h2g, target, samples)
    add("peer.wasmtime.h2g.python", "wasmtime: export called from Python", "ns", s,
        "includes Python's own call overhead", it)
    s, it = per_iter(py_baseline, target, samples)
    add("peer.python.call_baseline", "Python: calling a Python function (baseline)", "ns", s,
        None, it)

    # ---- compile and instantiate ------------------------------------------
    reps = 1 if QUICK else 3
    t = []
    for _ in range(reps):
        e = wasmtime.Engine()
        t0 = time.perf_counter_ns()
        wasmtime.Module.from_file(e, guest("bench_interp"))
        t.append((time.perf_counter_ns() - t0) * 1e-9)
    add("peer.wasmtime.compile.interp", "wasmtime: compile bench_interp.wasm (Cranelift)",
        "s", t, "uses every core; compare compile.interp.kiln_O2")

    big = wasmtime.Module.from_file(engine, guest("bench_big"))
    with tempfile.TemporaryDirectory() as d:
        art = os.path.join(d, "big.cwasm")
        with open(art, "wb") as f:
            f.write(big.serialize())
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        n = 20 if QUICK else 200
        load, inst_t = [], []
        for _ in range(n):
            st = wasmtime.Store(engine)
            st.set_wasi(wasmtime.WasiConfig())
            t0 = time.perf_counter_ns()
            m = wasmtime.Module.deserialize_file(engine, art)
            t1 = time.perf_counter_ns()
            linker.instantiate(st, m)
            t2 = time.perf_counter_ns()
            load.append((t2 - t0) * 1e-6)
            inst_t.append((t2 - t1) * 1e-3)
        add("peer.wasmtime.instantiate.big.repeat",
            "wasmtime: deserialize_file + instantiate, bench_big", "ms", load,
            "its warm-cache path; compare instantiate.big.repeat")
        add("peer.wasmtime.instantiate.big.instance",
            "wasmtime: instantiate alone, bench_big", "us", inst_t,
            "from Python, with a Store per sample")
    try:
        from importlib.metadata import version
        v = version("wasmtime")
    except Exception:  # noqa: BLE001
        v = ""
    print(json.dumps({"version": v, "results": results}))


main()
