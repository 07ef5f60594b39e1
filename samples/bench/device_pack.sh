#!/usr/bin/env bash
# Pack what samples/bench/device_check.sh needs on a GPU machine that has no compilers,
# package registry or meson of the right version: a release build of vkllm, its test
# list, llama.cpp's Vulkan peer, the Vulkan loader and validation layer (Debian
# packages), the gguf Python package and a few model files. Run from the repo root;
# everything lands in .gpu/ (keep it out of git: echo /.gpu/ >> .git/info/exclude).
#
# usage: samples/bench/device_pack.sh [LLAMA_CPP_BUILD_DIR]   (default /work/llama-vulkan-build)
#
# The build directory is build-gpu/, made with -Dwerror=false: some gcc -O3 builds warn
# about variables that are set on every path that uses them (maybe-uninitialized).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
llama_build=${1:-/work/llama-vulkan-build}
shared=../shared/models

rm -rf .gpu && mkdir -p .gpu/debs .gpu/shared/models .gpu/whl
[ -d build-gpu ] || meson setup build-gpu -Dbuildtype=release -Dwerror=false
ninja -C build-gpu
meson introspect build-gpu --tests > .gpu/tests.json
pwd > .gpu/source_root  # the paths in tests.json start here
git rev-parse HEAD > .gpu/commit; git status --short >> .gpu/commit
# Executables and shared objects only (no object files), plus the test scripts' inputs.
find build-gpu -type f \( -perm -u+x -o -name '*.so' \) ! -path '*.p/*' -print0 |
    tar --null -T - -cf - | xz -T0 -6 > .gpu/build.tar.xz

# llama.cpp's binaries (RUNPATH points at their build dir; LD_LIBRARY_PATH is set there),
# with this machine's libgomp in case the GPU machine lacks it.
tar -C "$llama_build" -cf - bin | xz -T0 -6 > .gpu/llama-bin.tar.xz
cp "$(ldconfig -p | sed -n 's/.*libgomp.so.1 .*=> //p' | head -1)" .gpu/

# NVIDIA's Vulkan ICD is libGLX_nvidia, which needs the glvnd libraries.
(cd .gpu/debs && apt-get download libvulkan1 vulkan-validationlayers \
    libglvnd0 libglx0 libgl1 libegl1 libgles2 libopengl0)
python3 -m pip download -q --no-deps gguf==0.19.0 -d .gpu/whl
for f in stories260K.gguf ggml-vocab-llama-spm.gguf ggml-vocab-llama-spm.gguf.inp ggml-vocab-gpt-2.gguf \
         ggml-vocab-llama-spm.gguf.out stories260K.expected.md; do
    [ -f "$shared/$f" ] && cp "$shared/$f" .gpu/shared/models/
done
du -sh .gpu
