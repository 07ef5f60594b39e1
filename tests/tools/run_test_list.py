#!/usr/bin/env python3
"""Run the tests of a meson build from its test list, without meson.

    meson introspect BUILD --tests > tests.json      # where the build was made
    python3 tests/tools/run_test_list.py tests.json --build-dir BUILD [-j N] [--suite S]

For machines that have the built binaries but not the meson that made the build
directory (a newer meson refuses an older build directory): the GPU machine of
samples/bench/device_check.sh. Each test runs with its own environment on top of
this process's, in its working directory (the build directory unless the test
names one, as meson does), under its timeout. Exit code 77 is a
skip, as in meson. --replace OLD=NEW rewrites paths in commands, environments and
working directories (the build's source and shared folders live elsewhere there). Prints one line per test and a summary; exits 1 if any failed.
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time


def rewrite(value, replacements):
    for old, new in replacements:
        value = value.replace(old, new)
    return value


def apply_replacements(test, replacements):
    test["cmd"] = [rewrite(a, replacements) for a in test["cmd"]]
    test["env"] = {k: rewrite(v, replacements) for k, v in (test.get("env") or {}).items()}
    if test.get("workdir"):
        test["workdir"] = rewrite(test["workdir"], replacements)


def run_one(test, log_dir, build_dir):
    env = dict(os.environ)
    env.update(test.get("env") or {})
    start = time.monotonic()
    try:
        proc = subprocess.run(test["cmd"], env=env, cwd=test.get("workdir") or build_dir,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=test.get("timeout") or 300)
        code, out = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as e:
        code, out = "timeout", e.stdout or b""
    except OSError as e:
        code, out = "error", str(e).encode()
    seconds = time.monotonic() - start
    if log_dir:
        with open(os.path.join(log_dir, test["name"] + ".log"), "wb") as f:
            f.write(out)
    status = "OK" if code == 0 else "SKIP" if code == 77 else "FAIL"
    return test, status, code, seconds, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tests_json")
    ap.add_argument("--build-dir", required=True,
                    help="where tests without a working directory of their own run")
    ap.add_argument("-j", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--suite", action="append", default=[],
                    help="run only tests of this suite (e.g. ops); repeatable")
    ap.add_argument("--exclude-suite", action="append", default=[])
    ap.add_argument("--log-dir", help="write each test's output to LOG_DIR/NAME.log")
    ap.add_argument("--replace", action="append", default=[], metavar="OLD=NEW",
                    help="rewrite OLD to NEW in commands, environments, working directories")
    args = ap.parse_args()
    replacements = []
    for r in args.replace:
        old, sep, new = r.partition("=")
        if not sep or not old:
            ap.error(f"--replace wants OLD=NEW, got {r!r}")
        replacements.append((old, new))

    with open(args.tests_json) as f:
        tests = json.load(f)

    def suite_of(t):
        return t["suite"][0].split(":")[-1] if t.get("suite") else ""

    if args.suite:
        tests = [t for t in tests if suite_of(t) in args.suite]
    tests = [t for t in tests if suite_of(t) not in args.exclude_suite]
    for t in tests:
        apply_replacements(t, replacements)
    if args.log_dir:
        os.makedirs(args.log_dir, exist_ok=True)

    counts = {"OK": 0, "SKIP": 0, "FAIL": 0}
    failed = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.j) as pool:
        futures = [pool.submit(run_one, t, args.log_dir, args.build_dir) for t in tests]
        for fut in concurrent.futures.as_completed(futures):
            test, status, code, seconds, out = fut.result()
            counts[status] += 1
            print(f"{status:4} {suite_of(test)}/{test['name']} ({seconds:.1f} s, exit {code})",
                  flush=True)
            if status == "FAIL":
                failed.append((test, out))
    for test, out in failed:
        tail = out.decode(errors="replace").splitlines()[-15:]
        print(f"--- {test['name']} (last lines)\n" + "\n".join(tail))
    print(f"tests: {counts['OK']} ok, {counts['SKIP']} skipped, {counts['FAIL']} failed, "
          f"{len(tests)} in all")
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
