#!/usr/bin/env python3
"""Regenerate tests/fixtures/localize/: an independent numpy/PyTorch reference of ConceptPrune's neuron statistics
and selection on the SD1 tiny fixture model.

    python tools/make_localize_fixtures.py

diffusers' StableDiffusionPipeline runs the fixture model (fp32, CPU) on two small prompt sets per case, with a
forward hook on every transformer block's `ff.net[0]` (the GEGLU module: its output is h = a * GELU(g), the input of
ff.net.2). For every UNet call c, block b and prompt side (with the concept / without), numpy accumulates

    sumsq[c, b, j] = sum over prompts, over the rows r of the conditional half (the last batch entry) of
                     (h_rj / max(||h_r||, 1e-12))**2                   (float64; torch F.normalize's eps)

and then, following ConceptPrune (ruchikachavhan/concept-prune, wanda/wanda.py + utils.ColumnNormCalculator +
wanda/save_union_over_time.py), with ||X_j|| = sqrt(sumsq / P) (P = prompts of that side; ConceptPrune's
sqrt(sumsq) when both sides have as many prompts):

    S = |W| * ||X_j||                      W = ff.net.2.weight (C, F), float64
    per row: the first k = int(ratio * F) columns of a stable descending sort of S(with), kept where
             S(with) > S(without)          (ConceptPrune's binary_mask_target * (metric_target > metric_base))
    union over calls 0 .. tau-1: kept where count > union_min * tau  (save_union_over_time's select_ratio)

Nothing here shares code with diffscope. tests/test_localize.c runs diffscope on the same prompts (parameters from
the metadata) and compares the norms (1e-4 relative) and the selections (exact, except near-ties).

Output, per case <name>:
    <name>.norms_with.<block>, <name>.norms_without.<block>   (calls, F) float32: ||X_j||
    <name>.mask.<block>                                          (calls, C, F) uint8: per-call selection
    <name>.union.<block>                                         (C, F) uint8
    <name>.timesteps                                             (calls,) float32
metadata: format diffscope-fixture, cases (JSON: prompts, concept, seed, steps, guidance, ratio, tau, union_min,
size), blocks (JSON: the transformer block paths), library versions.
Byte-stable on a given machine (torch single-threaded, sorted headers). CI never runs this; the output is committed.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIX = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(FIX, "localize")
SD1 = os.path.join(FIX, "sd1_tiny")
BUDGET = 1_500_000

sys.modules["ftfy"] = None  # same tokenizer path as tools/make_fixtures.py
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402
from diffusers.models.activations import GEGLU  # noqa: E402
from st_write import write_deterministic  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
torch.set_grad_enabled(False)

CASES = [
    # unequal prompt counts on purpose: the per-prompt norm matters
    dict(name="cfg", concept="red circle", seed=7, steps=4, guidance=7.5, ratio=0.05, tau=2, union_min=0.0,
         with_prompts=["a red circle in a kitchen", "a red circle in a park", "a red circle on a street"],
         without_prompts=["a kitchen", "a park"]),
    # no classifier-free guidance (batch 1), a larger ratio and a union threshold
    dict(name="nocfg", concept="blue square", seed=3, steps=3, guidance=1.0, ratio=0.1, tau=3, union_min=0.34,
         with_prompts=["a blue square on a white background", "a blue square and a green star"],
         without_prompts=["a white background", "a green star"]),
]
SIZE = 32


def versions():
    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "safetensors": safetensors.__version__, "numpy": np.__version__}


def save(tensors, path, metadata):
    """Byte-stable safetensors: sorted tensor names and metadata (tools/st_write.py)."""
    return write_deterministic(path, tensors, metadata)


def blocks_of(unet):
    """(path, GEGLU module, ff.net.2 weight) of every transformer block, keyed by path."""
    out = {}
    for name, mod in unet.named_modules():
        if name.endswith(".ff") and isinstance(mod.net[0], GEGLU):
            out[name[: -len(".ff")]] = (mod.net[0], mod.net[2].weight.detach().double().numpy())
    return out


def forward_order(paths):
    """down_blocks, mid_block, up_blocks (the UNet's execution order), numerically within each."""
    def key(p):
        parts = p.split(".")
        kind = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}[parts[0]]
        nums = [int(x) for x in parts if x.isdigit()]
        return (kind, nums)
    return sorted(paths, key=key)


def run_case(pipe, case):
    unet = pipe.unet
    blocks = blocks_of(unet)
    order = forward_order(blocks)
    state = {"call": -1, "side": 0}
    n_calls_box = {}
    acc = {}

    def pre_hook(mod, args, kwargs=None):
        state["call"] += 1

    def make_hook(path):
        def hook(mod, inp, out):
            h = out[-1].double().numpy()  # the conditional half: the last batch entry, (rows, F)
            nrm = np.sqrt((h * h).sum(axis=1, keepdims=True))
            v = h / np.maximum(nrm, 1e-12)
            key = (state["side"], state["call"], path)
            acc[key] = acc.get(key, 0.0) + (v * v).sum(axis=0)
        return hook

    handles = [unet.register_forward_pre_hook(pre_hook)]
    for p in order:
        handles.append(blocks[p][0].register_forward_hook(make_hook(p)))
    timesteps = None
    for side, prompts in ((0, case["with_prompts"]), (1, case["without_prompts"])):
        state["side"] = side
        for prompt in prompts:
            state["call"] = -1
            pipe(prompt, height=SIZE, width=SIZE, num_inference_steps=case["steps"], guidance_scale=case["guidance"],
                 generator=torch.Generator("cpu").manual_seed(case["seed"]), output_type="latent")
            n_calls_box["n"] = state["call"] + 1
            timesteps = pipe.scheduler.timesteps.float().numpy().copy()
    for h in handles:
        h.remove()
    n_calls = n_calls_box["n"]
    assert n_calls == len(timesteps)
    P = [len(case["with_prompts"]), len(case["without_prompts"])]
    tensors = {}
    name = case["name"]
    tensors[f"{name}.timesteps"] = timesteps.astype(np.float32)
    tau, ratio, umin = case["tau"], case["ratio"], case["union_min"]
    total_sel = 0
    for path in order:
        W = np.abs(blocks[path][1])  # (C, F)
        C, F = W.shape
        k = int(ratio * F)
        norms = [np.stack([np.sqrt(acc[(s, c, path)] / P[s]) for c in range(n_calls)]) for s in (0, 1)]
        masks = np.zeros((n_calls, C, F), np.uint8)
        for c in range(n_calls):
            sc = W * norms[0][c][None, :]
            sb = W * norms[1][c][None, :]
            top = np.argsort(-sc, axis=1, kind="stable")[:, :k]
            sel = np.zeros((C, F), bool)
            np.put_along_axis(sel, top, True, axis=1)
            masks[c] = (sel & (sc > sb)).astype(np.uint8)
        count = masks[:tau].astype(np.int64).sum(axis=0)
        union = ((count > 0) & (count > umin * tau)).astype(np.uint8)
        total_sel += int(union.sum())
        tensors[f"{name}.norms_with.{path}"] = norms[0].astype(np.float32)
        tensors[f"{name}.norms_without.{path}"] = norms[1].astype(np.float32)
        tensors[f"{name}.mask.{path}"] = masks
        tensors[f"{name}.union.{path}"] = union
    print(f"case {name}: {n_calls} calls, {len(order)} blocks, {total_sel} (row, column) pairs in the union")
    return tensors, order


def main():
    os.makedirs(OUT, exist_ok=True)
    pipe = StableDiffusionPipeline.from_pretrained(SD1, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    tensors, order = {}, None
    for case in CASES:
        t, order = run_case(pipe, case)
        tensors.update(t)
    meta = {"format": "diffscope-fixture", "version": "1", "kind": "localize", "model": "sd1_tiny",
            "size": str(SIZE), "cases": json.dumps(CASES), "blocks": json.dumps(order)}
    meta.update(versions())
    path = os.path.join(OUT, "sd1_neurons.safetensors")
    n = save(tensors, path, meta)
    print(f"wrote {path}: {n} bytes")
    assert n < BUDGET, f"fixture too large: {n} bytes (budget {BUDGET})"


if __name__ == "__main__":
    main()
