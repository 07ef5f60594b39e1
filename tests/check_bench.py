#!/usr/bin/env python3
"""Smoke test of vkllm-bench on stories260K: the JSON output parses and holds pp and tg
rows with positive speeds, the per-op profile (-v) is consistent, the markdown table has
its rows, -d runs the tests after that many tokens of context, and bad arguments are
refused. No speed is asserted: CI machines vary.

usage: check_bench.py VKLLM_BENCH PLUGIN     (model from $VKLLM_SHARED_DIR/models)
Exit: 0 pass, 1 fail, 77 skip (no model, or no Vulkan device)."""
import json
import os
import subprocess
import sys

failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures += 1
    return cond


def run(args):
    print("run: " + " ".join(args), flush=True)
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


def main():
    bench, plugin = sys.argv[1], sys.argv[2]
    shared = os.environ.get("VKLLM_SHARED_DIR", "../shared")
    model = os.path.join(shared, "models", "stories260K.gguf")
    if not os.path.exists(model):
        print(f"SKIP: {model} not found (../shared is absent)")
        return 77

    p = run([bench, "--plugin", plugin, "-m", model, "-p", "16", "-n", "8", "-r", "2",
             "-o", "json", "-v", "--validation"])
    if p.returncode == 3:
        print("SKIP: no Vulkan device: " + p.stderr.strip())
        return 77
    if not check(p.returncode == 0, f"json run exits 0 (got {p.returncode}; stderr: {p.stderr.strip()[-500:]})"):
        return 1
    try:
        rows = json.loads(p.stdout)
    except json.JSONDecodeError as e:
        check(False, f"output parses as JSON: {e}\n{p.stdout[:2000]}")
        return 1
    check(isinstance(rows, list) and len(rows) == 2, f"2 rows (got {len(rows) if isinstance(rows, list) else type(rows)})")
    by_test = {r.get("test"): r for r in rows}
    check(set(by_test) == {"pp16", "tg8"}, f"tests pp16 and tg8 (got {sorted(by_test)})")
    for name, r in by_test.items():
        ts = r["samples_ts"]
        check(len(ts) == 2 and all(x > 0 for x in ts), f"{name}: 2 positive samples {ts}")
        check(r["ts_min"] <= r["ts_median"] <= r["ts_max"] and r["ts_median"] > 0,
              f"{name}: 0 < min {r['ts_min']:.1f} <= median {r['ts_median']:.1f} <= max {r['ts_max']:.1f} t/s")
        check(r["n_params"] > 0 and r["weight_bytes"] > 0 and r["file_bytes"] > r["weight_bytes"] // 2,
              f"{name}: params {r['n_params']}, weight bytes {r['weight_bytes']}, file {r['file_bytes']} bytes")
        check(r["load_first_s"] > 0 and r["load_second_s"] > 0,
              f"{name}: load {r['load_first_s']:.3f} s then {r['load_second_s']:.3f} s")
        check(r["type"] != "" and r["device"] != "", f"{name}: type '{r['type']}', device '{r['device']}'")
        check(r["validation_messages"] == 0, f"{name}: validation messages {r['validation_messages']}")
        prof = r.get("profile")
        if check(prof is not None and len(prof["ops"]) > 0, f"{name}: has a per-op profile"):
            ops = prof["ops"]
            share = sum(o["share"] for o in ops)
            count = sum(o["count"] for o in ops)
            ms = sum(o["ms"] for o in ops)
            check(abs(share - 1) < 1e-3, f"{name}: profile shares sum to {share:.5f}")
            check(count == prof["dispatches"], f"{name}: op counts sum to the {prof['dispatches']} dispatches")
            check(abs(ms - prof["gpu_sum_ms"]) <= 1e-3 * max(1.0, ms), f"{name}: op times sum to {ms:.3f} ms")
            check(all(o["label"] for o in ops) and ops == sorted(ops, key=lambda o: -o["ms"]),
                  f"{name}: labels non-empty, sorted by time (top: {ops[0]['label']})")
    pp, tg = by_test.get("pp16"), by_test.get("tg8")
    if pp and tg:
        check(pp["profile"]["n_tokens"] == 16 and tg["profile"]["n_tokens"] == 1,
              "profiles: prompt batch of 16 tokens, decode step of 1")
        bw = tg["bandwidth_gbs"]
        if check(bw is not None and bw > 0, f"bandwidth measured: {bw} GB/s"):
            bound = bw * 1e9 / tg["weight_bytes"]
            check(abs(tg["bound_ts"] - bound) <= 1e-3 * bound, f"tg bound {tg['bound_ts']:.0f} t/s = bandwidth / weight bytes")
            check(abs(tg["bound_fraction"] - tg["ts_median"] / tg["bound_ts"]) < 1e-4,
                  f"tg fraction of bound {tg['bound_fraction']:.5f}")
        check(pp["bound_ts"] is None, "pp rows have no bound")

    p = run([bench, "--plugin", plugin, "-m", model + "," + model, "-p", "8", "-n", "4", "-r", "1",
             "--no-bandwidth"])
    if check(p.returncode == 0, f"md run exits 0 (stderr: {p.stderr.strip()[-500:]})"):
        lines = p.stdout.splitlines()
        table = [l for l in lines if l.startswith("| ") and "---" not in l]
        check(len(table) == 5 and table[0].startswith("| model | type | size | params | test |"),
              f"md table: header + 4 rows for two models (got {len(table)} lines)")
        check(sum(" pp8 " in l for l in table) == 2 and sum(" tg4 " in l for l in table) == 2,
              "md rows pp8 and tg4 for each model")
        check(any(l.startswith("device: ") for l in lines) and sum(l.startswith("load ") for l in lines) == 2,
              "md footer: device line and two load lines")

    # -d: the same tests after 20 tokens of context (llama-bench's "@ d20" rows).
    p = run([bench, "--plugin", plugin, "-m", model, "-p", "8", "-n", "4", "-d", "0,20", "-r", "1",
             "-o", "json", "-v", "--no-bandwidth"])
    if check(p.returncode == 0, f"depth run exits 0 (stderr: {p.stderr.strip()[-500:]})"):
        rows = {r["test"]: r for r in json.loads(p.stdout)}
        check(sorted(rows) == ["pp8", "pp8 @ d20", "tg4", "tg4 @ d20"], f"rows at depths 0 and 20 (got {sorted(rows)})")
        deep_pp, deep_tg = rows.get("pp8 @ d20"), rows.get("tg4 @ d20")
        if deep_pp and deep_tg:
            check(deep_pp["n_depth"] == 20 and deep_tg["n_depth"] == 20 and rows["tg4"]["n_depth"] == 0,
                  "n_depth 20 on the deep rows, 0 on the others")
            check(deep_pp["profile"]["n_past"] == 20 and deep_pp["profile"]["n_tokens"] == 8,
                  f"pp8 @ d20 profile: 8 tokens after {deep_pp['profile']['n_past']}")
            check(deep_tg["profile"]["n_past"] == 24 and deep_tg["ts_median"] > 0,
                  f"tg4 @ d20 profile: the step after {deep_tg['profile']['n_past']} tokens")

    for bad in (["-p", "abc"], ["-o", "xml"], ["-r", "0"], ["-d", "x"], []):
        p = run([bench, "--plugin", plugin] + (["-m", model] if bad else []) + bad)
        check(p.returncode == 2 and "error:" in p.stderr, f"bad arguments {bad} -> exit 2 ({p.stderr.strip()})")

    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
