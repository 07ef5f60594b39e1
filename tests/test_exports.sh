#!/bin/sh
# The plugin must export exactly one symbol, vkllm_entry, as a function (see vkllm.h):
# anything else leaks internals into every host's symbol namespace.
# usage: test_exports.sh PLUGIN.so [NM]
set -u
plugin=$1
nm=${2:-nm}
if ! command -v "$nm" >/dev/null 2>&1; then
    echo "SKIP: $nm not found (Debian package binutils)"
    exit 77
fi
if ! syms=$("$nm" -D --defined-only "$plugin"); then
    echo "FAIL: $nm -D --defined-only $plugin failed"
    exit 1
fi
echo "dynamic symbols defined by $plugin:"
echo "$syms" | sed 's/^/  /'
count=$(echo "$syms" | grep -c .)
# nm lines: VALUE TYPE NAME; T = a function in the text section.
if [ "$count" -ne 1 ]; then
    echo "FAIL: $count exported symbols, want exactly 1 (vkllm_entry)"
    exit 1
fi
if ! echo "$syms" | grep -Eq '^[0-9a-fA-F]+ T vkllm_entry$'; then
    echo "FAIL: the one exported symbol is not the function vkllm_entry"
    exit 1
fi
echo "PASS: exactly one exported symbol, the function vkllm_entry"
exit 0
