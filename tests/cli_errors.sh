#!/usr/bin/env bash
# cli_errors.sh — the diffscope CLI on bad input: every case must exit non-zero with one clear
# message naming the flag or file, never crash (exit ≥ 128 = signal), and leave no output file.
# Also --help on every subcommand, --version, and a good run on the fixture model.
set -u
BIN="${1:?usage: cli_errors.sh path/to/diffscope}"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0; passes=0
M=tests/fixtures/sd1_tiny

# expect_fail "description" "regex the message must match" command...
expect_fail() {
  local what="$1" pattern="$2"; shift 2
  local out rc
  out=$("$@" 2>&1 >/dev/null); rc=$?
  if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then
    echo "FAIL $what: exit $rc (want 1..127)"; fails=$((fails+1)); return
  fi
  if ! grep -qE -- "$pattern" <<<"$out"; then
    echo "FAIL $what: message does not match /$pattern/: $out"; fails=$((fails+1)); return
  fi
  passes=$((passes+1))
}
expect_ok() {
  local what="$1"; shift
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ $rc -ne 0 ]; then echo "FAIL $what: exit $rc: $out"; fails=$((fails+1)); return; fi
  passes=$((passes+1))
}
no_file() {
  if ls "$1"* >/dev/null 2>&1; then echo "FAIL $2: left $(ls "$1"*)"; fails=$((fails+1)); else passes=$((passes+1)); fi
}

# help / version
expect_ok "--version" "$BIN" --version
[ "$("$BIN" --version)" = "diffscope 0.1.0" ] || { echo "FAIL --version text"; fails=$((fails+1)); }
for c in generate info tokenize; do
  out=$("$BIN" $c --help); rc=$?
  if [ $rc -ne 0 ] || ! grep -q "usage: diffscope $c" <<<"$out"; then echo "FAIL $c --help"; fails=$((fails+1)); else passes=$((passes+1)); fi
done
expect_fail "no command" "usage" "$BIN"
expect_fail "unknown command" "unknown command 'frobnicate'" "$BIN" frobnicate

# flags
expect_fail "unknown flag" "unknown flag '--bogus'" "$BIN" generate --model $M --prompt x --out "$T/a.png" --bogus 1
expect_fail "missing --prompt" "--prompt TEXT is required" "$BIN" generate --model $M --out "$T/a.png"
expect_fail "missing value" "--steps needs a value" "$BIN" generate --model $M --prompt x --out "$T/a.png" --steps
expect_fail "bad integer" "--steps expects an integer between 1 and 1000, got 'ten'" "$BIN" generate --model $M --prompt x --out "$T/a.png" --steps ten
expect_fail "zero steps" "--steps expects an integer between 1 and 1000, got '0'" "$BIN" generate --model $M --prompt x --out "$T/a.png" --steps 0
expect_fail "negative seed" "--seed expects a non-negative integer" "$BIN" generate --model $M --prompt x --out "$T/a.png" --seed -3
expect_fail "nan guidance" "--guidance expects a number" "$BIN" generate --model $M --prompt x --out "$T/a.png" --guidance nan
expect_fail "bad sampler" "--sampler expects one of" "$BIN" generate --model $M --prompt x --out "$T/a.png" --sampler heun
expect_fail "width without height" "both --width and --height" "$BIN" generate --model $M --prompt x --out "$T/a.png" --width 64
expect_fail "width not a multiple" "multiples of" "$BIN" generate --model $M --prompt x --out "$T/a.png" --width 36 --height 32 --steps 1 --quiet
no_file "$T/a.png" "failed runs leave no image"

# devices: every command takes --device / --precision; bad values are refused before any work
expect_fail "bad --device" "--device expects cpu, cuda or auto, got 'gpu'" "$BIN" generate --model $M --prompt x --out "$T/a.png" --device gpu
expect_fail "bad --precision" "--precision expects fp32, fp16 or bf16, got 'fp8'" "$BIN" info --model $M --precision fp8
expect_fail "fp16 on the CPU" "CPU backend computes in fp32 only" "$BIN" generate --model $M --prompt x --out "$T/a.png" --device cpu --precision fp16
expect_ok "--device cpu" "$BIN" generate --model $M --prompt x --out "$T/cpu.png" --steps 1 --device cpu --quiet
if ! nvidia-smi -L >/dev/null 2>&1; then
  # no GPU here: asking for one is an error naming the flag; auto falls back with a one-line notice
  expect_fail "--device cuda without a GPU" "^diffscope: --device cuda: " "$BIN" generate --model $M --prompt x --out "$T/g.png" --steps 1 --device cuda
  no_file "$T/g.png" "a refused --device cuda leaves no image"
  expect_fail "DIFFSCOPE_DEVICE=cuda without a GPU" "^diffscope: --device cuda: " env DIFFSCOPE_DEVICE=cuda "$BIN" info --model $M
  out=$("$BIN" info --model $M --device auto 2>&1 >/dev/null)
  if [ "$(grep -c "running on the CPU" <<<"$out")" = 1 ]; then passes=$((passes+1)); else echo "FAIL auto notice: $out"; fails=$((fails+1)); fi
  out=$("$BIN" info --model $M --device auto --quiet 2>&1 >/dev/null)
  if [ -z "$out" ]; then passes=$((passes+1)); else echo "FAIL --quiet keeps the device notice: $out"; fails=$((fails+1)); fi
fi

# the model's recommended guidance (model_index.json "_diffscope_guidance_scale"): used when --guidance is absent
G="$T/guided"; cp -r $M "$G"
python3 - "$G/model_index.json" 3.5 <<'PY' || sed -i 's/^{/{"_diffscope_guidance_scale": 3.5,/' "$G/model_index.json"
import json, sys; p = sys.argv[1]; d = json.load(open(p)); d["_diffscope_guidance_scale"] = float(sys.argv[2]); json.dump(d, open(p, "w"))
PY
if "$BIN" info --model "$G" --quiet | grep -q "guidance (default):  3.5"; then passes=$((passes+1)); else echo "FAIL model guidance not read"; fails=$((fails+1)); fi
if "$BIN" info --model $M --quiet | grep -q "guidance (default):  7.5"; then passes=$((passes+1)); else echo "FAIL SD default guidance"; fails=$((fails+1)); fi
"$BIN" generate --model "$G" --prompt "a red circle" --steps 3 --seed 5 --out "$T/g_default.png" --quiet
"$BIN" generate --model $M --prompt "a red circle" --steps 3 --seed 5 --guidance 3.5 --out "$T/g_35.png" --quiet
"$BIN" generate --model $M --prompt "a red circle" --steps 3 --seed 5 --out "$T/g_75.png" --quiet
if cmp -s "$T/g_default.png" "$T/g_35.png" && ! cmp -s "$T/g_default.png" "$T/g_75.png"; then passes=$((passes+1));
else echo "FAIL generate does not use the model's guidance"; fails=$((fails+1)); fi
sed -i 's/"_diffscope_guidance_scale": 3.5/"_diffscope_guidance_scale": "lots"/' "$G/model_index.json"
expect_fail "bad model guidance" "_diffscope_guidance_scale: expected a number in 0..100" "$BIN" info --model "$G"

# paths
expect_fail "unwritable --out" "cannot write into folder '/nonexistent-dir'" "$BIN" generate --model $M --prompt x --out /nonexistent-dir/a.png
expect_fail "--out is a folder" "is a folder" "$BIN" generate --model $M --prompt x --out "$T"
expect_fail "missing model" "no such file|cannot open|not found" "$BIN" info --model "$T/nothing"
printf '\x80\x02}q\x00.' > "$T/model.ckpt"
expect_fail "pickle checkpoint" "pickle.*safetensors" "$BIN" info --model "$T/model.ckpt"
head -c 100000 tests/fixtures/sd1_tiny.safetensors > "$T/trunc.safetensors"
expect_fail "truncated checkpoint" "trunc.safetensors" "$BIN" info --model "$T/trunc.safetensors"
printf 'hello' > "$T/junk.safetensors"
expect_fail "junk file" "junk.safetensors" "$BIN" info --model "$T/junk.safetensors"
mkdir -p "$T/empty"
expect_fail "empty folder" "empty" "$BIN" info --model "$T/empty"
printf 'not npy' > "$T/bad.npy"
expect_fail "bad --latents" "bad.npy.*not a .npy" "$BIN" generate --model $M --prompt x --out "$T/b.png" --latents "$T/bad.npy"
no_file "$T/b.png" "bad --latents leaves no image"
expect_fail "--latents wrong channels" "expected shape \(1, 4, h, w\)" "$BIN" generate --model $M --prompt x --out "$T/c.png" --latents tests/fixtures/sd1_given_latents_bad_shape.npy
expect_fail "tokenize invalid utf-8" "UTF-8" "$BIN" tokenize --prompt $'bad \xff\xfe bytes'

# real images
expect_fail "missing --image" "--image: .*nothing.png: cannot open" "$BIN" generate --model $M --prompt x --out "$T/i.png" --image "$T/nothing.png"
printf 'not a png' > "$T/corrupt.png"
expect_fail "corrupt --image" "corrupt.png: not a readable PNG or JPEG" "$BIN" generate --model $M --prompt x --out "$T/i.png" --image "$T/corrupt.png"
expect_fail "--start-step without --image" "need --image" "$BIN" generate --model $M --prompt x --out "$T/i.png" --start-step 2
expect_fail "--timestep without --image" "need --image" "$BIN" generate --model $M --prompt x --out "$T/i.png" --timestep 500
expect_fail "--timestep with --start-step" "not both" "$BIN" generate --model $M --prompt x --out "$T/i.png" --image tests/fixtures/heatmap/../sd1_given_latents.npy --timestep 500 --start-step 1
expect_fail "--strength out of range" "--strength expects a number between 0 and 1" "$BIN" generate --model $M --prompt x --out "$T/i.png" --strength 1.5
no_file "$T/i.png" "failed image runs leave no output"

# good runs
expect_ok "generate" "$BIN" generate --model $M --prompt "a red circle" --steps 2 --out "$T/ok.png" --quiet
[ -s "$T/ok.png" ] && passes=$((passes+1)) || { echo "FAIL generate wrote no image"; fails=$((fails+1)); }
out=$("$BIN" generate --model $M --prompt "a red circle" --steps 2 --out "$T/q.png" --quiet 2>&1)
[ -z "$out" ] && passes=$((passes+1)) || { echo "FAIL --quiet still printed: $out"; fails=$((fails+1)); }
out=$("$BIN" generate --model $M --prompt "a red circle" --steps 2 --out "$T/p.png" 2>&1 >/dev/null)
grep -qE "([0-9]+)/\1 +\[#+\] .*(it/s|s/it)" <<<"$out" && passes=$((passes+1)) || { echo "FAIL no progress on stderr: $out"; fails=$((fails+1)); }
expect_ok "image-to-image" "$BIN" generate --model $M --prompt "a blue circle" --image "$T/ok.png" --strength 0.6 --steps 3 --out "$T/i2i.png" --quiet
[ -s "$T/i2i.png" ] && passes=$((passes+1)) || { echo "FAIL image-to-image wrote no image"; fails=$((fails+1)); }
expect_ok "image-to-image from a timestep" "$BIN" generate --model $M --prompt "a blue circle" --image "$T/ok.png" --timestep 500 --steps 3 --out "$T/i2t.png" --quiet
expect_fail "--image size differs from --width/--height" "is 32x32 but --width/--height ask for 64x64" "$BIN" generate --model $M --prompt x --image "$T/ok.png" --width 64 --height 64 --out "$T/j.png"
out=$("$BIN" info --model $M)
grep -q "SD1.x" <<<"$out" && grep -q "fp16" <<<"$out" && passes=$((passes+1)) || { echo "FAIL info: $out"; fails=$((fails+1)); }
out=$("$BIN" info --model tests/fixtures/sd2_tiny.safetensors)
grep -q "SD2.x" <<<"$out" && grep -q "single-file" <<<"$out" && passes=$((passes+1)) || { echo "FAIL info sd2 single: $out"; fails=$((fails+1)); }
out=$("$BIN" tokenize --prompt "a photo of a cat")
grep -qE "^ +2368 +cat</w>" <<<"$out" && passes=$((passes+1)) || { echo "FAIL tokenize: $out"; fails=$((fails+1)); }
cp -r $M "$T/model"
expect_fail "--out equal to the model" "refusing to overwrite" "$BIN" generate --model "$T/model/unet/diffusion_pytorch_model.safetensors" --prompt x --out "$T/model/unet/diffusion_pytorch_model.safetensors"

# bench: flags checked before loading; --device cuda without a GPU is the device error plus "needs a GPU"
expect_fail "bench bad --capture" "--capture expects off, on or both, got 'maybe'" "$BIN" bench --model $M --capture maybe
expect_fail "bench bad --plan" "--plan expects mean, daam or p2p" "$BIN" bench --model $M --plan x
expect_fail "bench zero --iters" "--iters expects an integer between 1 and 1000" "$BIN" bench --model $M --iters 0
out=$("$BIN" bench --model $M --device cpu --steps 2 --iters 1 --warmup 0 --capture both --json 2>/dev/null)
grep -q '"capture_overhead_pct"' <<<"$out" && grep -q "ms/step" <<<"$out" && passes=$((passes+1)) || { echo "FAIL bench --device cpu --capture both: $out"; fails=$((fails+1)); }
if ! nvidia-smi -L >/dev/null 2>&1; then
  expect_fail "bench --device cuda without a GPU" "needs a usable GPU" "$BIN" bench --model $M --device cuda --steps 1
fi

echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
