#!/usr/bin/env bash
# cli_cuda.sh — the diffscope CLI end to end with --device cuda on the emulated CUDA backend
# (diffscope_emu: the CLI linked with kernels/cuda built for the SIMT emulator and the cuBLAS /
# cuDNN stand-ins) against the same commands with --device cpu (the native diffscope binary).
#
# On the sd1 fixture model: generate (final latents via --save-latents) for --precision fp32,
# fp16 and bf16, and heatmap (maps.npy: the cross-attention capture inside the CUDA attention
# kernel) for fp32 and fp16, localize's neuron statistics (device-side column_stats) for fp32 and
# fp16; erase's text encoding and shared fp64 solve (cuSOLVER stand-in) for fp32; --device auto picks
# the (emulated) GPU without a notice.
# Metric: max |cuda − cpu| / max |cpu| over the .npy values.
#   fp32 1e-4: fp32 in another summation order (measured 3.3e-6 latents, 9e-7 maps);
#   fp16 2e-2, bf16 1e-1: every activation rounded to the storage type, over 4 denoising steps
#   with CFG (the sampler feeds each step's rounding into the next); measured fp16 3.4e-3
#   latents, 2.5e-3 maps, bf16 3.2e-2 latents. A wrong op is O(1).
set -u
EMU="${1:?usage: cli_cuda.sh path/to/diffscope_emu path/to/diffscope}"
CPU="${2:?usage: cli_cuda.sh path/to/diffscope_emu path/to/diffscope}"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
M=tests/fixtures/sd1_tiny
fails=0
passes=0

# the float32 values of a little-endian .npy (version 1 header), one per line
npy_floats() {
  local hl
  hl=$(od -An -tu2 -j8 -N2 "$1" | tr -d ' ')
  od -An -v -tf4 -j$((10 + hl)) "$1" | tr -s ' ' '\n' | grep -v '^$'
}

# npy_cmp what got.npy ref.npy tol
npy_cmp() {
  local what=$1 got=$2 ref=$3 tol=$4
  if [ ! -s "$got" ] || [ ! -s "$ref" ]; then
    echo "FAIL $what: missing output"; fails=$((fails + 1)); return
  fi
  local res
  res=$(paste <(npy_floats "$got") <(npy_floats "$ref") | awk -v tol="$tol" '
    { n++; if (NF != 2) bad = 1
      d = $1 - $2; if (d < 0) d = -d; if (!(d <= md)) md = d
      r = $2 < 0 ? -$2 : $2; if (r > mr) mr = r
      if ($1 != $1 + 0 || $1 ~ /nan|inf/) bad = 1 }
    END { rel = mr > 0 ? md / mr : md
          printf "%s %d %.3g\n", (bad || n == 0 || !(rel <= tol)) ? "FAIL" : "ok", n, rel }')
  set -- $res
  if [ "$1" = ok ]; then
    passes=$((passes + 1)); echo "ok   $what: $2 values, max|d|/max|ref| $3 (tol $tol)"
  else
    fails=$((fails + 1)); echo "FAIL $what: $2 values, max|d|/max|ref| $3 (tol $tol)"
  fi
}

run() {  # run what command... (must exit 0)
  local what=$1; shift
  local out
  if ! out=$("$@" 2>&1); then
    echo "FAIL $what: $out" | head -5; fails=$((fails + 1)); return 1
  fi
  return 0
}

G=(generate --model $M --prompt "a red circle" --steps 4 --seed 3 --quiet)
run "generate cpu" "$CPU" "${G[@]}" --device cpu --out "$T/cpu.png" --save-latents "$T/cpu.npy"
for p in fp32:1e-4 fp16:2e-2 bf16:1e-1; do
  prec=${p%%:*} tol=${p##*:}
  run "generate cuda $prec" "$EMU" "${G[@]}" --device cuda --precision "$prec" \
    --out "$T/cuda_$prec.png" --save-latents "$T/cuda_$prec.npy" &&
    npy_cmp "generate --device cuda --precision $prec: latents" "$T/cuda_$prec.npy" "$T/cpu.npy" "$tol"
done

H=(heatmap --model $M --prompt "a red circle" --steps 3 --seed 5 --quiet)
run "heatmap cpu" "$CPU" "${H[@]}" --device cpu --out "$T/hm_cpu"
for p in fp32:1e-4 fp16:2e-2; do
  prec=${p%%:*} tol=${p##*:}
  run "heatmap cuda $prec" "$EMU" "${H[@]}" --device cuda --precision "$prec" --out "$T/hm_$prec" &&
    npy_cmp "heatmap --device cuda --precision $prec: maps.npy" "$T/hm_$prec/maps.npy" "$T/hm_cpu/maps.npy" "$tol"
done

# localize: ConceptPrune's neuron statistics accumulate on the device (column_stats with L2-normalized
# rows, never downloading the FFN activations); fp32 selects the very same neurons as the CPU
L=(localize --model $M --concept "red circle" --parts neurons --prompts-per-side 2 --steps 4 --quiet)
run "localize cpu" "$CPU" "${L[@]}" --device cpu --out "$T/loc_cpu"
for p in fp32:1e-4 fp16:2e-2; do
  prec=${p%%:*} tol=${p##*:}
  run "localize cuda $prec" "$EMU" "${L[@]}" --device cuda --precision "$prec" --out "$T/loc_$prec" &&
    npy_cmp "localize --device cuda --precision $prec: neuron_norms.npy" "$T/loc_$prec/neuron_norms.npy" \
      "$T/loc_cpu/neuron_norms.npy" "$tol"
done
if cmp -s "$T/loc_fp32/neurons.json" "$T/loc_cpu/neurons.json"; then
  passes=$((passes + 1)); echo "ok   localize --precision fp32: neurons.json identical to the CPU's"
else
  fails=$((fails + 1)); echo "FAIL localize --precision fp32: neurons.json differs from the CPU's"
fi

# erase: the text encoder on the device and the shared fp64 solve through cuSOLVER (the stand-in); the
# delta equals the CPU's (LAPACK) to the keys' fp32 agreement amplified by cond (fixture: ~1e2): 1e-4
E=(erase --model $M --concept "cat,dog" --preserve "a red circle" --delta --quiet)
run "erase cpu" "$CPU" "${E[@]}" --device cpu --out "$T/erase_cpu.safetensors"
if ! "$EMU" "${E[@]}" --device cuda --precision fp32 --out "$T/erase_cuda.safetensors" >"$T/erase_cuda.out" 2>&1; then
  fails=$((fails + 1)); echo "FAIL erase cuda fp32: $(head -5 "$T/erase_cuda.out")"
else
  if grep -q "fp64 cuSOLVER potrf/potrs" "$T/erase_cuda.out"; then
    passes=$((passes + 1)); echo "ok   erase --device cuda: the shared solve ran through cuSOLVER"
  else
    fails=$((fails + 1)); echo "FAIL erase --device cuda: no 'fp64 cuSOLVER potrf/potrs' in the report: $(head -1 "$T/erase_cuda.out")"
  fi
  if python3 - "$T/erase_cuda.safetensors" "$T/erase_cpu.safetensors" <<'PY'
import json, struct, sys
def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); data = f.read()
    out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        a, b = v["data_offsets"]; fmt = {"F32": "f", "F16": "e"}[v["dtype"]]
        out[k] = struct.unpack("<%d%s" % ((b - a) // struct.calcsize(fmt), fmt), data[a:b])
    return out
g, r = load(sys.argv[1]), load(sys.argv[2])
assert g.keys() == r.keys() and g, "different tensors"
worst = max(max(abs(x - y) for x, y in zip(g[k], r[k])) / max(max(abs(y) for y in r[k]), 1e-30) for k in r)
print("erase delta: max |cuda - cpu| / max |cpu| = %.3g" % worst)
sys.exit(0 if worst <= 1e-4 else 1)
PY
  then passes=$((passes + 1)); echo "ok   erase --device cuda --precision fp32: ΔW equals the CPU's (1e-4)"
  else fails=$((fails + 1)); echo "FAIL erase --device cuda --precision fp32: ΔW differs from the CPU's"
  fi
fi

# out of GPU memory (the emulated GPU shrunk by EMU_DEVICE_MEM_MB): --device cuda is one clear message,
# exit 1 and no output file, whether the weights or the activations do not fit; --device auto runs a
# model the GPU cannot hold on the CPU, with a notice
oom() {  # what MB pattern args...
  local what=$1 mb=$2 pat=$3; shift 3
  local out rc
  out=$(EMU_DEVICE_MEM_MB=$mb "$EMU" "$@" 2>&1); rc=$?
  if [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -qE -- "$pat" <<<"$out" && [ ! -e "$T/oom.png" ]; then
    passes=$((passes + 1)); echo "ok   $what: exit $rc, $(tail -1 <<<"$out")"
  else
    fails=$((fails + 1)); echo "FAIL $what: exit $rc: $out"
  fi
}
oom "out of GPU memory for the weights" 1 "^diffscope: out of GPU memory: the weights need [0-9.]+ MB" \
  generate --model $M --prompt x --steps 1 --device cuda --out "$T/oom.png"
oom "out of GPU memory for an op's scratch" 4 "^diffscope: out of GPU memory: an op needs [0-9.]+ MB of scratch" \
  generate --model $M --prompt x --steps 1 --device cuda --out "$T/oom.png"
oom "out of GPU memory for the activations" 8 "^diffscope generate: out of GPU memory: .* for the activations" \
  generate --model $M --prompt x --steps 1 --width 256 --height 256 --device cuda --out "$T/oom.png"
out=$(EMU_DEVICE_MEM_MB=1 "$EMU" generate --model $M --prompt x --steps 1 --device auto --out "$T/auto_oom.png" 2>&1)
if [ $? -eq 0 ] && grep -q "running on the CPU: out of GPU memory" <<<"$out" && [ -s "$T/auto_oom.png" ]; then
  passes=$((passes + 1)); echo "ok   --device auto falls back to the CPU when the model does not fit"
else
  fails=$((fails + 1)); echo "FAIL --device auto with too little GPU memory: $out"
fi

# benchmarks on the emulator only say that they need a GPU
out=$("$EMU" bench --model $M --device cuda --steps 2 2>&1)
if [ $? -eq 1 ] && grep -q "benchmarks need a real GPU" <<<"$out"; then
  passes=$((passes + 1)); echo "ok   bench under the emulator refuses to time"
else
  fails=$((fails + 1)); echo "FAIL bench under the emulator: $out"
fi

# auto: the emulated GPU is usable, so no CPU-fallback notice
out=$("$EMU" generate --model $M --prompt x --steps 1 --out "$T/auto.png" --device auto 2>&1)
if [ $? -eq 0 ] && ! grep -q "running on the CPU" <<<"$out" && [ -s "$T/auto.png" ]; then
  passes=$((passes + 1)); echo "ok   --device auto uses the GPU"
else
  fails=$((fails + 1)); echo "FAIL --device auto: $out"
fi

echo "cli_cuda: $passes passed, $fails failed"
[ $fails -eq 0 ]
