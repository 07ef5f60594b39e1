#!/usr/bin/env bash
# Installs everything vkllm's build and tests need on Debian 12 (bookworm): compilers,
# meson, the Vulkan headers/loader/volk, lavapipe (Mesa's CPU Vulkan driver, the test
# device), the validation layer, shader tools, abigail-tools for the ABI check.
# Run as root or with sudo: `sudo bash .ci/install-deps.sh`.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

packages=(
  meson ninja-build gcc clang pkg-config libc6-dev python3 python3-pip
  glslang-tools spirv-tools
  libvulkan-dev libvulkan-volk-dev mesa-vulkan-drivers vulkan-validationlayers vulkan-tools
  abigail-tools binutils libclang-rt-14-dev
)

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  as_root=(sudo)
fi
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y "${packages[@]}"
