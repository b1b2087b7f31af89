#!/usr/bin/env python3
"""Run the official WASI preview1 testsuite against `kiln run`.

Usage: run_wasi_testsuite.py --kiln build/kiln [--filter SUBSTR]
                             [--timeout SECONDS] TESTSUITE_DIR

TESTSUITE_DIR is a wasi-testsuite checkout (or its prebuilt form): every
folder below it that holds *.wasm files is a suite (for preview1:
tests/{assemblyscript,c,rust}/testsuite/wasm32-wasip1).

What it does for each test case, as specification.md says:
  - the test's folder is copied to a fresh temporary folder (made writable),
    so the testdata itself is never written, and *.cleanup files are
    removed from the copy before and after the run;
  - the JSON spec next to the .wasm (or the defaults) gives args, env,
    exit_code, stdout, stderr and the directories to preopen: "root" (a
    folder preopened as the guest's "/") or the legacy "dirs" (each folder
    preopened under its own name);
  - kiln runs in the copy, with --env for each variable (kiln starts guests
    with an empty environment otherwise) and --dir HOST::GUEST for each
    directory; arguments follow the module path;
  - the exit code must match, and stdout/stderr must equal the expected text
    where the spec gives one (the upstream runner does not check a stream
    the spec leaves out).

Prints one line per test and last `wasi-testsuite: N passed, M failed`;
exits non-zero if any test failed. Python 3 standard library only.
"""

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

DEFAULTS = {
    "args": [],
    "env": {},
    "exit_code": 0,
    "root": None,
    "dirs": [],
    "stdout": None,
    "stderr": None,
}


def load_spec(wasm_path):
    spec = dict(DEFAULTS)
    json_path = wasm_path[: -len(".wasm")] + ".json"
    if os.path.exists(json_path):
        with open(json_path, encoding="utf-8") as f:
            cfg = json.load(f)
        if "operations" in cfg:
            # Operation-based spec: fold run/read/wait into the legacy shape
            # (tests needing connect/send/recv are not preview1 tests).
            for op in cfg["operations"]:
                kind = op.get("type")
                if kind == "run":
                    for key in ("args", "env", "root", "dirs"):
                        if key in op:
                            spec[key] = op[key]
                elif kind == "wait":
                    spec["exit_code"] = op.get("exit_code", 0)
                elif kind == "read":
                    spec[op.get("id", "stdout")] = op.get("payload", "")
                else:
                    spec.setdefault("unsupported", []).append(kind)
        else:
            for key in DEFAULTS:
                if key in cfg:
                    spec[key] = cfg[key]
    return spec


def remove_cleanup_files(top):
    for dirpath, dirnames, filenames in os.walk(top):
        for name in filenames + dirnames:
            if name.endswith(".cleanup"):
                path = os.path.join(dirpath, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    try:
                        os.remove(path)
                    except OSError:
                        pass


def make_writable(top):
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            mode = os.stat(path).st_mode
            os.chmod(path, mode | stat.S_IWUSR | stat.S_IRUSR |
                     (stat.S_IXUSR if stat.S_ISDIR(mode) else 0))
    os.chmod(top, os.stat(top).st_mode | stat.S_IWUSR)


def copy_case(src_dir, wasm_name, spec, dst_dir):
    """Copy what the test needs: its module and the folders it preopens."""
    shutil.copy2(os.path.join(src_dir, wasm_name), dst_dir)
    wanted = list(spec["dirs"] or [])
    if spec["root"]:
        wanted.append(spec["root"])
    for d in wanted:
        src = os.path.join(src_dir, d)
        dst = os.path.join(dst_dir, d)
        if os.path.isdir(src) and not os.path.exists(dst):
            shutil.copytree(src, dst, symlinks=True)
    make_writable(dst_dir)
    remove_cleanup_files(dst_dir)


def build_command(kiln, wasm_name, spec):
    cmd = [kiln, "run"]
    for key, value in spec["env"].items():
        cmd += ["--env", "%s=%s" % (key, value)]
    if spec["root"]:
        cmd += ["--dir", "%s::/" % spec["root"]]
    for d in spec["dirs"] or []:
        cmd += ["--dir", "%s::%s" % (d, d)]
    cmd.append(wasm_name)
    cmd += [str(a) for a in spec["args"]]
    return cmd


def run_case(kiln, src_dir, wasm_name, timeout):
    """Returns (passed, message)."""
    spec = load_spec(os.path.join(src_dir, wasm_name))
    if spec.get("unsupported"):
        return False, "unsupported operations: %s" % spec["unsupported"]
    with tempfile.TemporaryDirectory(prefix="kiln-wasi-") as work:
        copy_case(src_dir, wasm_name, spec, work)
        cmd = build_command(kiln, wasm_name, spec)
        try:
            proc = subprocess.run(cmd, cwd=work, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, timeout=timeout,
                                  env=dict(os.environ))
        except subprocess.TimeoutExpired:
            return False, "timed out after %ss" % timeout
        finally:
            remove_cleanup_files(work)
        out = proc.stdout.decode("utf-8", "replace")
        err = proc.stderr.decode("utf-8", "replace")
        problems = []
        if proc.returncode != spec["exit_code"]:
            problems.append("exit code %d, expected %d" %
                            (proc.returncode, spec["exit_code"]))
        if spec["stdout"] is not None and out != spec["stdout"]:
            problems.append("stdout %r, expected %r" % (out, spec["stdout"]))
        if spec["stderr"] is not None and err != spec["stderr"]:
            problems.append("stderr %r, expected %r" % (err, spec["stderr"]))
        if problems:
            detail = "; ".join(problems)
            if err and spec["stderr"] is None:
                detail += "\n      stderr: " + err.strip().replace(
                    "\n", "\n      stderr: ")
            return False, detail
        return True, ""


def find_suites(top):
    suites = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        # Preopened test folders (fs-tests.dir ...) are data, not suites.
        dirnames[:] = [d for d in dirnames if not d.endswith(".dir")]
        if any(f.endswith(".wasm") for f in filenames):
            suites.append(dirpath)
    return suites


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kiln", required=True, help="path of the kiln binary")
    ap.add_argument("--filter", default=None,
                    help="run only tests whose suite/name contains this")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds per test (default 120)")
    ap.add_argument("testsuite", help="wasi-testsuite folder")
    args = ap.parse_args()
    kiln = os.path.abspath(args.kiln)
    if not os.access(kiln, os.X_OK):
        print("run_wasi_testsuite: %s is not executable" % kiln,
              file=sys.stderr)
        return 2
    passed = failed = 0
    for suite in find_suites(os.path.abspath(args.testsuite)):
        rel = os.path.relpath(suite, args.testsuite)
        for wasm in sorted(f for f in os.listdir(suite)
                           if f.endswith(".wasm")):
            name = "%s/%s" % (rel, wasm[: -len(".wasm")])
            if args.filter and args.filter not in name:
                continue
            ok, msg = run_case(kiln, suite, wasm, args.timeout)
            if ok:
                passed += 1
                print("ok   %s" % name)
            else:
                failed += 1
                print("FAIL %s: %s" % (name, msg))
            sys.stdout.flush()
    print("wasi-testsuite: %d passed, %d failed" % (passed, failed))
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
