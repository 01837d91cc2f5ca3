#!/usr/bin/env bash
# cli_testbed.sh — `diffscope testbed make` and `diffscope testbed eval` end to end (docs/testbed.md):
# make writes the held-out scenes (images, captions, masks, index.json) and refuses bad counts and folders it
# cannot write; eval runs a few held-out prompts with few steps on the fixture model (its images are noise, so
# detect≈0 there: only the plumbing and the output format are checked), ends with the exact summary line,
# prints --per-word lines, runs prompts outside the scene world, and refuses bad input before loading a model.
# If the embedded default model has landed (models/default), one short eval checks the format on it too.
# Budget: well under a minute on 2 cores.
set -u
BIN="${1:?usage: cli_testbed.sh path/to/diffscope}"
T=$(mktemp -d)
trap 'chmod -R u+w "$T" 2>/dev/null; rm -rf "$T"' EXIT
fails=0; passes=0
M=tests/fixtures/sd1_tiny
NUM='([0-9]+\.[0-9]{3}|n/a)'
SUMMARY="^testbed: detect=$NUM miou_gen=$NUM miou_real=$NUM\$"

ok() { passes=$((passes+1)); }
bad() { echo "FAIL $*"; fails=$((fails+1)); }
# expect_fail "description" exit-code "regex the message must match" command...
expect_fail() {
  local what="$1" want="$2" pattern="$3"; shift 3
  local out rc
  out=$("$@" 2>&1 >/dev/null); rc=$?
  if [ "$rc" -ne "$want" ]; then bad "$what: exit $rc (want $want): $out"; return; fi
  if ! grep -qE -- "$pattern" <<<"$out"; then bad "$what: message does not match /$pattern/: $out"; return; fi
  ok
}
# run_ok "description" outfile command... (stdout → outfile, stderr → outfile.err)
run_ok() {
  local what="$1" f="$2"; shift 2
  "$@" >"$f" 2>"$f.err"; local rc=$?
  if [ $rc -ne 0 ]; then bad "$what: exit $rc: $(cat "$f.err")"; return 1; fi
  ok
}
png_size() { od -An -tu4 --endian=big -j16 -N8 "$1" | awk '{print $1 "x" $2}'; }
check_eq() { if [ "$2" = "$3" ]; then ok; else bad "$1: got '$2', want '$3'"; fi; }
has() { if grep -qE -- "$3" "$2" 2>/dev/null; then ok; else bad "$1: $2 does not match /$3/"; fi; }
last_line_ok() {  # last_line_ok what file
  local l; l=$(tail -n 1 "$2")
  if grep -qE -- "$SUMMARY" <<<"$l"; then ok; else bad "$1: last line '$l' is not the summary"; fi
}

# ---- help ----------------------------------------------------------------------------------------
"$BIN" --help | grep -q "testbed" && ok || bad "testbed missing from diffscope --help"
"$BIN" testbed --help | grep -q "testbed eval" && ok || bad "testbed --help"
for s in eval make; do
  out=$("$BIN" testbed $s --help); rc=$?
  if [ $rc -ne 0 ] || ! grep -q "usage: diffscope testbed $s" <<<"$out"; then bad "testbed $s --help"; else ok; fi
done
expect_fail "testbed without a subcommand" 2 "usage: diffscope testbed" "$BIN" testbed
expect_fail "unknown subcommand" 2 "unknown subcommand 'bogus'" "$BIN" testbed bogus

# ---- make ------------------------------------------------------------------------------------------
D="$T/scenes"
run_ok "make" "$T/make.out" "$BIN" testbed make --n 3 --out "$D" --quiet
[ -s "$D/index.json" ] && ok || bad "make: no index.json"
for i in 0000 0001 0002; do
  [ -s "$D/scene_$i.png" ] && ok || bad "make: no scene_$i.png"
  check_eq "scene_$i.png size" "$(png_size "$D/scene_$i.png")" "64x64"
  cap=$(cat "$D/scene_$i.txt" 2>/dev/null)
  grep -qE '^an? (red|green|blue|yellow|purple|orange) (circle|square|triangle|star|ring)' <<<"$cap" && ok || bad "make: caption '$cap'"
  n_obj=$(grep -oE '(red|green|blue|yellow|purple|orange) (circle|square|triangle|star|ring)' <<<"$cap" | wc -l)
  n_mask=$(ls "$D" | grep -cE "^scene_${i}_mask_[0-9]_[a-z]+_[a-z]+\.png$")
  check_eq "scene_$i: masks = named objects" "$n_mask" "$n_obj"
  k=0
  for pair in $(grep -oE '(red|green|blue|yellow|purple|orange) (circle|square|triangle|star|ring)' <<<"$cap" | tr ' ' '_'); do
    [ -s "$D/scene_${i}_mask_${k}_${pair}.png" ] && ok || bad "make: no scene_${i}_mask_${k}_${pair}.png"
    k=$((k+1))
  done
  has "index.json lists scene_$i" "$D/index.json" "\"scene_$i.png\""
done
has "index.json seeds" "$D/index.json" '"seed":[[:space:]]*1000000000000,'
has "index.json caption" "$D/index.json" "\"caption\":[[:space:]]*\"$(cat "$D/scene_0000.txt")\""
ls "$D" | grep -q '\.tmp' && bad "make left temporary files" || ok
# again into the same folder (overwrites), another size, another start
run_ok "make --size 32 --first 5" "$T/make2.out" "$BIN" testbed make --n 1 --size 32 --first 5 --out "$D" --quiet
check_eq "make --size 32" "$(png_size "$D/scene_0005.png")" "32x32"
# bad input: nothing written
expect_fail "make --n 0" 2 "--n must be a positive" "$BIN" testbed make --n 0 --out "$T/m0"
expect_fail "make --n -4" 2 "--n must be a positive" "$BIN" testbed make --n -4 --out "$T/m1"
expect_fail "make --n abc" 2 "--n expects an integer" "$BIN" testbed make --n abc --out "$T/m2"
expect_fail "make without --out" 2 "--out DIR is required" "$BIN" testbed make --n 2
expect_fail "make without --n" 2 "--n N is required" "$BIN" testbed make --out "$T/m3"
expect_fail "make --size 8" 2 "--size expects an integer between 16" "$BIN" testbed make --n 1 --size 8 --out "$T/m4"
for d in m0 m1 m2 m3 m4; do [ -e "$T/$d" ] && bad "failed make left $T/$d" || ok; done
: >"$T/afile"
expect_fail "make --out a file" 2 "is not a folder" "$BIN" testbed make --n 1 --out "$T/afile"
expect_fail "make --out under a file" 2 "cannot create the folder" "$BIN" testbed make --n 1 --out "$T/afile/sub"
expect_fail "make --out with a missing parent" 2 "cannot create the folder" "$BIN" testbed make --n 1 --out "$T/no/such/dir"
if [ "$(id -u)" -ne 0 ]; then  # root can write anywhere
  mkdir "$T/ro" && chmod 555 "$T/ro"
  expect_fail "make --out read-only" 2 "cannot write into this folder" "$BIN" testbed make --n 1 --out "$T/ro"
  [ -z "$(ls "$T/ro")" ] && ok || bad "make wrote into a read-only folder"
fi

# ---- eval on the fixture model ------------------------------------------------------------------------
E="$T/eval.out"
if run_ok "eval" "$E" "$BIN" testbed eval --model $M --n 2 --steps 3; then
  last_line_ok "eval" "$E"
  check_eq "eval: per-image lines" "$(grep -cE '^\[[0-9]+/2\] scene=10000000000[0-9]{2} seed=[0-9]+ detect=' "$E")" "2"
  has "eval: real-image scores" "$E" ' real: [a-z]+=([0-9]\.[0-9]{3}|-)'
  has "eval: held-out note" "$E.err" "held-out scenes 1000000000000\.\.1000000000001"
  grep -qE "^testbed: detect=[0-9]\.[0-9]{3} miou_gen=$NUM miou_real=[0-9]\.[0-9]{3}\$" "$E" && ok || bad "eval: detect and miou_real must be numbers: $(tail -1 "$E")"
fi
E="$T/eval_q.out"
if run_ok "eval --quiet --per-word" "$E" "$BIN" testbed eval --model $M --n 2 --steps 2 --seed 7 --quiet --per-word; then
  last_line_ok "eval --quiet" "$E"
  check_eq "eval --quiet --per-word: lines" "$(wc -l <"$E")" "12"
  check_eq "eval --per-word: WORD=RATE lines" \
    "$(grep -cE "^(red|green|blue|yellow|purple|orange|circle|square|triangle|star|ring)=$NUM\$" "$E")" "11"
  check_eq "eval --quiet: stderr" "$(cat "$E.err")" ""
fi
# the same run twice gives the same numbers (seeded)
run_ok "eval again" "$T/eval_q2.out" "$BIN" testbed eval --model $M --n 2 --steps 2 --seed 7 --quiet --per-word &&
  check_eq "eval is deterministic" "$(cat "$T/eval_q2.out")" "$(cat "$E")"
# prompts outside the scene world still run (and score nothing)
printf 'a photo of a cat\n\n# a comment\na red circle and two blue squares\n' >"$T/prompts.txt"
E="$T/eval_p.out"
if run_ok "eval --prompts" "$E" "$BIN" testbed eval --model $M --prompts "$T/prompts.txt" --steps 2; then
  last_line_ok "eval --prompts" "$E"
  has "eval --prompts: outside prompt ran" "$E" 'detect=- \(no scene-world object named\) "a photo of a cat"'
  has "eval --prompts: scene prompt ran" "$E" '\[2/2\] seed=1 detect=[01]/1 '
  has "eval --prompts: no real images" "$E" 'miou_real=n/a$'
fi
printf 'a photo of a cat\n' >"$T/cat.txt"
E="$T/eval_cat.out"
if run_ok "eval, no scene-world prompt" "$E" "$BIN" testbed eval --model $M --prompts "$T/cat.txt" --steps 1 --quiet; then
  check_eq "eval, no scene-world prompt: summary" "$(cat "$E")" "testbed: detect=n/a miou_gen=n/a miou_real=n/a"
fi

# ---- eval: bad input (refused before the model loads) ---------------------------------------------------
expect_fail "eval --n 0" 2 "--n must be a positive" "$BIN" testbed eval --model $M --n 0
expect_fail "eval --n -3" 2 "--n must be a positive" "$BIN" testbed eval --model $M --n -3
expect_fail "eval --n=-1" 2 "--n must be a positive" "$BIN" testbed eval --model $M --n=-1
expect_fail "eval --n x" 2 "--n expects an integer" "$BIN" testbed eval --model $M --n x
expect_fail "eval --n missing value" 2 "--n needs a value" "$BIN" testbed eval --model $M --n
expect_fail "eval --steps 0" 2 "--steps expects an integer between 1" "$BIN" testbed eval --model $M --steps 0
expect_fail "eval --tau 2" 2 "--tau expects a number between 0 and 1" "$BIN" testbed eval --model $M --tau 2
expect_fail "eval --strength 0" 2 "--strength expects a number" "$BIN" testbed eval --model $M --strength 0
expect_fail "eval --sampler" 2 "--sampler expects one of" "$BIN" testbed eval --model $M --sampler bogus
expect_fail "eval --first -1" 2 "--first expects a scene index" "$BIN" testbed eval --model $M --first -1
expect_fail "eval --prompts missing" 2 "--prompts" "$BIN" testbed eval --model $M --prompts "$T/none.txt"
: >"$T/empty.txt"
expect_fail "eval --prompts empty" 2 "has no prompt" "$BIN" testbed eval --model $M --prompts "$T/empty.txt"
expect_fail "eval --prompts folder" 2 "is a folder" "$BIN" testbed eval --model $M --prompts "$T"
expect_fail "eval --first with --prompts" 2 "--first" "$BIN" testbed eval --model $M --prompts "$T/cat.txt" --first 3
expect_fail "eval unknown flag" 2 "unknown flag '--bogus'" "$BIN" testbed eval --model $M --bogus
expect_fail "eval missing model" 1 "no-such-model" "$BIN" testbed eval --model "$T/no-such-model" --n 1

# ---- the embedded default model, when it has landed -------------------------------------------------------
if [ -f models/default/model_index.json ]; then
  E="$T/eval_default.out"
  if run_ok "eval on models/default" "$E" "$BIN" testbed eval --n 2 --steps 10 --quiet; then
    last_line_ok "eval on models/default" "$E"
  fi
  # --objects: one row per named object; the per-word rates recomputed from the rows equal the --per-word lines
  printf 'a red circle and a blue square on a white background\na green star on a gray background\nan orange ring, a yellow triangle and a purple square\na photo of a cat\n' >"$T/objs.txt"
  E="$T/eval_objs.out"
  if run_ok "eval --objects" "$E" "$BIN" testbed eval --prompts "$T/objs.txt" --steps 10 --per-word --quiet --objects "$T/objs.csv"; then
    check_eq "--objects header" "$(head -n 1 "$T/objs.csv")" "prompt,seed,object,color,shape,found"
    check_eq "--objects rows (6 named objects; the cat prompt names none)" "$(($(wc -l <"$T/objs.csv") - 1))" "6"
    has "--objects a row" "$T/objs.csv" '^"an orange ring, a yellow triangle and a purple square",2,2,purple,square,[01]$'
    python3 - "$T/objs.csv" "$E" <<'PY' && ok || bad "--objects: rates from the CSV differ from --per-word"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
want = {}
for w in "red green blue yellow purple orange circle square triangle star ring".split():
    hit = [int(r["found"]) for r in rows if w in (r["color"], r["shape"])]
    want[w] = "%.3f" % (sum(hit) / len(hit)) if hit else "n/a"
got = dict(l.strip().split("=", 1) for l in open(sys.argv[2]) if "=" in l and not l.startswith("testbed:"))
sys.exit(0 if got == want else 1)
PY
  fi
fi
expect_fail "eval --objects into a missing folder" 2 "--objects .*cannot write into folder" \
  "$BIN" testbed eval --model $M --n 1 --objects "$T/no/such/objs.csv"
expect_fail "eval --objects is a folder" 2 "--objects .* is a folder" "$BIN" testbed eval --model $M --n 1 --objects "$T"

echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
