#!/usr/bin/env bash
# cli_edit.sh — `diffscope erase | edit | prune | apply` end to end on the tiny fixture models, and every bad input:
# each failure exits 1..127 with one clear message naming the flag / file / mismatch and leaves no output behind.
# The numbers themselves are tested in tests/test_edit.c; here: formats, reports, warnings, write safety, and that
# an edit changes generated images (and a delta applied later gives the very same images).
set -u
BIN="${1:?usage: cli_edit.sh path/to/diffscope}"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0; passes=0
M=tests/fixtures/sd1_tiny
S=tests/fixtures/sd1_tiny.safetensors
M2=tests/fixtures/sd2_tiny
N=tests/fixtures/edit

source "$(dirname "${BASH_SOURCE[0]}")/util/cli_checks.sh"

# ---- help
for c in erase edit prune apply; do
  out=$("$BIN" $c --help); rc=$?
  if [ $rc -ne 0 ] || ! grep -q "usage: diffscope $c" <<<"$out"; then fail "$c --help"; else pass; fi
done
"$BIN" --help | grep -q "erase" && pass || fail "erase not in the command list"

# ---- erase (UCE) on the fp16 folder: a new folder in the same format, report on stdout
expect_ok "erase folder" "$BIN" erase --model $M --concept "cat,dog" --preserve "a red circle" --out "$T/erased" && {
  has "erase report" "shared solve \(one 16×16 system for all 22 matrices\), 3 keys, λ = 0.5, cond\(λI \+ Σ s k kᵀ\) = [0-9.]+" "$T/stdout"
  [ "$(grep -c 'attn2.to_[kv].weight' "$T/stdout")" = 22 ] && pass || fail "erase: 22 per-matrix lines expected"
  has "erase wrote" "wrote .*erased \(diffusers folder: 1 file rewritten, 11 copied, 0 left out\)" "$T/stderr"
  has "erase timings" "time: load [0-9.]+ s, keys" "$T/stderr"
  out=$("$BIN" info --model "$T/erased"); grep -q "fp16" <<<"$out" && grep -q diffusers <<<"$out" && pass || fail "erased info: $out"
}
# the edit changes what "a cat" generates, and leaves an unrelated prompt's image close to (not necessarily equal) the
# original; a delta applied later gives bit-identical images to the direct edit
"$BIN" generate --model $M --prompt "a cat" --steps 2 --seed 3 --out "$T/orig.png" --quiet
"$BIN" generate --model "$T/erased" --prompt "a cat" --steps 2 --seed 3 --out "$T/erased.png" --quiet
cmp -s "$T/orig.png" "$T/erased.png" && fail "erasing 'cat' did not change the image of 'a cat'" || pass
expect_ok "erase --delta" "$BIN" erase --model $M --concept "cat,dog" --preserve "a red circle" --delta --out "$T/erase.delta.safetensors"
has "delta note" "wrote the delta .*erase.delta.safetensors \(22 tensors\)" "$T/stderr"
expect_ok "apply delta to the folder" "$BIN" apply --model $M --delta "$T/erase.delta.safetensors" --out "$T/applied"
"$BIN" generate --model "$T/applied" --prompt "a cat" --steps 2 --seed 3 --out "$T/applied.png" --quiet
cmp -s "$T/erased.png" "$T/applied.png" && pass || fail "apply(delta) and the direct edit generate different images"
# the same delta on the fp32 single file of the same model (same numbers, same fingerprint): a single file comes back
expect_ok "apply delta to the single file" "$BIN" apply --model $S --delta "$T/erase.delta.safetensors" --out "$T/applied.safetensors"
out=$("$BIN" info --model "$T/applied.safetensors"); grep -q "single-file" <<<"$out" && grep -q fp32 <<<"$out" && pass || fail "applied single: $out"

# ---- erase on the single file: a single file with the same key names
expect_ok "erase single file" "$BIN" erase --model $S --concept "Kelly Mckernan" --guide art --out "$T/erased.safetensors" --quiet && {
  has "split-word warning names the pieces" "warning: concept 'Kelly Mckernan' tokenizes to several BPE pieces \('mckernan' = mck \+ ernan</w>\)" "$T/stderr"
  [ -s "$T/erased.safetensors" ] && pass || fail "no single file written"
  [ "$(stat -c %s "$T/erased.safetensors")" -gt 1000000 ] && pass || fail "single file too small"
}
# moderate, all-tokens, per-layer, only to_v, preserve-file, debias: all run
printf '# keep these\ndog\n\na red circle\n' > "$T/keep.txt"
expect_ok "moderate + preserve-file" "$BIN" erase --model $M2 --concept "violence" --moderate --preserve-file "$T/keep.txt" --out "$T/mod" --quiet
has "moderate method" "UCE moderate" "$T/stdout"
expect_ok "all-tokens" "$BIN" erase --model $M --concept "Van Gogh" --guide art --all-tokens --delta --out "$T/at.safetensors" --quiet
expect_ok "per-layer" "$BIN" erase --model $M --concept cat --per-layer --matrices v --delta --out "$T/pl.safetensors" --quiet
has "per-layer report" "per-layer solve \(11 16×16 systems\)" "$T/stdout"

[ "$(grep -c 'attn2.to_v.weight' "$T/stdout")" = 11 ] && [ "$(grep -c 'attn2.to_k.weight' "$T/stdout")" = 0 ] && pass || fail "--matrices v"
# in-context keys (--context): templates with {} and plain prompts naming the concept; the report counts
# (77 − a) keys per prompt; a concept named in no line and no {} is an error naming the line
printf '# contexts\na photo of a {}\n\na cat sitting on a sofa\r\n' > "$T/ctx.txt"
expect_ok "erase --context" "$BIN" erase --model $M --concept cat --preserve dog --context "$T/ctx.txt" --delta --out "$T/ctx.safetensors" && {
  # "a photo of a {}": a = 5 → 72 keys; "a cat sitting on a sofa": a = 2 → 75 keys; the same for the preserved dog
  has "context keys counted" "shared solve \(one 16×16 system for all 22 matrices\), 294 keys" "$T/stdout"
  python3 -c "import json,struct,sys; f=open(sys.argv[1],'rb'); n=struct.unpack('<Q',f.read(8))[0]; m=json.loads(f.read(n))['__metadata__']; p=json.loads(m['diffscope.params']); sys.exit(0 if p['contexts']==['a photo of a {}','a cat sitting on a sofa'] else 1)" "$T/ctx.safetensors" \
    && pass || fail "--context: the delta's params do not list the context prompts"
}
printf 'a dog on a sofa\n' > "$T/ctx_none.txt"
expect_fail "--context line without the concept" "--context line 1 'a dog on a sofa' names none of the concepts \('cat'\) and has no \{\} to put one in" \
  "$BIN" erase --model $M --concept cat --context "$T/ctx_none.txt" --out "$T/ctx_bad"
no_file "$T/ctx_bad" "--context line without the concept"
printf 'a {} and a {}\n' > "$T/ctx_two.txt"
expect_fail "--context two placeholders" "--context line 1 'a \{\} and a \{\}' has more than one \{\}" \
  "$BIN" erase --model $M --concept cat --context "$T/ctx_two.txt" --out "$T/ctx_bad"
printf '# nothing\n\n' > "$T/ctx_empty.txt"
expect_fail "--context empty file" "--context .*ctx_empty.txt lists no prompts" "$BIN" erase --model $M --concept cat --context "$T/ctx_empty.txt" --out "$T/ctx_bad"
expect_fail "--context missing file" "--context: .*no_such.txt" "$BIN" erase --model $M --concept cat --context "$T/no_such.txt" --out "$T/ctx_bad"
expect_fail "--context with --all-tokens" "--context takes no --debias or --all-tokens" "$BIN" erase --model $M --concept cat --context "$T/ctx.txt" --all-tokens --out "$T/ctx_bad"
printf 'a concatenation of cats\n' > "$T/ctx_glued.txt"
expect_fail "--context concept only inside other words" "names none of the concepts" "$BIN" erase --model $M --concept cat --context "$T/ctx_glued.txt" --out "$T/ctx_bad"
no_file "$T/ctx_bad" "--context bad inputs"
# the device: without a usable GPU (a CPU-only build, or no GPU here) --device cuda is refused with the
# reason and writes nothing; fp16 storage is not a CPU option
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  expect_fail "erase --device cuda without a GPU" "diffscope erase: --device cuda: " \
    "$BIN" erase --model $M --concept cat --device cuda --delta --out "$T/dev.safetensors"
  no_file "$T/dev.safetensors" "erase --device cuda without a GPU"
fi
expect_fail "erase --device cpu --precision fp16" "the CPU backend computes in fp32 only" \
  "$BIN" erase --model $M --concept cat --device cpu --precision fp16 --delta --out "$T/dev.safetensors"
expect_ok "debias" "$BIN" erase --model $M --concept "doctor,nurse" --debias male,female --measured-ratios "0.8,0.2;0.1,0.9" --out "$T/debias" --quiet
has "debias method" "UCE debias" "$T/stdout"
# a singular system is regularized and reported
expect_ok "lambda 0" "$BIN" erase --model $M --concept cat --lambda 0 --delta --out "$T/l0.safetensors" --quiet
has "singular warning" "warning: λI \+ Σ s k kᵀ is singular \(cond inf with λ = 0, 1 keys in 16 dimensions\); regularized with λ = [0-9.e+-]+ \(cond 1e\+10\)" "$T/stderr"
# an edit that changes nothing says so
expect_ok "no-op edit" "$BIN" erase --model $M --concept cat --guide cat --delta --out "$T/noop.safetensors" --quiet
has "no-op warning" "warning: the edit changes nothing" "$T/stderr"

# ---- edit (TIME)
expect_ok "TIME folder" "$BIN" edit --model $M --from "a pack of roses" --to "a pack of blue roses" --out "$T/time"
has "TIME report" "TIME: shared solve \(one 16×16 system for all 22 matrices\), 308 keys, λ = 0.1" "$T/stdout"
expect_ok "TIME single file, no augment, to_v" "$BIN" edit --model tests/fixtures/sd2_tiny.safetensors --from "an apple" --to "a green apple" --no-augment --matrices v --out "$T/time2.safetensors" --quiet
has "TIME keys" "77 keys" "$T/stdout"

# ---- prune
expect_ok "prune" "$BIN" prune --model $S --neurons $N/neurons_sd1.json --out "$T/pruned.safetensors"
has "prune report" "ConceptPrune: 3 matrices" "$T/stdout"
has "prune counts" "mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight +32x128 .* 2$" "$T/stdout"
expect_ok "prune --delta" "$BIN" prune --model $M --neurons $N/neurons_sd1.json --delta --out "$T/prune.delta.safetensors" --quiet

# ---- bad input
expect_fail "--out = the input folder" "is the input model; refusing to overwrite it" "$BIN" erase --model $M --concept cat --out $M
expect_fail "--out = the input file" "is the input model; refusing to overwrite it" "$BIN" erase --model $S --concept cat --out $S
ln -s "$PWD/$S" "$T/link.safetensors"
expect_fail "--out = a link to the input" "is the input model" "$BIN" erase --model $S --concept cat --out "$T/link.safetensors"
expect_fail "--out inside the input folder" "is inside the input model folder" "$BIN" erase --model $M --concept cat --out $M/edited
expect_fail "--out an existing folder" "already exists; give a new folder name" "$BIN" erase --model $M --concept cat --out "$T/erased"
expect_fail "--out in a missing folder" "cannot write into folder '/nonexistent-dir'" "$BIN" erase --model $M --concept cat --out /nonexistent-dir/x
expect_fail "apply --out = the input" "refusing to overwrite" "$BIN" apply --model $S --delta "$T/erase.delta.safetensors" --out $S
expect_fail "missing --concept" "--concept A\[,B,...\] is required" "$BIN" erase --model $M --out "$T/x"
expect_fail "empty concept" "concept 2 is empty" "$BIN" erase --model $M --concept "cat,,dog" --out "$T/x"
expect_fail "guide count" "--guide has 2 items for 3 concepts" "$BIN" erase --model $M --concept a,b,c --guide x,y --out "$T/x"
expect_fail "--moderate with --guide" "--moderate erases toward the empty prompt" "$BIN" erase --model $M --concept a --moderate --guide x --out "$T/x"
expect_fail "--debias without measurements" "--debias needs --measured-ratios" "$BIN" erase --model $M --concept doctor --debias male,female --out "$T/x"
expect_fail "--measured-ratios count" "has 3 values for 2 attributes" "$BIN" erase --model $M --concept doctor --debias male,female --measured-ratios 0.1,0.2,0.7 --out "$T/x"
expect_fail "negative lambda" "--lambda expects a number between 0 and" "$BIN" erase --model $M --concept cat --lambda -1 --out "$T/x"
expect_fail "nan scale" "--erase-scale expects a number" "$BIN" erase --model $M --concept cat --erase-scale nan --out "$T/x"
expect_fail "bad --matrices" "--matrices expects kv, k or v" "$BIN" erase --model $M --concept cat --matrices q --out "$T/x"
expect_fail "missing --preserve-file" "--preserve-file: .*nothing.txt" "$BIN" erase --model $M --concept cat --preserve-file "$T/nothing.txt" --out "$T/x"
long=$(printf 'cat %.0s' $(seq 80))
expect_fail "concept too long" "is 80 tokens; an edit prompt must fit one 77-position chunk" "$BIN" erase --model $M --concept "$long" --out "$T/x"
expect_fail "TIME misaligned" "--to 'a blue rose' must contain the tokens of --from 'a red rose' in order" "$BIN" edit --model $M --from "a red rose" --to "a blue rose" --out "$T/x"
expect_fail "neurons for another architecture" "1280 → 320 features, this model's is 64 → 16.*another architecture" "$BIN" prune --model $M --neurons $N/neurons_sd15.json --out "$T/x"
expect_fail "neurons on SD2" "made for SD1.x, but this model is SD2.x" "$BIN" prune --model $M2 --neurons $N/neurons_sd1.json --out "$T/x"
expect_fail "missing neurons file" "--neurons .*none.json: no such file" "$BIN" prune --model $M --neurons "$T/none.json" --out "$T/x"
expect_fail "delta on another architecture" "which this model does not have|another architecture" "$BIN" apply --model $M2 --delta "$T/erase.delta.safetensors" --out "$T/x"
expect_fail "delta on another base" "was made from another base model.*--allow-other-base" "$BIN" apply --model "$T/erased" --delta "$T/erase.delta.safetensors" --out "$T/x"
expect_ok "delta on another base, allowed" "$BIN" apply --model "$T/erased" --delta "$T/erase.delta.safetensors" --out "$T/twice" --allow-other-base --quiet
expect_fail "not a delta" "not a diffscope delta file" "$BIN" apply --model $M --delta $S --out "$T/x"
printf '\x80\x02}q\x00.' > "$T/model.ckpt"
expect_fail "pickle model" "pickle.*safetensors" "$BIN" erase --model "$T/model.ckpt" --concept cat --out "$T/x.safetensors"
no_file "$T/x" "failed runs leave no output"
ls "$T" | grep -q '\.tmp\.' && fail "temporary files left: $(ls "$T" | grep '\.tmp\.')" || pass
# the inputs were never touched
git diff --quiet -- $M $S $M2 2>/dev/null && pass || fail "fixture models changed"

echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
