#!/usr/bin/env python3
"""Self-test of check_abi.py's policy on scratch plugins.

Builds a tiny plugin (vkllm_entry + a table) against include/vkllm/vkllm.h, records its
ABI, then rebuilds it against edited copies of the header and checks the verdict of
check_abi.py for each edit: appending at the end of a versioned struct passes, every
other layout change fails. This keeps the policy honest when libabigail changes.

usage: policy_selftest.py HEADERS_DIR CHECK_ABI_PY CC [CC ARGS...]
Exit status: 0 pass, 1 fail, 77 skip (abidw/abidiff absent).
"""
import os
import shutil
import subprocess
import sys
import tempfile

# The plugin defines an opaque handle in a private header, as the real one does: changing
# it is not an ABI change.
PRIVATE_H = "struct vkllm_instance_t { int a; };\n"
PLUGIN_C = r"""
#include "vkllm.h"
#include "private.h"
static const char *status_string(vkllm_status s) { (void)s; return "x"; }
static vkllm_status instance_destroy(vkllm_instance i) { return i ? i->a : 0; }
static const vkllm_api table = { .struct_size = sizeof(vkllm_api), .abi_version = 1,
    .plugin_name = "scratch", .plugin_version = "0", .status_string = status_string,
    .instance_destroy = instance_destroy };
VKLLM_EXPORT vkllm_status vkllm_entry(uint32_t lo, uint32_t hi, const vkllm_api **out)
{
    if (lo > 1 || hi < 1)
        return VKLLM_ERR_ABI_VERSION;
    *out = &table;
    return VKLLM_OK;
}
"""

API_END = ("                                    const vkllm_lora *adapters, uint32_t n_adapters, vkllm_model *out);\n"
           "} vkllm_api;")
DEV_END = "    uint32_t features;"

# (name, expected exit status of check_abi.py, [(old text, new text), ...]
#  [, private.h [, extra compiler flags]])
CASES = [
    ("unchanged", 0, []),
    ("change the plugin's private handle struct", 0, [],
     "struct vkllm_instance_t { double x[3]; int a; };\n"),
    ("plugin built without debug info: skip", 77, [], PRIVATE_H, ["-g0"]),
    ("comment only", 0, [("/* ABI versions.", "/* A new comment.\n * ABI versions.")]),
    ("append a function to vkllm_api", 0,
     [(API_END, API_END.replace("} vkllm_api;",
                                "    vkllm_status (*new_fn)(vkllm_context c, uint32_t x);\n"
                                "} vkllm_api;"))]),
    ("append 64 bits to vkllm_device_info", 0,
     [(DEV_END, DEV_END + "\n    uint32_t new_a; uint32_t new_b; uint32_t new_c;")]),
    ("insert a function in the middle of vkllm_api", 1,
     [("    const char *(*last_error)(void);",
       "    const char *(*last_error)(void);\n    void (*new_fn)(void);")]),
    ("append to vkllm_api and insert in the middle", 1,
     [(API_END, API_END.replace("} vkllm_api;", "    void (*new_fn)(void);\n} vkllm_api;")),
      ("    const char *(*last_error)(void);",
       "    const char *(*last_error)(void);\n    void (*new_fn2)(void);")]),
    ("change a parameter type of a table function", 1,
     [("(*kv_truncate)(vkllm_context ctx, uint32_t n_keep)",
       "(*kv_truncate)(vkllm_context ctx, uint64_t n_keep)")]),
    ("append to vkllm_api and change a member type elsewhere", 1,
     [(API_END, API_END.replace("} vkllm_api;", "    void (*new_fn)(void);\n} vkllm_api;")),
      ("    uint64_t seed;", "    uint32_t seed;")]),
    ("remove the last function of vkllm_api", 1,
     [("    vkllm_status (*model_load_lora)(vkllm_instance instance, const vkllm_model_params *params,\n"
       "                                    const vkllm_lora *adapters, uint32_t n_adapters, vkllm_model *out);\n"
       "} vkllm_api;",
       "} vkllm_api;")]),
    ("widen vkllm_status", 1,
     [("typedef int32_t vkllm_status;", "typedef int64_t vkllm_status;")]),
    ("insert a member in the middle of vkllm_device_info", 1,
     [("    uint32_t vendor_id;", "    uint32_t new_a;\n    uint32_t vendor_id;")]),
    ("append into the tail padding of vkllm_device_info", 1,
     [(DEV_END, DEV_END + "\n    uint32_t new_a;")]),
]


def build(cc, include_dir, out_so, private_h=PRIVATE_H, flags=()):
    """Builds the scratch plugin; its source and private header live apart from the
    public header directory, as in the real tree."""
    src_dir = os.path.join(os.path.dirname(out_so), "src")
    os.makedirs(src_dir, exist_ok=True)
    src = os.path.join(src_dir, "plugin.c")
    with open(src, "w") as f:
        f.write(PLUGIN_C)
    with open(os.path.join(src_dir, "private.h"), "w") as f:
        f.write(private_h)
    cmd = cc + ["-g", "-O1", "-fPIC", "-shared", "-fvisibility=hidden", "-I", include_dir,
                src, "-o", out_so] + list(flags)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("FAIL: %s\n%s" % (" ".join(cmd), r.stderr))


def main():
    headers, check, cc = sys.argv[1], sys.argv[2], sys.argv[3:]
    if not shutil.which("abidw") or not shutil.which("abidiff"):
        print("SKIP: abidw/abidiff not found (Debian package abigail-tools)")
        return 77
    with open(os.path.join(headers, "vkllm.h")) as f:
        header = f.read()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        base_dir = os.path.join(tmp, "base", "include")
        os.makedirs(base_dir)
        shutil.copy(os.path.join(headers, "vkllm.h"), base_dir)
        base_so = os.path.join(tmp, "base", "plugin.so")
        build(cc, base_dir, base_so)
        record = os.path.join(tmp, "base.abi")
        r = subprocess.run([sys.executable, check, "--update", base_dir, record, base_so],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout + r.stderr)
            print("FAIL: could not record the scratch ABI")
            return 1
        for i, case in enumerate(CASES):
            name, want, edits = case[:3]
            private_h = case[3] if len(case) > 3 else PRIVATE_H
            flags = case[4] if len(case) > 4 else []
            d = os.path.join(tmp, "case%d" % i)
            os.makedirs(os.path.join(d, "include"))
            text = header
            for old, new in edits:
                if old not in text:
                    print("FAIL: case '%s': header text to edit not found: %r" % (name, old))
                    return 1
                text = text.replace(old, new, 1)
            with open(os.path.join(d, "include", "vkllm.h"), "w") as f:
                f.write(text)
            so = os.path.join(d, "plugin.so")
            build(cc, os.path.join(d, "include"), so, private_h, flags)
            r = subprocess.run([sys.executable, check, os.path.join(d, "include"), record,
                                so],
                               capture_output=True, text=True)
            verdict = [l for l in r.stdout.splitlines()
                       if l.startswith(("PASS", "FAIL", "SKIP"))]
            ok = r.returncode == want
            failures += not ok
            print("%-4s %-55s want %d got %d: %s" % ("ok" if ok else "BAD", name, want,
                                                   r.returncode,
                                                   verdict[-1][:90] if verdict else "?"))
            if not ok:
                print(r.stdout + r.stderr)
    print("%d/%d cases as expected" % (len(CASES) - failures, len(CASES)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
