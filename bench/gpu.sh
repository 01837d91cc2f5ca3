#!/usr/bin/env bash
# gpu.sh — everything diffscope measures on a GPU, in one run, on a machine with an NVIDIA GPU:
#
#   bench/gpu.sh              build natively, op tests against the real cuBLAS/cuDNN, benchmarks, table
#
#   1. checks the GPU (nvidia-smi) and records it with the driver and toolkit versions;
#   2. configures build-gpu/ with -DDS_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=native (the GPU's compute
#      capability from nvidia-smi when CMake is older than 3.24) and builds diffscope, bench_unet,
#      bench_peak and the native op tests;
#   3. runs the CUDA op tests natively (gpu_test_cuda_ops, gpu_test_cuda_attention, ...: every
#      tests/emu/test_cuda_*.cpp, the very sources of the emulated tests, linked with the real backend,
#      cuBLAS and cuDNN): every op vs the CPU reference; since the emulated runs check the same ops
#      through the cuBLAS/cuDNN stand-ins, a pass here also cross-checks the stand-ins — and directly:
#      gpu_test_emu_cudalibs is the stand-ins' own test built against the real libraries;
#   4. makes bench/models/sd15-random (tools/make_bench_model.py: SD1.5's architecture, random
#      weights; needs torch, diffusers, transformers — installed with pip when missing) if absent;
#   5. benchmarks, all on this GPU in this run:
#        bench_peak                 device-to-device copy GB/s, cublasGemmEx 8192³ fp16/bf16/tf32/fp32
#        bench_unet fp16            one UNet CFG step at 512² (batch 2): capture off (+ per-op profile,
#                                   output saved for the check below), capture on (+ profile),
#                                   off/on alternating (the overhead), bf16 capture off
#        diffscope bench            20-step generations through the public API, capture off/on
#        bench_torch.py fp16        diffusers UNet2DConditionModel, PyTorch SDPA, same inputs; its
#                                   output is compared with diffscope's (rel. L2)
#   6. prints a table (ms per CFG step, capture overhead, peak GPU memory, per-kernel-class GB/s and
#      TFLOP/s beside the measured peaks, the goals) and writes bench/results/gpu-<date>.json, the
#      markdown (bench/results/gpu-<date>.md, also written into the GPU section of docs/benchmarks.md)
#      and the logs (bench/results/gpu-<date>/).
#
# Options: --iters N (timed UNet steps, 50), --warmup N (5), --gen-iters N (timed generations per
#          capture setting in diffscope bench, 3), --model DIR (bench/models/sd15-random),
#          --build DIR (build-gpu), --skip-build, --skip-tests, --skip-torch, --dry-run (print the
#          commands, run nothing), --report DIR (only rebuild the table/markdown from a results folder),
#          --no-docs (do not write the results into docs/benchmarks.md's GPU section),
#          --rehearse-cpu (no GPU needed: the same steps on the CPU backend, fp32, with the fixture model
#          tests/fixtures/sd1_tiny and 3 iterations unless given, using an existing --build (default
#          build-gpu); no build, op tests, bench_peak or bf16; results in $TMPDIR — checks the plumbing
#          and the report, not the GPU).
# Exit status: 0 when everything ran and the op tests passed; 1 when an op test failed or a
# benchmark could not run (the table still shows what did); 2 on bad options or no GPU.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
ITERS=50 WARMUP=5 GEN_ITERS=3 MODEL="bench/models/sd15-random" BUILD="$ROOT/build-gpu"
BUILD_IT=1 TESTS=1 TORCH=1 DRY=0 REPORT_ONLY="" REHEARSE=0 MODEL_SET=0 ITERS_SET=0 DOCS=1
ARGS="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --iters) ITERS="$2"; ITERS_SET=1; shift ;;
    --warmup) WARMUP="$2"; shift ;;
    --gen-iters) GEN_ITERS="$2"; shift ;;
    --model) MODEL="$2"; MODEL_SET=1; shift ;;
    --build) BUILD="$2"; shift ;;
    --skip-build) BUILD_IT=0 ;;
    --skip-tests) TESTS=0 ;;
    --skip-torch) TORCH=0 ;;
    --dry-run) DRY=1 ;;
    --report) REPORT_ONLY="$2"; shift ;;
    --rehearse-cpu) REHEARSE=1 ;;
    --no-docs) DOCS=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
DEV=cuda PREC=fp16
if [ "$REHEARSE" = 1 ]; then
  DEV=cpu PREC=fp32 BUILD_IT=0 TESTS=0 DOCS=0
  [ "$MODEL_SET" = 1 ] || MODEL="tests/fixtures/sd1_tiny"
  [ "$ITERS_SET" = 1 ] || { ITERS=3; WARMUP=1; GEN_ITERS=1; }
fi
for n in "$ITERS" "$WARMUP" "$GEN_ITERS"; do
  case "$n" in ''|*[!0-9]*) echo "gpu.sh: --iters/--warmup/--gen-iters expect non-negative integers" >&2; exit 2 ;; esac
done
if [ "$ITERS" -lt 1 ] || [ "$GEN_ITERS" -lt 1 ]; then
  echo "gpu.sh: --iters and --gen-iters must be >= 1" >&2; exit 2
fi
cd "$ROOT"

if [ -n "$REPORT_ONLY" ]; then
  exec "$PY" "$ROOT/bench/gpu_report.py" "$REPORT_ONLY"
fi

# ---- 1. the GPU --------------------------------------------------------------------------------
say() { echo "== $*" >&2; }
if [ "$DRY" = 0 ] && [ "$REHEARSE" = 0 ]; then
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu.sh: no usable NVIDIA GPU here (nvidia-smi is missing or finds no GPU); this script needs one" >&2
    exit 2
  fi
  nvidia-smi -L >&2
fi
STAMP="$(date -u +%Y%m%d-%H%M%S)"
RES="$ROOT/bench/results/gpu-$STAMP"
[ "$DRY" = 1 ] && RES="${TMPDIR:-/tmp}/gpu-sh-dry-run-$STAMP"
[ "$REHEARSE" = 1 ] && RES="${TMPDIR:-/tmp}/gpu-sh-rehearsal/gpu-$STAMP"
mkdir -p "$RES"
STATUS=0          # becomes 1 when a test fails or a benchmark does not run
FAILED=()         # what failed, for the summary

# run TAG CMD... : runs CMD with stdout to RES/TAG.out and stderr to RES/TAG.log (also echoed), keeps
# the last stdout line as RES/TAG.json when it is JSON. Returns CMD's status (never aborts the script).
run() {
  local tag="$1"; shift
  say "$tag: $*"
  if [ "$DRY" = 1 ]; then return 0; fi
  local rc
  set +e
  "$@" 2>&1 >"$RES/$tag.out" | tee "$RES/$tag.log" >&2
  rc=${PIPESTATUS[0]}
  set -e
  local last
  last="$(tail -n 1 "$RES/$tag.out" 2>/dev/null || true)"
  case "$last" in "{"*) printf '%s\n' "$last" >"$RES/$tag.json" ;; esac
  echo "$rc" >"$RES/$tag.rc"
  if [ "$rc" -ne 0 ]; then
    echo "gpu.sh: $tag failed (exit $rc); see $RES/$tag.log" >&2
    STATUS=1
    FAILED+=("$tag")
  fi
  return 0
}

# the environment, for the record
if [ "$DRY" = 0 ]; then
  "$PY" - "$RES/meta.json" "bench/gpu.sh${ARGS:+ $ARGS}" <<'EOF'
import json, os, subprocess, sys, time
out, cmd = sys.argv[1:3]
def sh(*a):
    try:
        return subprocess.run(a, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception:
        return ""
q = sh("nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm,clocks.max.mem,power.limit",
       "--format=csv,noheader")
nvcc = sh("nvcc", "--version").splitlines()
meta = {"command": cmd, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nvidia_smi": q.splitlines(), "nvcc": nvcc[-1] if nvcc else "",
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), ""),
        "cores": os.cpu_count(),
        "git": sh("git", "rev-parse", "--short", "HEAD") + ("+dirty" if sh("git", "status", "--porcelain", "--untracked-files=no") else "")}
json.dump(meta, open(out, "w"), indent=1)
EOF
fi

# ---- 2. build ----------------------------------------------------------------------------------
# the native tests (bench/CMakeLists.txt): every tests/emu/test_cuda_*.cpp, and the stand-ins' own test
# built against the real cuBLAS/cuDNN
GPU_TESTS=()
for src in "$ROOT"/tests/emu/test_cuda_*.cpp; do
  [ -f "$src" ] && GPU_TESTS+=("gpu_$(basename "$src" .cpp)")
done
[ -f "$ROOT/tests/emu/test_emu_cudalibs.cpp" ] && GPU_TESTS+=(gpu_test_emu_cudalibs)
ARCH=native
CMAKE_VER="$(cmake --version 2>/dev/null | head -n 1 | awk '{print $3}')"
if [ -z "$CMAKE_VER" ] || ! printf '3.24\n%s\n' "$CMAKE_VER" | sort -V -C; then
  # CMake < 3.24 has no "native": use the GPU's compute capability (8.0 → 80)
  CC="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')"
  ARCH="${CC:-80;90}"
fi
if [ "$BUILD_IT" = 1 ]; then
  # DS_BUILD_TESTS=OFF: the emulated test suite is not needed here; the native op tests are bench/ targets
  run configure cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDS_CUDA=ON \
    "-DCMAKE_CUDA_ARCHITECTURES=$ARCH" -DDS_BUILD_TESTS=OFF
  [ "$STATUS" = 0 ] || { echo "gpu.sh: configuring failed (is the CUDA toolkit with cuBLAS and cuDNN 9 installed?)" >&2; exit 1; }
  run build cmake --build "$BUILD" -j"$(nproc)" --target diffscope bench_unet bench_peak
  [ "$STATUS" = 0 ] || { echo "gpu.sh: the build failed; see $RES/build.log" >&2; exit 1; }
  # the native op tests one by one: one that does not build does not stop the benchmarks
  if [ "$TESTS" = 1 ]; then
    for t in "${GPU_TESTS[@]}"; do
      run "build_$t" cmake --build "$BUILD" -j"$(nproc)" --target "$t"
    done
  fi
fi
BIN="$BUILD/diffscope" BENCH_UNET="$BUILD/bench/bench_unet" BENCH_PEAK="$BUILD/bench/bench_peak"
if [ "$DRY" = 0 ]; then
  need=("$BIN" "$BENCH_UNET"); [ "$REHEARSE" = 1 ] || need+=("$BENCH_PEAK")
  for b in "${need[@]}"; do
    [ -x "$b" ] || { echo "gpu.sh: $b was not built (is the CUDA backend enabled? see $RES/configure.log)" >&2; exit 1; }
  done
fi

# ---- 3. the op tests, natively ------------------------------------------------------------------
if [ "$TESTS" = 1 ]; then
  for t in "${GPU_TESTS[@]}"; do
    if [ -x "$BUILD/bench/$t" ] || [ "$DRY" = 1 ]; then
      run "$t" "$BUILD/bench/$t"
    else
      echo "gpu.sh: $t was not built (see $RES/build_$t.log)" >&2
      STATUS=1; FAILED+=("$t (not built)")
    fi
  done
fi

# ---- 4. the model ------------------------------------------------------------------------------
have_torch() { "$PY" -c "import torch, diffusers, transformers" >/dev/null 2>&1; }
need_torch() {  # 0 when torch, diffusers and transformers import (after a pip install if needed)
  have_torch && return 0
  say "installing torch, diffusers, transformers (pip)"
  [ "$DRY" = 1 ] && return 1  # a dry run describes this machine as it is
  "$PY" -m pip install torch diffusers transformers >&2 || true
  have_torch
}
# Without the random model and without torch (a lent GPU machine may reach no package index), the UNet
# benchmarks still run: bench_unet --synthetic builds the SD1.5 UNet from bench/configs/sd15 alone with
# random weights; the whole-generation and diffusers columns are then left out.
SYNTH=()
if [ ! -f "$ROOT/$MODEL/unet/config.json" ] && [ ! -f "$MODEL/unet/config.json" ]; then
  if [ "$MODEL" != "bench/models/sd15-random" ]; then
    echo "gpu.sh: --model $MODEL has no unet/config.json" >&2
    exit 2
  fi
  if need_torch; then
    run make_model "$PY" "$ROOT/tools/make_bench_model.py" --out "$ROOT/bench/models/sd15-random"
    [ "$STATUS" = 0 ] || [ "$DRY" = 1 ] || { echo "gpu.sh: could not make the bench model" >&2; exit 1; }
  else
    say "no torch here: UNet benchmarks on synthetic random weights (bench/configs/sd15); no diffusers column"
    MODEL="bench/configs/sd15"
    SYNTH=(--synthetic)
    TORCH=0
  fi
fi

# ---- 5. benchmarks -----------------------------------------------------------------------------
U=(--model "$MODEL" --device "$DEV" --iters "$ITERS" --warmup "$WARMUP" "${SYNTH[@]+"${SYNTH[@]}"}")
[ "$REHEARSE" = 1 ] || run peak "$BENCH_PEAK"
run unet_off "$BENCH_UNET" "${U[@]}" --precision "$PREC" --profile --top 20 --save-out "$RES/unet_off_out.npy"
run unet_on "$BENCH_UNET" "${U[@]}" --precision "$PREC" --capture --profile --top 20
run unet_compare "$BENCH_UNET" "${U[@]}" --precision "$PREC" --compare-capture
[ "$REHEARSE" = 1 ] || run unet_bf16 "$BENCH_UNET" "${U[@]}" --precision bf16
[ ${#SYNTH[@]} -gt 0 ] || run cli_bench "$BIN" bench --model "$MODEL" --device "$DEV" --precision "$PREC" --steps 20 --iters "$GEN_ITERS" \
  --warmup 1 --capture both --json
if [ "$TORCH" = 1 ] && need_torch; then
  check=(); [ -f "$RES/unet_off_out.npy" ] && check=(--check "$RES/unet_off_out.npy")  # diffscope's output
  run torch "$PY" "$ROOT/bench/bench_torch.py" --model "$MODEL" --mode unet --device "$DEV" --dtype "$PREC" \
    --iters "$ITERS" --warmup "$WARMUP" "${check[@]+"${check[@]}"}"
fi

# ---- 6. report ---------------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
  say "report: $PY bench/gpu_report.py $RES"
  rm -rf "$RES"
  exit 0
fi
printf '%s\n' "${FAILED[@]+"${FAILED[@]}"}" >"$RES/failed.txt"
docs=(); [ "$DOCS" = 1 ] && docs=(--docs "$ROOT/docs/benchmarks.md")
"$PY" "$ROOT/bench/gpu_report.py" "$RES" "${docs[@]+"${docs[@]}"}" || STATUS=1
if [ "$STATUS" != 0 ]; then
  echo "gpu.sh: not everything passed: ${FAILED[*]-report}" >&2
fi
exit "$STATUS"
