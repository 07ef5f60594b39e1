#!/usr/bin/env python3
"""Checks that a built plugin keeps the recorded ABI (tests/abi/vkllm_vulkan.abi).

Policy: the ABI may grow only by appending members at the end of the versioned structs
(those whose first member is `size` or `struct_size`: vkllm_api and the parameter/info
structs). Every other difference reported by abidiff fails: a member inserted in the
middle, removed, retyped or moved, a changed typedef, a removed symbol.

How: abidw describes the fresh library (only the types of include/vkllm). Members that
lie wholly past the recorded size of their versioned struct are dropped from that
description and the struct gets its recorded size back; what is left must be identical
to the record, which abidiff judges (exit status 0). abidiff's own suppression
"has_data_member_inserted_at = end" is not used: with libabigail 2.2 it also hid retyped
and inserted members of matching structs (see README.md here).

usage: check_abi.py [--update] [--abidw P] [--abidiff P] HEADERS_DIR RECORD LIBRARY
Exit status: 0 compatible, 1 incompatible or error, 77 skipped (tools or debug info absent).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

SKIP = 77
VERSIONED_FIRST_MEMBERS = ("size", "struct_size")
# Options shared by the record and the fresh description, so the two are comparable and
# the record holds no machine-specific paths.
# --exported-interfaces-only + --drop-private-types keep only what vkllm_entry reaches and
# include/vkllm defines: the plugin's own definitions of the opaque handles (plugin.h)
# and everything internal stay out.
ABIDW_FLAGS = ["--exported-interfaces-only", "--drop-private-types", "--no-corpus-path",
               "--no-comp-dir-path", "--short-locs", "--no-architecture", "--no-elf-needed"]


def run_abidw(abidw, headers, lib, out_path):
    cmd = [abidw, "--headers-dir", headers] + ABIDW_FLAGS + ["--out-file", out_path, lib]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit("FAIL: %s exited with %d" % (" ".join(cmd), r.returncode))


def has_debug_info(root):
    # abidw emits one abi-instr per translation unit found in DWARF; none means no -g.
    return root.find(".//abi-instr") is not None


def struct_defs(root):
    """name -> list of class-decl elements that define (not just declare) a struct."""
    out = {}
    for el in root.iter("class-decl"):
        if el.get("is-declaration-only") == "yes" or not el.get("name"):
            continue
        out.setdefault(el.get("name"), []).append(el)
    return out


def member_name(dm):
    v = dm.find("var-decl")
    return v.get("name") if v is not None else "?"


def is_versioned(el):
    members = el.findall("data-member")
    return bool(members) and member_name(members[0]) in VERSIONED_FIRST_MEMBERS


def layout(el):
    """Bit offsets of a class-decl's members, in declaration order."""
    return [int(dm.get("layout-offset-in-bits")) for dm in el.findall("data-member")]


def project(new_root, old_root):
    """Drops, in place, the members appended to versioned structs since the record.

    A struct counts as extended only when its recorded members come first, unchanged in
    offset; anything else is left for abidiff to report. Returns (appended,
    in_padding): the members dropped, and members added without growing the struct
    (they sit in its old tail padding). The latter are refused: with the size
    unchanged, the struct's `size` field cannot tell a caller that knows the member
    from one that does not."""
    old_structs = {name: els[0] for name, els in struct_defs(old_root).items()}
    appended, in_padding = [], []
    for name, els in struct_defs(new_root).items():
        old = old_structs.get(name)
        if old is None:
            continue
        old_size = int(old.get("size-in-bits"))
        old_layout = layout(old)
        for el in els:
            if not is_versioned(el) or layout(el)[:len(old_layout)] != old_layout:
                continue
            grew = int(el.get("size-in-bits")) > old_size
            for dm in el.findall("data-member")[len(old_layout):]:
                what = "%s.%s (bit offset %s, recorded size %d bits)" % (
                    name, member_name(dm), dm.get("layout-offset-in-bits"), old_size)
                if grew:
                    appended.append(what)
                    el.remove(dm)
                else:
                    in_padding.append(what)
            if grew:
                el.set("size-in-bits", str(old_size))
    return sorted(set(appended)), sorted(set(in_padding))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--update", action="store_true",
                    help="rewrite RECORD from LIBRARY instead of checking")
    ap.add_argument("--abidw", default=shutil.which("abidw"))
    ap.add_argument("--abidiff", default=shutil.which("abidiff"))
    ap.add_argument("headers")
    ap.add_argument("record")
    ap.add_argument("library")
    a = ap.parse_args()

    if not a.abidw or not a.abidiff:
        print("SKIP: abidw/abidiff not found (Debian package abigail-tools)")
        return SKIP
    if not os.path.exists(a.library):
        print("FAIL: no library at %s" % a.library)
        return 1

    with tempfile.TemporaryDirectory() as tmp:
        fresh = os.path.join(tmp, "fresh.abi")
        run_abidw(a.abidw, a.headers, a.library, fresh)
        fresh_tree = ET.parse(fresh)
        if not has_debug_info(fresh_tree.getroot()):
            print("SKIP: %s has no DWARF debug info; build with -g "
                  "(buildtype debug or debugoptimized) to check the ABI" % a.library)
            return SKIP
        if "vkllm_api" not in struct_defs(fresh_tree.getroot()):
            print("FAIL: the debug info of %s does not describe struct vkllm_api: "
                  "is vkllm_entry declared with vkllm.h's types?" % a.library)
            return 1

        if a.update:
            shutil.copyfile(fresh, a.record)
            print("recorded the ABI of %s in %s" % (a.library, a.record))
            return 0

        if not os.path.exists(a.record):
            print("FAIL: no recorded ABI at %s (see tests/abi/README.md)" % a.record)
            return 1
        old_root = ET.parse(a.record).getroot()
        print("recorded ABI: %s (%d struct definitions)"
              % (a.record, len(struct_defs(old_root))))
        print("fresh ABI:    %s" % a.library)

        # 1. The unfiltered report, for information: shows appended members too.
        full = subprocess.run([a.abidiff, a.record, fresh], capture_output=True, text=True)
        if full.returncode & 1:
            sys.stderr.write(full.stdout + full.stderr)
            print("FAIL: abidiff failed (exit %d)" % full.returncode)
            return 1

        # 2. The verdict: the fresh ABI minus appended members must equal the record.
        notes, in_padding = project(fresh_tree.getroot(), old_root)
        if in_padding:
            print(full.stdout)
            print("FAIL: members appended inside the tail padding of a versioned struct:")
            for n in in_padding:
                print("  " + n)
            print("the struct's size did not change, so its size field cannot tell old "
                  "callers from new ones: make the new members grow the struct (for "
                  "instance add an explicit uint32_t reserved member)")
            return 1
        projected = os.path.join(tmp, "projected.abi")
        fresh_tree.write(projected, encoding="unicode")
        r = subprocess.run([a.abidiff, a.record, projected], capture_output=True, text=True)
        if r.returncode & 1:
            sys.stderr.write(r.stdout + r.stderr)
            print("FAIL: abidiff failed (exit %d)" % r.returncode)
            return 1
        if r.returncode != 0:
            print(r.stdout)
            print("FAIL: incompatible ABI change (abidiff exit %d after removing appended "
                  "members): only appending at the end of a versioned struct is allowed"
                  % r.returncode)
            return 1
        if notes:
            print("appended members (compatible):")
            for n in notes:
                print("  " + n)
            print("PASS: compatible extension of the recorded ABI; record it with "
                  "tests/abi/README.md's command when the extension is final")
        else:
            print("PASS: ABI identical to the record (abidiff exit 0)")
        return 0


if __name__ == "__main__":
    sys.exit(main())
