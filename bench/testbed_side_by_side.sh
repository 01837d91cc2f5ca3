#!/usr/bin/env bash
# testbed_side_by_side.sh — the scene-world testbed (docs/testbed.md) scored by diffscope and by the real daam 0.2.0
# package on the same model, the same held-out prompts, seeds and real images (issue 5, item 5).
#
#   bench/testbed_side_by_side.sh [MODEL] [N]          defaults: models/default, 40
#
# Runs, one after the other, both single-threaded (THREADS, default 1: OMP_NUM_THREADS for diffscope,
# torch.set_num_threads for daam):
#   diffscope   $BIN testbed eval --model MODEL --n N --per-word
#   daam        .venv-daam/bin/python tools/testbed_daam.py --model MODEL --n N --per-word --compare <diffscope's log>
#               (the same protocol with diffusers 0.21.2 + daam's trace / compute_global_heat_map /
#               compute_word_heat_map / expand_as; tools/daam_venv.sh makes the venv)
#   check       tools/testbed_daam.py on the first CHECK scenes (default 3; 0 skips) with --check: `diffscope heatmap`
#               vs diffusers + daam on the same scene: image difference and per-word map Pearson correlation
# and prints a table (detect, miou_gen, miou_real, colour-word mIoUs, wall time each) and the consistency lines.
#
# Environment: BIN (diffscope binary; default the first of build/, build-daam/, build-*/), PY (default
# .venv-daam/bin/python), THREADS (1), CHECK (3), SEED (0), OUT (log folder; default a new temp folder, kept).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${1:-}" in -h|--help) sed -n '2,18p' "$0"; exit 0 ;; esac
MODEL="${1:-$ROOT/models/default}"
N="${2:-40}"
THREADS="${THREADS:-1}"
CHECK="${CHECK:-3}"
SEED="${SEED:-0}"
PY="${PY:-$ROOT/.venv-daam/bin/python}"
BIN="${BIN:-}"
if [ -z "$BIN" ]; then
  for b in "$ROOT/build/diffscope" "$ROOT/build-daam/diffscope" "$ROOT"/build-*/diffscope; do
    [ -x "$b" ] && { BIN="$b"; break; }
  done
fi
[ -x "${BIN:-}" ] || { echo "testbed_side_by_side.sh: no diffscope binary (build it, or set BIN=...)" >&2; exit 2; }
[ -x "$PY" ] || { echo "testbed_side_by_side.sh: no daam venv at $PY (make it: bash tools/daam_venv.sh)" >&2; exit 2; }
[ -d "$MODEL" ] || { echo "testbed_side_by_side.sh: model folder $MODEL not found" >&2; exit 2; }
case "$N" in ''|*[!0-9]*) echo "testbed_side_by_side.sh: N must be a positive integer, got '$N'" >&2; exit 2 ;; esac
[ "$N" -ge 1 ] || { echo "testbed_side_by_side.sh: N must be >= 1" >&2; exit 2; }
[ "$CHECK" -le "$N" ] || CHECK="$N"
OUT="${OUT:-$(mktemp -d /tmp/testbed_sbs.XXXXXX)}"
mkdir -p "$OUT"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
# field KEY LINE: the value of KEY=... in a summary line
field() { echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -1; }

echo "model $MODEL, $N held-out prompts, seeds $SEED.., $THREADS thread(s); logs in $OUT" >&2

echo "[1/3] diffscope testbed eval ..." >&2
t0=$(now)
OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS=1 "$BIN" testbed eval --model "$MODEL" --n "$N" --seed "$SEED" \
  --per-word >"$OUT/diffscope.log" 2>"$OUT/diffscope.err"
t1=$(now)
T_DS=$(elapsed "$t0" "$t1")

echo "[2/3] daam (tools/testbed_daam.py) ..." >&2
t0=$(now)
OMP_NUM_THREADS="$THREADS" "$PY" "$ROOT/tools/testbed_daam.py" --model "$MODEL" --n "$N" --seed "$SEED" \
  --threads "$THREADS" --per-word --json "$OUT/daam.json" --compare "$OUT/diffscope.log" \
  >"$OUT/daam.log" 2>"$OUT/daam.err"
t1=$(now)
T_DAAM=$(elapsed "$t0" "$t1")

if [ "$CHECK" -gt 0 ]; then
  echo "[3/3] consistency check on $CHECK scenes (diffscope heatmap vs diffusers + daam) ..." >&2
  OMP_NUM_THREADS="$THREADS" "$PY" "$ROOT/tools/testbed_daam.py" --model "$MODEL" --n "$CHECK" --seed "$SEED" \
    --threads "$THREADS" --quiet --check "$CHECK" --diffscope "$BIN" --compare "$OUT/diffscope.log" \
    --json "$OUT/check.json" >"$OUT/check.log" 2>"$OUT/check.err"
fi

DS_LAST=$(grep '^testbed: ' "$OUT/diffscope.log" | tail -1)
DAAM_LAST=$(grep '^testbed(daam): ' "$OUT/daam.log" | tail -1)
DS_COL=$(grep '^colour words: ' "$OUT/diffscope.log" | tail -1 || true)
DAAM_COL=$(grep '^colour words: ' "$OUT/daam.log" | tail -1 || true)

echo
echo "$DS_LAST"
echo "$DAAM_LAST"
echo
# the tools' own eval time (the N prompts, model load excluded)
E_DS=$(sed -n 's/^testbed: [0-9]* prompts in \([0-9.]*\) s.*/\1/p' "$OUT/diffscope.err" | tail -1)
E_DAAM=$(sed -n 's/^testbed(daam): [0-9]* prompts in \([0-9.]*\) s.*/\1/p' "$OUT/daam.err" | tail -1)
echo "| scorer | detect | miou_gen | miou_real | colour miou_gen | colour miou_real | eval time (s) | wall time (s) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
printf '| diffscope `testbed eval` | %s | %s | %s | %s | %s | %s | %s |\n' "$(field detect "$DS_LAST")" \
  "$(field miou_gen "$DS_LAST")" "$(field miou_real "$DS_LAST")" "$(field miou_gen "$DS_COL")" \
  "$(field miou_real "$DS_COL")" "${E_DS:-?}" "$T_DS"
printf '| daam 0.2.0 + diffusers 0.21.2 (`tools/testbed_daam.py`) | %s | %s | %s | %s | %s | %s | %s |\n' \
  "$(field detect "$DAAM_LAST")" "$(field miou_gen "$DAAM_LAST")" "$(field miou_real "$DAAM_LAST")" \
  "$(field miou_gen "$DAAM_COL")" "$(field miou_real "$DAAM_COL")" "${E_DAAM:-?}" "$T_DAAM"
echo
echo "miou by shape word (gen/real):"
echo "  diffscope: $(grep '^miou by shape word' "$OUT/diffscope.log" | sed 's/^miou by shape word (gen\/real)://')"
echo "  daam:      $(grep '^miou by shape word' "$OUT/daam.log" | sed 's/^miou by shape word (gen\/real)://')"
grep '^compare with diffscope testbed' "$OUT/daam.log" || true
if [ "$CHECK" -gt 0 ]; then grep '^consistency' "$OUT/check.log" || true; fi
echo "(eval time: the N prompts, generated + real, as each tool reports it; wall time: the whole process, imports and"
echo " model loading included; both single-threaded with THREADS=$THREADS; logs: $OUT)"
