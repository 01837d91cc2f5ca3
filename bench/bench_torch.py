#!/usr/bin/env python3
"""The PyTorch side of the benchmarks: diffusers on PyTorch, CPU fp32 (bench/run_cpu.sh) or CUDA
fp16/bf16 (bench/gpu.sh: --device cuda --dtype fp16).

Two measurements, one per process (so each peak RSS belongs to one measurement):

  --mode unet      one UNet classifier-free-guidance step: the batch-2 UNet2DConditionModel call a
                   pipeline makes per denoising step (latents (2, 4, h, w), timestep 981, context
                   (2, 77, D)); 1 warm-up, then the median of --iters timed calls.
                   Inputs: torch.Generator().manual_seed(--seed): x = randn(2, 4, h, w), then
                   ctx = randn(2, 77, D) — bench_unet draws the very same numbers (host/rng.h), so
                   --check FILE.npy (bench_unet --save-out) compares the two outputs.
  --mode generate  a full StableDiffusionPipeline call: --steps PNDM steps (the model's scheduler),
                   CFG 7.5, torch.Generator("cpu").manual_seed(--seed), at the model's native size,
                   PIL output. Reports the model load time and the generate time separately.

Settings: --dtype weights and activations (default fp32; the fp16 files are upcast at load),
diffusers' default attention processor (AttnProcessor2_0 = torch SDPA; the processor actually in use
is reported), transformers' default attention implementation for CLIP, torch.set_num_threads(--threads,
default: the cores we may run on), torch.inference_mode().

--device cuda: the model on the GPU in --dtype (fp16 is what bench/gpu.sh compares with diffscope's
fp16 CUDA backend); inputs are drawn on the CPU generator exactly as above, then cast and moved.
Every timed call is bracketed by torch.cuda.synchronize(). GPU memory: torch.cuda.max_memory_allocated
/ max_memory_reserved, and "gpu_mem_peak_mb" = the largest device-wide use (cudaMemGetInfo) seen after
a call minus the use right after CUDA initialization — the same measure bench_unet reports.
--profile is CPU-only.

Prints one JSON object on the last stdout line; progress goes to stderr.

  python3 bench/bench_torch.py --model tests/fixtures/sd1_tiny --mode unet --iters 10
  python3 bench/bench_torch.py --model bench/models/sd15-random --mode generate --steps 20
  python3 bench/bench_torch.py --model bench/models/sd15-random --mode unet --device cuda --dtype fp16 \
      --iters 50 --warmup 5
"""
import argparse
import json
import warnings
import os
import resource
import statistics
import sys
import time

PROMPT = "a photograph of an astronaut riding a horse"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def maxrss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def attn_processors(unet):
    return sorted({type(p).__name__ for p in unet.attn_processors.values()})


class GpuMem:
    """Device-wide GPU memory use (cudaMemGetInfo) above the use right after CUDA initialization."""

    def __init__(self, torch, device):
        self.torch, self.on = torch, device == "cuda"
        self.base = self.peak = 0
        if self.on:
            torch.cuda.init()
            free, total = torch.cuda.mem_get_info()
            self.total, self.base = total, total - free
            self.peak = self.base
            torch.cuda.reset_peak_memory_stats()

    def sample(self):
        if self.on:
            free, total = self.torch.cuda.mem_get_info()
            self.peak = max(self.peak, total - free)

    def report(self):
        if not self.on:
            return {}
        t = self.torch
        return {"gpu": t.cuda.get_device_name(), "gpu_mem_peak_mb": (self.peak - self.base) / 1e6,
                "gpu_mem": {"total_mb": self.total / 1e6, "baseline_mb": self.base / 1e6,
                            "peak_mb": (self.peak - self.base) / 1e6,
                            "max_allocated_mb": t.cuda.max_memory_allocated() / 1e6,
                            "max_reserved_mb": t.cuda.max_memory_reserved() / 1e6}}


def sync(args, torch):
    if args.device == "cuda":
        torch.cuda.synchronize()


def bench_unet(args, torch):
    from diffusers import UNet2DConditionModel

    mem = GpuMem(torch, args.device)
    dt_ = args.torch_dtype
    t0 = time.perf_counter()
    unet = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet", torch_dtype=dt_).eval()
    unet.to(args.device)  # the dtype comes from torch_dtype (which keeps _keep_in_fp32_modules in fp32)
    sync(args, torch)
    load_s = time.perf_counter() - t0
    mem.sample()
    cfg = unet.config
    lat = args.size // args.latent_scale if args.size else cfg.sample_size
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(2, cfg.in_channels, lat, lat, generator=g, dtype=torch.float32)
    ctx = torch.randn(2, 77, cfg.cross_attention_dim, generator=g, dtype=torch.float32)
    x, ctx = x.to(device=args.device, dtype=dt_), ctx.to(device=args.device, dtype=dt_)
    t = torch.tensor([args.timestep, args.timestep], dtype=torch.long, device=args.device)
    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.iters):
            sync(args, torch)
            t1 = time.perf_counter()
            out = unet(x, t, encoder_hidden_states=ctx).sample
            sync(args, torch)
            dt = time.perf_counter() - t1
            mem.sample()
            if i >= args.warmup:
                times.append(dt)
            log(f"  unet step {i + 1}/{args.warmup + args.iters}: {dt * 1e3:.1f} ms" +
                (" (warm-up)" if i < args.warmup else ""))
    res = {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "times_s": times,
        "load_s": load_s,
        "latent": [2, cfg.in_channels, lat, lat],
        "context": [2, 77, cfg.cross_attention_dim],
        "attn_processors": attn_processors(unet),
        "out_std": out.float().std().item(),
        "out_finite": bool(torch.isfinite(out).all().item()),
    }
    res.update(mem.report())
    out = out.float().cpu()
    if args.profile and args.device != "cpu":
        log("bench_torch: --profile is CPU-only; skipped")
    elif args.profile:
        res["profile"] = profile_unet_step(unet, x, t, ctx, torch)
    if args.check:
        import numpy as np

        ref = torch.from_numpy(np.load(args.check)).float()
        if tuple(ref.shape) != tuple(out.shape):
            res["check"] = f"shape mismatch: diffscope {tuple(ref.shape)} vs torch {tuple(out.shape)}"
        else:
            d = (ref - out).abs()
            res["check"] = {"max_abs": d.max().item(), "mean_abs": d.mean().item(),
                            "rel_l2": ((ref - out).norm() / out.norm()).item()}
    return res


# Op classes shared with bench_unet's profile (its names), from the top-level aten ops of one step.
ELEMWISE = {"aten::silu", "aten::gelu", "aten::mul", "aten::add", "aten::div", "aten::chunk", "aten::sub",
            "aten::add_", "aten::mul_", "aten::div_", "aten::dropout"}
LAYOUT = {"aten::upsample_nearest2d", "aten::cat", "aten::permute", "aten::reshape", "aten::transpose",
          "aten::contiguous", "aten::view", "aten::unsqueeze", "aten::expand", "aten::to", "aten::slice",
          "aten::flatten", "aten::copy_", "aten::clone", "aten::interpolate"}
EMBED = {"aten::arange", "aten::cos", "aten::sin", "aten::exp", "aten::embedding"}


def op_class(ev):
    n, sh = ev.name, ev.input_shapes
    if n == "aten::conv2d":
        w = sh[1] if len(sh) > 1 else []
        return "conv 1x1" if len(w) == 4 and w[2] == 1 and w[3] == 1 else "conv 3x3 (k>1)"
    if n == "aten::linear":
        return "linear"
    if n == "aten::scaled_dot_product_attention":
        q, k = sh[0], sh[1]
        return "attention self" if q[-2] == k[-2] else "attention cross"
    if n == "aten::group_norm":
        return "group_norm"
    if n == "aten::layer_norm":
        return "layer_norm"
    if n in ELEMWISE:
        return "elementwise"
    if n in LAYOUT:
        return "layout/resample"
    if n in EMBED:
        return "embedding"
    return "other"


def profile_unet_step(unet, x, t, ctx, torch):
    """One more UNet call under torch.profiler: time per op class (top-level aten ops) and top shapes."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        with profile(activities=[ProfilerActivity.CPU]):  # the profiler's first start is slow
            torch.ones(4).add_(1)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            t0 = time.perf_counter()
            unet(x, t, encoder_hidden_states=ctx)
            step_s = time.perf_counter() - t0
    classes, shapes = {}, {}
    total = 0.0
    for ev in prof.events():
        if ev.cpu_parent is not None:
            continue
        s = ev.cpu_time_total * 1e-6
        total += s
        c = op_class(ev)
        acc = classes.setdefault(c, {"s": 0.0, "calls": 0})
        acc["s"] += s
        acc["calls"] += 1
        key = f"{ev.name[6:]} {ev.input_shapes[:2]}"
        sh = shapes.setdefault(key, {"op": key, "s": 0.0, "calls": 0})
        sh["s"] += s
        sh["calls"] += 1
    top = sorted(shapes.values(), key=lambda d: -d["s"])[:15]
    log(f"\nper-op profile of one UNet CFG step ({step_s * 1e3:.1f} ms wall under the profiler):")
    for c, a in sorted(classes.items(), key=lambda kv: -kv[1]["s"]):
        log(f"  {c:18s} {a['s'] * 1e3:10.1f} ms {100 * a['s'] / step_s:6.1f}% {a['calls']:6d} calls")
    log(f"  {'outside ops':18s} {(step_s - total) * 1e3:10.1f} ms")
    log("  top shapes:")
    for d in top:
        log(f"  {d['s'] * 1e3:8.1f} ms {d['calls']:4d}x  {d['op']}")
    return {"step_s": step_s, "classes": classes, "outside_ops_s": step_s - total, "top_shapes": top}


def bench_generate(args, torch):
    from diffusers import StableDiffusionPipeline

    t0 = time.perf_counter()
    mem = GpuMem(torch, args.device)
    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=args.torch_dtype, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.to(args.device)  # the dtype comes from torch_dtype
    sync(args, torch)
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - t0
    vsf = pipe.vae_scale_factor
    size = args.size or pipe.unet.config.sample_size * vsf
    calls = [0]
    orig_forward = pipe.unet.forward

    def counting_forward(*a, **k):
        calls[0] += 1
        return orig_forward(*a, **k)

    pipe.unet.forward = counting_forward
    g = torch.Generator("cpu").manual_seed(args.seed)
    t1 = time.perf_counter()
    with torch.inference_mode():
        img = pipe(PROMPT, num_inference_steps=args.steps, guidance_scale=7.5, generator=g, height=size,
                   width=size, output_type="pil").images[0]
    sync(args, torch)
    gen_s = time.perf_counter() - t1
    mem.sample()
    if args.out:
        img.save(args.out)
    return {
        "generate_s": gen_s,
        "load_s": load_s,
        "total_s": load_s + gen_s,
        "size": size,
        "steps": args.steps,
        "unet_calls": calls[0],
        "scheduler": type(pipe.scheduler).__name__,
        "attn_processors": attn_processors(pipe.unet),
        **mem.report(),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--mode", choices=("unet", "generate"), required=True)
    ap.add_argument("--iters", type=int, default=5, help="timed UNet calls (median reported)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timestep", type=int, default=981)
    ap.add_argument("--size", type=int, default=0, help="image side in pixels (default: the model's native size)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--profile", action="store_true", help="unet mode: one more step under torch.profiler")
    ap.add_argument("--check", help="unet mode: compare the output with this .npy (bench_unet --save-out)")
    ap.add_argument("--out", help="generate mode: also save the image here")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32",
                    help="weights and activations (fp16/bf16: with --device cuda)")
    args = ap.parse_args()
    if args.device == "cpu" and args.dtype != "fp32":
        ap.error("--dtype fp16/bf16 needs --device cuda (the CPU comparison is fp32)")

    warnings.filterwarnings("ignore", category=FutureWarning)
    import torch
    import diffusers
    import transformers

    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        log("bench_torch: --device cuda: torch sees no usable GPU; this benchmark needs one")
        return 1
    args.torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    # latent side = pixels / the VAE's scale factor (2^(levels - 1), from vae/config.json)
    args.latent_scale = 8
    try:
        with open(os.path.join(args.model, "vae", "config.json")) as f:
            args.latent_scale = 2 ** (len(json.load(f)["block_out_channels"]) - 1)
    except OSError:
        pass
    res = bench_unet(args, torch) if args.mode == "unet" else bench_generate(args, torch)
    res.update({
        "side": "pytorch",
        "mode": args.mode,
        "model": args.model,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "dtype": str(args.torch_dtype).replace("torch.", ""),
        "maxrss_kb": maxrss_kb(),
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__},
    })
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
