#!/usr/bin/env bash
# bench_localize.sh — time and peak memory of `diffscope localize` over 20 + 20 prompts × the default 20 steps
# (issue 6 benchmark), one run per part and one for all parts.
#
#   bench/bench_localize.sh [--model DIR] [--bin PATH] [--concept TEXT] [--per-side N] [--parts "neurons layers ..."]
#                           [--device cpu|cuda] [--out DIR]
#
# Defaults: the embedded model (models/default), concept "red circle" with the scene-world detector, 20 prompts per
# side (the templates), parts neurons, layers, heads, timesteps, all. Per run: wall-clock seconds, peak RSS (MiB,
# /usr/bin/time), the number of generations diffscope reports, and seconds per generation. Prints a markdown table;
# raw logs stay in --out (default a temp folder).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="$ROOT/models/default"
BIN=""
CONCEPT="red circle"
PER_SIDE=20
PARTS="neurons layers heads timesteps all"
DEVICE=cpu
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    --concept) CONCEPT="$2"; shift 2 ;;
    --per-side) PER_SIDE="$2"; shift 2 ;;
    --parts) PARTS="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "bench_localize.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$BIN" ]; then
  for b in "$ROOT/build/diffscope" "$ROOT/build-lead/diffscope" "$ROOT/build-bench/diffscope"; do
    [ -x "$b" ] && { BIN="$b"; break; }
  done
fi
[ -x "${BIN:-}" ] || { echo "bench_localize.sh: no diffscope binary (build it, or pass --bin)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "bench_localize.sh: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
OUT="${OUT:-$(mktemp -d /tmp/bench_localize.XXXXXX)}"
mkdir -p "$OUT"
DET=()
case "$CONCEPT" in *circle*|*square*|*triangle*|*star*|*ring*|red*|green*|blue*|yellow*|purple*|orange*)
  [ "$(basename "$MODEL")" = default ] && DET=(--detector shapes) ;;
esac

echo "# localize benchmark: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"
echo "# model $MODEL, concept '$CONCEPT', $PER_SIDE + $PER_SIDE prompts, 20 steps, device $DEVICE, bin $BIN"
echo
echo "| parts | wall s | peak RSS MiB | generations | s / generation |"
echo "|---|---:|---:|---:|---:|"
for p in $PARTS; do
  log="$OUT/$p.log"
  /usr/bin/time -f "%e %M" -o "$OUT/$p.time" "$BIN" localize --model "$MODEL" --concept "$CONCEPT" \
    --prompts-per-side "$PER_SIDE" --parts "$p" --device "$DEVICE" "${DET[@]}" --out "$OUT/$p" >"$log" 2>&1 || {
    echo "bench_localize.sh: localize --parts $p failed, see $log" >&2; tail -5 "$log" >&2; exit 1; }
  read -r wall rss_kb <"$OUT/$p.time"
  gens=$(grep -oE '[0-9]+ generations' "$log" | tail -1 | grep -oE '^[0-9]+' || true)
  per="-"
  [ -n "$gens" ] && [ "$gens" -gt 0 ] && per=$(awk -v w="$wall" -v g="$gens" 'BEGIN{printf "%.3f", w/g}')
  printf '| %s | %.1f | %.0f | %s | %s |\n' "$p" "$wall" "$(awk -v k="$rss_kb" 'BEGIN{print k/1024}')" "${gens:--}" "$per"
done
echo
echo "logs: $OUT"
