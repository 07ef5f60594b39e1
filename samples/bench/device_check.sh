#!/usr/bin/env bash
# On a machine with a real GPU and none of our build tools: run vkllm's test suite and
# the benchmarks beside llama.cpp's Vulkan backend, from the kit that
# samples/bench/device_pack.sh put in .gpu/. Run from the repo root. Results go to $OUT
# (default ./device-out): summary.txt (what the benchmarks and tests printed) and
# logs.tar.gz (every test's output, the JSON results).
#
# STEPS (default "tests bench sweep") chooses what runs (sweep: decode without the fusion,
# then matrix-vector shapes, SHAPES overrides the list; decode at depth 4096 with attention's
# keys split or not; prompt tiles of 64 and 128; mixture-of-experts prompts grouped by expert
# or per token; GPU sampling on and off); MODELS_1B=0 and MODELS_7B=0 skip the 1.1B and 6.7B models;
# BENCH_ARGS (default "-p 512 -n 128 -r 3") goes to both vkllm-bench and llama-bench.
# Each step has its own time limit, so one that hangs costs its limit, not the run.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD
kit=$root/.gpu
out=${OUT:-$root/device-out}
steps=${STEPS:-tests bench sweep}
bench_args=${BENCH_ARGS:--p 512 -n 128 -r 3}
mkdir -p "$out/logs" && : > "$out/summary.txt"
say() { echo "$*" | tee -a "$out/summary.txt"; }
t0=$(date +%s)
stamp() { say "== $* (t+$(( $(date +%s) - t0 )) s)"; }

# The Vulkan loader and the GL vendor-neutral dispatch libraries (NVIDIA's Vulkan driver
# lives in libGLX_nvidia, which needs them) into /, the validation layer beside it
# (unpacking more into / can break the system), the GPU's ICD manifest.
for f in "$kit"/debs/*.deb; do
    case "$f" in *vulkan-validationlayers*) ;; *) dpkg -x "$f" / ;; esac
done
ldconfig
mkdir -p /opt/vkllm-vl && dpkg -x "$kit"/debs/vulkan-validationlayers_*.deb /opt/vkllm-vl
# The manifest names its library without a path; point it at the unpacked one.
vl=/opt/vkllm-vl/usr/share/vulkan/explicit_layer.d
sed -i "s|\"library_path\": *\"[^\"]*\"|\"library_path\": \"/opt/vkllm-vl/usr/lib/x86_64-linux-gnu/libVkLayer_khronos_validation.so\"|" \
    "$vl/VkLayer_khronos_validation.json"
export VK_LAYER_PATH=$vl
if [ -z "${VK_DRIVER_FILES:-}" ]; then
    for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json \
               /etc/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json; do
        [ -f "$icd" ] && export VK_DRIVER_FILES=$icd && break
    done
fi
say "VK_DRIVER_FILES=${VK_DRIVER_FILES:-unset}; binaries built from $(head -1 "$kit/commit")"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv \
    2>&1 | tee -a "$out/summary.txt"

# Binaries built elsewhere, at the paths their test list names.
tar -xJf "$kit/build.tar.xz"
mkdir -p "$kit/llama" && tar -xJf "$kit/llama-bin.tar.xz" -C "$kit/llama"
llama_bin=$kit/llama/bin
plugin=$root/build-gpu/plugins/vulkan/libvkllm_vulkan.so
export VKLLM_PLUGIN=$plugin  # the samples' built-in default names the build machine's path
build-gpu/samples/vkllm-run --plugin "$plugin" --list-devices 2>&1 | tee -a "$out/summary.txt" ||
    VK_LOADER_DEBUG=error,driver build-gpu/samples/vkllm-run --plugin "$plugin" --list-devices 2>&1 |
    tail -30 | tee -a "$out/summary.txt"

# Benchmark models, made while the tests run (CPU work): the small ones, and apart (it takes
# a minute or two) a LLaMA-7B-shaped one, large enough to be bandwidth-bound.
models=$root/.gpu-models
mkdir -p "$models"
quantize() { # F16_FILE OUT_FILE TYPE
    LD_LIBRARY_PATH=$llama_bin:$kit:$LD_LIBRARY_PATH "$llama_bin/llama-quantize" --pure "$1" "$2" "$3" >/dev/null
}
if [[ " $steps " == *" bench "* ]]; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/vkllm-site "$kit"/whl/*.whl
    export PYTHONPATH=/tmp/vkllm-site
    mb="python3 samples/bench/make_bench_models.py $models --vocab $kit/shared/models/ggml-vocab-llama-spm.gguf"
    (
        $mb --shape 134M --types F16,Q8_0,Q4_0
        $mb --shape 8x134M --types Q4_0
        if [ "${MODELS_1B:-1}" = 1 ]; then
            $mb --shape 1.1B --types F16
            # llama-quantize (multi-threaded) instead of the gguf package's numpy quantizers,
            # which take minutes at this size; --pure: every matrix in the one type.
            for t in Q8_0 Q4_0; do
                quantize "$models/rand-llama-1.1B.F16.gguf" "$models/rand-llama-1.1B.$t.gguf" $t
            done
        fi
        ls -la "$models"
    ) > "$out/logs/make_models.log" 2>&1 &
    models_pid=$!
    if [ "${MODELS_7B:-1}" = 1 ]; then
        (
            $mb --shape 6.7B --types F16 &&
                quantize "$models/rand-llama-6.7B.F16.gguf" "$models/rand-llama-6.7B.Q4_0.gguf" Q4_0
            ls -la "$models"
        ) > "$out/logs/make_models_7b.log" 2>&1 &
        models_7b_pid=$!
    fi
fi

if [[ " $steps " == *" tests "* ]]; then
    # The Vulkan suites; abi and core are CPU-only and need this machine's tools.
    stamp "tests (system Vulkan driver, validation layer on)"
    timeout 300 python3 tests/tools/run_test_list.py "$kit/tests.json" -j 8 \
        --suite ops --suite runtime --suite model --suite conformance \
        --build-dir "$root/build-gpu" \
        --log-dir "$out/logs/tests" \
        --replace "$(cat "$kit/source_root")/../shared=$kit/shared" \
        --replace "$(cat "$kit/source_root")=$root" \
        > "$out/logs/tests.txt" 2>&1
    grep -v '^OK ' "$out/logs/tests.txt" | tee -a "$out/summary.txt"
    grep -h -m1 -i 'validation' "$out/logs/tests/runtime.log" | tee -a "$out/summary.txt"
fi

if [[ " $steps " == *" bench "* ]]; then
    stamp "waiting for the benchmark models"
    wait "$models_pid"
    tail -8 "$out/logs/make_models.log" | tee -a "$out/summary.txt"
    list="$kit/shared/models/stories260K.gguf"
    for f in rand-llama-134M.{F16,Q8_0,Q4_0} rand-mixtral-8x134M.Q4_0 rand-llama-1.1B.{F16,Q8_0,Q4_0} \
        rand-llama-6.7B.{F16,Q4_0}; do
        list="$list $models/$f.gguf"
    done
    first=1
    for m in $list; do
        if [[ "$m" == *6.7B* ]] && [ -n "${models_7b_pid:-}" ]; then
            stamp "waiting for the 6.7B models"
            wait "$models_7b_pid"
            models_7b_pid=
            tail -4 "$out/logs/make_models_7b.log" | tee -a "$out/summary.txt"
        fi
        [ -f "$m" ] || continue
        name=$(basename "$m" .gguf)
        stamp "vkllm-bench $name"
        bw=--no-bandwidth
        [ $first = 1 ] && bw= && first=0
        timeout 150 build-gpu/samples/vkllm-bench --plugin "$plugin" -m "$m" $bench_args \
            $bw 2>&1 | tee "$out/logs/vkllm-$name.md" | grep -v '^$' | tee -a "$out/summary.txt"
        stamp "llama-bench $name"
        GGML_VK_VISIBLE_DEVICES=0 LD_LIBRARY_PATH=$llama_bin:$kit:$LD_LIBRARY_PATH timeout 150 "$llama_bin/llama-bench" \
            -m "$m" $bench_args -ngl 99 -o md 2> "$out/logs/llama-$name.err" |
            tee "$out/logs/llama-$name.md" | grep '|' | tee -a "$out/summary.txt"
    done
    for m in $models/rand-llama-1.1B.Q4_0.gguf $models/rand-llama-134M.Q4_0.gguf; do
        [ -f "$m" ] || continue
        stamp "vkllm-bench -v $(basename "$m")"
        timeout 90 build-gpu/samples/vkllm-bench --plugin "$plugin" -m "$m" -p 512 -n 32 -r 1 \
            --no-bandwidth -v > "$out/logs/profile-$(basename "$m" .gguf).txt" 2>&1
        sed -n '/^profile/,$p' "$out/logs/profile-$(basename "$m" .gguf).txt" | head -40 >> "$out/summary.txt"
    done
fi
if [[ " $steps " == *" sweep "* ]]; then
    # The t/s of vkllm-bench's row for TEST (e.g. tg128, 'tg64 @ d4096') on model M, the other
    # arguments passed on; assignments before the call set its environment.
    bench_ts() { # TEST M ARGS...
        local test=$1 m=$2
        shift 2
        timeout 90 build-gpu/samples/vkllm-bench --plugin "$plugin" -m "$m" "$@" --no-bandwidth 2>&1 |
            grep "| $test |" | cut -d'|' -f7
    }
    # On the 1.1B and 6.7B Q4_0 models:
    # - matrix-vector shapes (VKLLM_MATVEC_SHAPE=WG,ROWS), decode only. Session 2's H200 sweep
    #   found 4 rows best of 1, 2 and 4 at every workgroup size: this one looks past 4, and at
    #   subgroups with rows of their own (WG,ROWS,sg: no shared memory, every lane busy);
    # - prompts through the 64 x 64 shared-memory tiles (the default) or the 128 x 128 ones;
    # - decode after 4096 tokens of context: attention's keys split across workgroups (the
    #   default on GPUs) against one workgroup per head (VKLLM_ATTENTION_SPLIT=1), and the peer.
    for m in $models/rand-llama-1.1B.Q4_0.gguf $models/rand-llama-6.7B.Q4_0.gguf; do
        [ -f "$m" ] || continue
        name=$(basename "$m" .gguf)
        stamp "decode fusion off, then matvec shapes, $name"
        r=$(VKLLM_FUSE=off bench_ts tg128 "$m" -p 0 -n 128 -r 3)
        say "  VKLLM_FUSE=off tg128 $r"
        for shape in ${SHAPES:-128,4 128,8 256,8 32,2,sg 32,4,sg 64,4,sg 128,4,sg 128,8,sg}; do
            r=$(VKLLM_MATVEC_SHAPE=$shape bench_ts tg128 "$m" -p 0 -n 128 -r 3)
            say "  VKLLM_MATVEC_SHAPE=$shape tg128 $r"
        done
        stamp "prompt tiles 64 and 128, $name"
        for tile in 64 128; do
            r=$(VKLLM_TILED=$tile bench_ts pp512 "$m" -p 512 -n 0 -r 3)
            say "  VKLLM_TILED=$tile pp512 $r"
        done
        stamp "decode at depth 4096, attention split on/off, $name"
        for split in "" 1; do
            r=$(VKLLM_ATTENTION_SPLIT=$split bench_ts 'tg64 @ d4096' "$m" -p 0 -n 64 -d 4096 -r 3)
            say "  VKLLM_ATTENTION_SPLIT=${split:-default} tg64 @ d4096 $r"
        done
        GGML_VK_VISIBLE_DEVICES=0 LD_LIBRARY_PATH=$llama_bin:$kit:$LD_LIBRARY_PATH timeout 120 "$llama_bin/llama-bench" \
            -m "$m" -p 0 -n 64 -d 4096 -r 3 -ngl 99 -o md 2>/dev/null | grep 'tg64' | tee -a "$out/summary.txt"
    done
    # Mixture-of-experts prompts: tokens grouped by expert into matrix-matrix tiles (the
    # default) against matrix-vector products per token.
    m=$models/rand-mixtral-8x134M.Q4_0.gguf
    if [ -f "$m" ]; then
        stamp "MoE prompts grouped or per token, $(basename "$m" .gguf)"
        for g in on off; do
            r=$(VKLLM_MOE_GROUPED=$g bench_ts pp512 "$m" -p 512 -n 0 -r 3)
            say "  VKLLM_MOE_GROUPED=$g pp512 $r"
        done
    fi
    # Sampling candidates on the GPU (the default there) against the host sampler over the
    # read-back row: vkllm-run's generation speed, which includes sampling (the bench's does not).
    for m in $models/rand-llama-1.1B.Q4_0.gguf $models/rand-llama-134M.Q4_0.gguf; do
        [ -f "$m" ] || continue
        stamp "GPU sampling on/off, $(basename "$m" .gguf)"
        for mode in on off; do
            for args in "--temp 0" "--temp 0.8 --top-k 40 --top-p 0.95 --min-p 0.05"; do
                r=$(VKLLM_GPU_SAMPLING=$mode timeout 60 build-gpu/samples/vkllm-run --plugin "$plugin" -m "$m" \
                    -n 256 -s 1 $args 2>&1 >/dev/null | grep '^generation:')
                say "  VKLLM_GPU_SAMPLING=$mode $args: $r"
            done
        done
    done
fi
stamp "done"
tar -czf "$out/logs.tar.gz" -C "$out" logs && rm -rf "$out/logs"
