#!/usr/bin/env bash
# Build llama.cpp with its Vulkan backend: the peer that vkllm's benchmarks are
# measured beside (same run, same device). See BENCHMARKS.md.
#
# usage: samples/bench/build_llama_cpp_peer.sh [LLAMA_CPP_SRC] BUILD_DIR [--cpu]
#
#   LLAMA_CPP_SRC  a llama.cpp source tree. When left out, the script fetches
#                  the llama-cpp-python 0.3.36 sdist from PyPI (it vendors
#                  llama.cpp under vendor/llama.cpp; upstream commit
#                  0c1e57098bba43ac29e6e3b677cdceebdd22334f) and extracts it
#                  into BUILD_DIR/src. Nothing else is downloaded.
#   BUILD_DIR      where to build; binaries land in BUILD_DIR/bin.
#   --cpu          build without the Vulkan backend (CPU reference numbers).
#
# Needs Debian packages: cmake g++ glslc libvulkan-dev spirv-headers
#   (apt-get install -y cmake g++ glslc libvulkan-dev spirv-headers)
# and python3 with pip when LLAMA_CPP_SRC is left out.
# JOBS (default 2) sets the build parallelism.
set -euo pipefail

SDIST_VERSION=0.3.36
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
TARGETS="llama-bench llama-simple llama-completion llama-quantize"

die() { echo "build_llama_cpp_peer.sh: $*" >&2; exit 1; }

vulkan=ON
args=()
for a in "$@"; do
    case "$a" in
        --cpu) vulkan=OFF ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) args+=("$a") ;;
    esac
done
case ${#args[@]} in
    1) src=""; build=${args[0]} ;;
    2) src=${args[0]}; build=${args[1]} ;;
    *) die "usage: $0 [LLAMA_CPP_SRC] BUILD_DIR [--cpu]" ;;
esac

missing=""
command -v cmake >/dev/null || missing+=" cmake"
command -v g++ >/dev/null || missing+=" g++"
if [ "$vulkan" = ON ]; then
    command -v glslc >/dev/null || missing+=" glslc"
    [ -f /usr/include/vulkan/vulkan.hpp ] || missing+=" libvulkan-dev"
    [ -d /usr/share/cmake/SPIRV-Headers ] || missing+=" spirv-headers"
fi
[ -z "$missing" ] || die "missing Debian packages; run: apt-get install -y$missing"

mkdir -p "$build"
build=$(cd "$build" && pwd)

if [ -z "$src" ]; then
    mkdir -p "$build/dl" "$build/src"
    tarball="$build/dl/llama_cpp_python-$SDIST_VERSION.tar.gz"
    if [ ! -f "$tarball" ]; then
        python3 -m pip download --no-deps --no-binary :all: \
            "llama-cpp-python==$SDIST_VERSION" -d "$build/dl"
    fi
    echo "$SDIST_SHA256  $tarball" | sha256sum -c - || die "sdist checksum mismatch"
    if [ ! -d "$build/src/llama_cpp_python-$SDIST_VERSION" ]; then
        tar -xzf "$tarball" -C "$build/src"
    fi
    src="$build/src/llama_cpp_python-$SDIST_VERSION/vendor/llama.cpp"
fi
if [ ! -f "$src/CMakeLists.txt" ] || [ ! -d "$src/ggml" ]; then
    die "$src is not a llama.cpp source tree"
fi
src=$(cd "$src" && pwd)

# Debian 12's Vulkan headers (1.3.239) predate VK_EXT_layer_settings, which
# ggml-vulkan.cpp uses unguarded when it creates the instance. The settings
# only take effect in GGML_VULKAN_VALIDATE builds (they turn on the validation
# layer's best-practice checks); wrap them in #ifdef so that other builds
# compile against the older headers and behave the same.
if [ "$vulkan" = ON ] && ! grep -q VK_EXT_layer_settings /usr/include/vulkan/vulkan_core.h; then
    python3 - "$src/ggml/src/ggml-vulkan/ggml-vulkan.cpp" <<'EOF'
import sys
path = sys.argv[1]
text = open(path).read()
mark = "/* build_llama_cpp_peer.sh: VK_EXT_layer_settings guard */"
if mark in text or "vk::LayerSettingEXT" not in text:
    sys.exit(0)
start = text.index("    VkBool32 enable_best_practice = layer_settings;\n")
call = "    vk::InstanceCreateInfo instance_create_info(vk::InstanceCreateFlags{}, &app_info, layers, extensions, &layer_setting_info);\n"
end = text.index(call, start) + len(call)
plain = call.replace(", &layer_setting_info);", ");")
text = (text[:start] + "#ifdef VK_EXT_layer_settings " + mark + "\n" + text[start:end]
        + "#else\n" + plain + "#endif\n" + text[end:])
open(path, "w").write(text)
print("patched", path, "(VK_EXT_layer_settings guard)")
EOF
fi

cmake -S "$src" -B "$build" \
    -DGGML_VULKAN=$vulkan -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF \
    -DCMAKE_BUILD_TYPE=Release
# shellcheck disable=SC2086
cmake --build "$build" -j "${JOBS:-2}" --target $TARGETS
for t in $TARGETS; do
    [ -x "$build/bin/$t" ] || die "missing $build/bin/$t after the build"
done
echo "built $TARGETS in $build/bin"
if [ "$vulkan" = ON ]; then
    # ggml-vulkan skips CPU-type devices (lavapipe) unless they are named
    echo "on lavapipe run with: VK_DRIVER_FILES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json GGML_VK_VISIBLE_DEVICES=0"
fi
