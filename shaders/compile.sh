#!/bin/sh
# Compiles one GLSL compute shader variant to SPIR-V and validates it.
# usage: compile.sh GLSLANG SPIRV_VAL INPUT OUTPUT DEPFILE [-DNAME=VALUE ...]
set -eu
glslang=$1; spirv_val=$2; input=$3; output=$4; depfile=$5
shift 5
"$glslang" -V --quiet --target-env vulkan1.2 --depfile "$depfile" "$@" -o "$output" "$input"
"$spirv_val" --target-env vulkan1.2 "$output"
