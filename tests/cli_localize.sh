#!/usr/bin/env bash
# cli_localize.sh — `diffscope localize` end to end on the tiny SD1 fixture model: every output exists and parses
# (neurons.json through `diffscope prune`, CSV headers and row counts, PNG/NPY magic, summary.json keys), the prompt
# files and part selection work, and every bad input fails with one clear message (exit 1..127). The numbers are
# tested in tests/test_localize.c.
set -u
BIN="${1:?usage: cli_localize.sh path/to/diffscope}"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # the fixture model is tiny: one thread is fastest
fails=0; passes=0
M=tests/fixtures/sd1_tiny
FAST=(--steps 2 --prompts-per-side 2 --head-prompts 1 --quiet)

source "$(dirname "${BASH_SOURCE[0]}")/util/cli_checks.sh"
png() { if [ "$(head -c 8 "$1" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then pass; else fail "not a PNG: $1"; fi; }
npy() { if [ "$(head -c 6 "$1" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 934e554d5059 ]; then pass; else fail "not a .npy: $1"; fi; }
# csv FILE HEADER ROWS: exact header, ROWS data lines (or "+" for at least one), same field count on every line
csv() {
  local f="$1" header="$2" rows="$3"
  [ "$(head -1 "$f")" = "$header" ] && pass || fail "$f header: $(head -1 "$f")"
  local n; n=$(($(wc -l <"$f") - 1))
  if [ "$rows" = "+" ]; then [ "$n" -ge 1 ] && pass || fail "$f: no rows"; else [ "$n" = "$rows" ] && pass || fail "$f: $n rows, want $rows"; fi
  local nf; nf=$(awk -F, '{print NF}' "$f" | sort -u | wc -l)
  [ "$nf" = 1 ] && pass || fail "$f: lines with different field counts"
}

# ---- help and the command list
out=$("$BIN" localize --help); rc=$?
[ $rc -eq 0 ] && grep -q "usage: diffscope localize" <<<"$out" && pass || fail "localize --help"
"$BIN" --help | grep -q "localize" && pass || fail "localize not in the command list"

# ---- everything, default templates
O="$T/all"
expect_ok "localize all" "$BIN" localize --model $M --concept "red circle" --out "$O" "${FAST[@]}" && {
  for f in neurons.json neurons.csv neuron_norms.npy neurons.png layers.csv layers.png heads.csv heads.png timesteps.csv \
           timesteps.png prompts.csv summary.json; do exists "$O/$f"; done
  for f in neurons.png layers.png heads.png timesteps.png; do png "$O/$f"; done
  npy "$O/neuron_norms.npy"
  csv "$O/neurons.csv" "block,label,neuron,rows,calls,norm_with,norm_without" +
  csv "$O/layers.csv" "rank,window,first_layer,last_layer,label,mass_drop,image_change,detector_drop,score,score_se" 10
  # the default window is LocoGen's 3 of 16 scaled to the fixture's 11 attn2 layers: round(33/16) = 2, so 10 windows
  has "default window" '"window":[[:space:]]*2,' "$O/summary.json"
  [ "$(grep -c '^[0-9]*,[0-9]*,[^,]*,[^,]*,[dmu][0-9]*\.a[0-9]\.t0 \.\. [dmu][0-9]*\.a[0-9]\.t0,' "$O/layers.csv")" = 10 ] && pass ||
    fail "layers.csv: a window not labelled first .. last"
  csv "$O/heads.csv" "layer,path,label,head,attention_mass,attention_mass_se,mass_rank,ablation_rank,mass_drop,image_change,detector_drop,score,score_se" 88
  csv "$O/timesteps.csv" "rank,window,call_begin,call_end,t_begin,t_end,attention_mass,mass_drop,image_change,detector_drop,score,score_se" 3
  # 2 prompts: 11 layers + 10 windows + 3 timestep windows each, the 88 head ablations on the first (--head-prompts 1)
  csv "$O/prompts.csv" "prompt,part,label,attention_mass,mass_drop,image_change,detector_drop" 136
  [ "$(grep -c '^1,head,' "$O/prompts.csv")" = 0 ] && [ "$(grep -c '^0,head,' "$O/prompts.csv")" = 88 ] && pass || fail "prompts.csv: heads on the first prompt only"
  # two prompts: a standard error on every window (the last column), none for the heads (one prompt)
  [ "$(cut -d, -f10 "$O/layers.csv" | tail -n +2 | grep -c '^[0-9.e+-]*$')" = 10 ] && pass || fail "layers.csv: score_se missing"
  [ "$(grep -c ',nan$' "$O/heads.csv")" = 88 ] && pass || fail "heads.csv: a head score_se from one prompt"
  has "report s.e." "^  1\. .* \(concept mass drop ± [0-9.e-]+ s\.e\.\)$" "$T/stdout"
  has "summary se" '"score_se"' "$O/summary.json"
  has "summary head mass se" '"head_attention_mass_se"' "$O/summary.json"
  has "one seed by default" '"seed_per_prompt":[[:space:]]*false' "$O/summary.json"
  has "neurons.json format" '"format": "diffscope-neurons"' "$O/neurons.json"
  has "neurons.json arch" '"arch": "SD1.x"' "$O/neurons.json"
  has "summary format" '"format":[[:space:]]*"diffscope-localize"' "$O/summary.json"
  has "summary windows" '"layer_windows"' "$O/summary.json"
  has "summary heads" '"head_ablations"' "$O/summary.json"
  has "summary prompts" '"a red circle in a kitchen"' "$O/summary.json"
  has "report neurons" "^neurons: [0-9]+ \(row, neuron\) pairs in [0-9]+ of 11 blocks" "$T/stdout"
  has "report layers" "^layer windows \(by concept mass drop\):" "$T/stdout"
  has "report heads" "^  1\. [dmu][0-9]*\.a[0-9]\.t0 h[0-7] " "$T/stdout"
  # the neurons file is what prune reads
  expect_ok "prune the localized neurons" "$BIN" prune --model $M --neurons "$O/neurons.json" --delta --out "$T/pruned.safetensors"
  has "prune report" "ConceptPrune: [0-9]+ matrices" "$T/stdout"
}

# ---- prompt files, one part, the shapes detector, a neutral prompt, rank by image change
printf '# concept prompts\na red circle on a white background\n\na red circle and a blue square\n' >"$T/with.txt"
printf 'a white background\na blue square\na green star\n' >"$T/without.txt"
O="$T/files"
expect_ok "localize with files" "$BIN" localize --model $M --concept "red circle" --with "$T/with.txt" --without "$T/without.txt" \
  --parts layers,timesteps,heads --head-layers u2.a1,mid_block --neutral "a painting" --detector shapes --rank-by image --out "$O" --steps 2 \
  --seed-per-prompt --quiet && {
  has "seed per prompt in summary" '"seed_per_prompt":[[:space:]]*true' "$O/summary.json"
  for f in layers.csv layers.png heads.csv timesteps.csv summary.json; do exists "$O/$f"; done
  [ -e "$O/neurons.json" ] && fail "--parts layers,timesteps wrote neurons.json" || pass
  has "detector in summary" '"detector":[[:space:]]*"shapes"' "$O/summary.json"
  has "neutral in summary" '"a painting"' "$O/summary.json"
  has "files' prompts" '"a green star"' "$O/summary.json"
  has "rank by image" "^layer windows \(by image change\):" "$T/stdout"
  [ "$(grep -c ',nan,nan,nan,nan,nan$' "$O/heads.csv")" = 72 ] && pass || fail "--head-layers: 72 heads not ablated expected"
  has "heads ablated" "^heads \(by image change\):" "$T/stdout"
  has "detector column" "detector drop" "$T/stdout"
}
O="$T/neurons"
expect_ok "localize neurons only (style)" "$BIN" localize --model $M --concept "Van Gogh" --kind style --parts neurons \
  --out "$O" --steps 2 --prompts-per-side 2 --ratio 0.1 --tau 2 --quiet && {
  exists "$O/neurons.json"; exists "$O/neurons.png"
  [ -e "$O/layers.csv" ] && fail "--parts neurons wrote layers.csv" || pass
  has "style ratio" '"ratio": 0.1' "$O/neurons.json"
  has "style templates" '"a house in the style of Van Gogh"' "$O/summary.json"
}

# ---- bad inputs: one clear message, exit 1..127, before the model is loaded where possible
expect_fail "no concept" "--concept" "$BIN" localize --model $M --out "$T/x"
expect_fail "empty concept" "--concept is empty" "$BIN" localize --model $M --concept "" --out "$T/x"
expect_fail "blank concept" "--concept is empty" "$BIN" localize --model $M --concept "   " --out "$T/x"
expect_fail "missing --with file" "--with: .*nope.txt: cannot open" "$BIN" localize --model $M --concept cat --with "$T/nope.txt" --out "$T/x"
expect_fail "missing --without file" "--without: .*nope.txt: cannot open" "$BIN" localize --model $M --concept cat --without "$T/nope.txt" --out "$T/x"
: >"$T/empty.txt"
expect_fail "empty --with file" "--with: .*no prompts in the file" "$BIN" localize --model $M --concept cat --with "$T/empty.txt" --out "$T/x"
touch "$T/afile"
expect_fail "--out is a file" "--out .*not a folder" "$BIN" localize --model $M --concept cat --out "$T/afile"
expect_fail "--out cannot be created" "--out .*cannot create folder" "$BIN" localize --model $M --concept cat --out /proc/diffscope-localize-out
expect_fail "--out under a file" "--out .*not a folder" "$BIN" localize --model $M --concept cat --out "$T/afile/sub"
expect_fail "bad --parts" "--parts expects" "$BIN" localize --model $M --concept cat --parts brains --out "$T/x"
expect_fail "bad --kind" "--kind expects object or style" "$BIN" localize --model $M --concept cat --kind thing --out "$T/x"
expect_fail "bad --rank-by" "--rank-by expects" "$BIN" localize --model $M --concept cat --rank-by votes --out "$T/x"
expect_fail "detector rank without detector" "--rank-by detector needs --detector" "$BIN" localize --model $M --concept cat --rank-by detector --out "$T/x"
expect_fail "shapes detector on another concept" "names no scene-world object" "$BIN" localize --model $M --concept cat --detector shapes --out "$T/x"
expect_fail "bad --ratio" "--ratio" "$BIN" localize --model $M --concept cat --ratio 2 --out "$T/x"
expect_fail "too many template prompts" "--prompts-per-side" "$BIN" localize --model $M --concept cat --prompts-per-side 50 --out "$T/x"
printf 'a photo of a dog\n' >"$T/dog.txt"
expect_fail "a concept prompt without the concept" "concept prompt 1 'a photo of a dog': \"cat\" is not in the prompt" \
  "$BIN" localize --model $M --concept cat --with "$T/dog.txt" --out "$T/x" --steps 2 --quiet
expect_fail "--head-layers matching nothing" "head layers 'up_blocks.9' match no cross-attention layer" \
  "$BIN" localize --model $M --concept "red circle" --head-layers up_blocks.9 --out "$T/x" --steps 2 --quiet
expect_fail "missing model" "diffscope" "$BIN" localize --model "$T/no-model" --concept cat --out "$T/x"

# ---- a single colour word with the shapes detector, on the embedded trained model: the prompts' own red
# objects are the concept; the trained model draws them (baseline presence high), and replacing the whole
# conditioning with the neutral prompt's (a window over every layer) removes them
if [ -f models/default/model_index.json ]; then
  printf 'a red circle on a white background\na blue square and a red star on a gray background\n' >"$T/red_with.txt"
  printf 'a green circle on a white background\na blue square and a green star on a gray background\n' >"$T/red_without.txt"
  O="$T/red_word"
  expect_ok "localize a colour word with the detector" "$BIN" localize --concept red --with "$T/red_with.txt" --without "$T/red_without.txt" \
    --parts layers --window 7 --detector shapes --out "$O" --quiet && {
    has "detector ranking" "^layer windows \(by detector drop\):" "$T/stdout"
    python3 - "$O/summary.json" "$O/layers.csv" <<'PY' && pass || fail "single-word detector: baseline presence or drop: $(grep -o '"detector_presence_baseline":[^,]*' "$O/summary.json")"
import csv, json, sys
j = json.load(open(sys.argv[1]))
rows = list(csv.DictReader(open(sys.argv[2])))
# presence = found red objects / red objects named (the blue square does not count); the all-layer window swaps
# in the green prompts' conditioning, so the red objects must go
sys.exit(0 if j["detector_presence_baseline"] >= 0.5 and len(rows) == 1 and float(rows[0]["detector_drop"]) >= 0.5 else 1)
PY
  }
  # the default window on the testbed's 7 attn2 layers: round(21/16) = 1, so 7 windows, each named by its layer
  O="$T/red_default"
  "$BIN" localize --concept red --with "$T/red_with.txt" --without "$T/red_without.txt" --parts layers \
    --detector shapes --steps 4 --out "$O" >"$T/stdout" 2>"$T/stderr" && pass || fail "localize, default window: $(cat "$T/stderr")"
  has "testbed default window" '"window":[[:space:]]*1,' "$O/summary.json"
  has "default window logged" "7 windows of 1 cross-attention layer .the default: LocoGen" "$T/stderr"
  [ "$(grep -c '^[0-9]*,[0-9]*,[^,]*,[^,]*,[dmu][0-9]*\.a[0-9]\.t0,' "$O/layers.csv")" = 7 ] && pass ||
    fail "layers.csv: single-layer windows not named by their layer: $(cut -d, -f5 "$O/layers.csv" | tr '\n' ' ')"
fi

echo "cli_localize: $passes passed, $fails failed"
[ $fails -eq 0 ]
