#!/usr/bin/env python3
"""Regenerate tests/fixtures/edit/: an independent numpy/PyTorch reference of UCE and TIME on the tiny fixture
models (their real text-encoder outputs and attn2 weights), plus what diffusers loads back from models that
diffscope edited.

    cmake --build build-edit && python tools/make_edit_fixtures.py [--bin build-edit/diffscope]

The reference follows the published code, not diffscope's C:
  * UCE: rohitgandikota/unified-concept-editing trainscripts/uce_sd_erase.py and uce_sd_debias.py — keys are
    text_encoder(ids)[0] at attention_mask.sum() - 2 (the prompt's last token; the BOS position for ""), targets
    v* = module(guide embedding), and for every attn2.to_k/to_v module W' = (λW + Σ s v* cᵀ) @ inverse(λI + Σ s c cᵀ),
    computed here per module in float64. The paper-era "all tokens" keys follow train-scripts/train_erase.py.
  * TIME: bahjat-kawar/time-diffusion apply_time.py / train_funcs.py — the "A photo of / An image of / A picture of"
    augmentations, the token alignment (with "an" counted as "a"), keys = all 77 source positions, targets =
    module(destination embedding at the aligned position), λ = 0.1, to_v and to_k.
Nothing here shares code with diffscope. The C test (tests/test_edit.c) checks
  (1) diffscope's solve on these keys/targets against the reference ΔW (1e-6 relative),
  (2) diffscope's own keys (its text encoder) against these keys, and the whole edit end to end,
  (3) diffscope applying the reference ΔW (edit/sd1_erase.delta.safetensors) to the single file and the folder
      writes exactly what diffusers loaded from the files diffscope wrote here (`reload_single.*`, `reload_folder.*`).

Byte-stable (torch and numpy single-threaded, fixed inputs, sorted safetensors headers): a rerun on the same machine
and library versions rewrites identical files. CI never runs this; the output is committed (< 2 MB).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIX = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(FIX, "edit")
SD1 = os.path.join(FIX, "sd1_tiny")
SD2 = os.path.join(FIX, "sd2_tiny")
BUDGET = 2_000_000

# Same tokenizer path as tools/make_fixtures.py (transformers' no-ftfy CLIPTokenizer).
sys.modules["ftfy"] = None
# numpy's BLAS single-threaded too: reproducible bytes
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from st_write import write_deterministic  # noqa: E402
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
torch.set_grad_enabled(False)

# ----------------------------------------------------------------------------------------------------------------
# Cases. Every UCE/TIME case is run by tests/test_edit.c with exactly these parameters (read from the metadata).
# ----------------------------------------------------------------------------------------------------------------
CASES = [
    dict(name="sd1_erase", model="sd1", method="uce", concepts=["cat", "Kelly Mckernan"], guides=[""],
         preserve=["dog", "a red circle"], lam=0.5, erase_scale=1.0, preserve_scale=1.0, all_tokens=False),
    dict(name="sd1_art", model="sd1", method="uce", concepts=["Van Gogh", "Claude Monet"], guides=["art", "painting"],
         preserve=["a photo of a house"], lam=0.3, erase_scale=2.0, preserve_scale=0.5, all_tokens=True),
    dict(name="sd1_debias", model="sd1", method="debias", concepts=["doctor", "nurse"], attributes=["male", "female"],
         desired=[0.5, 0.5], measured=[[0.8, 0.2], [0.1, 0.9]], preserve=["a person"], lam=0.5, erase_scale=1.0,
         preserve_scale=1.0),
    dict(name="sd1_time", model="sd1", method="time", src="a pack of roses", dst="a pack of blue roses", lam=0.1,
         augment=True),
    # in-context keys (MACE's closed-form refinement; diffscope erase --context): templates with {} and plain
    # prompts naming a concept; a two-token concept with a one-token guide; the empty guide deletes the word
    dict(name="sd1_context", model="sd1", method="uce", concepts=["cat", "Van Gogh"], guides=["", "art"],
         preserve=["dog", "apple"], contexts=["a photo of a {}", "a {} sitting on a sofa", "a painting by Van Gogh of a house",
                                              "my cat, asleep", "An {} on the table"],
         lam=0.5, erase_scale=1.5, preserve_scale=0.7, all_tokens=False),
    dict(name="sd2_erase", model="sd2", method="uce", concepts=["astronaut"], guides=[""], preserve=["horse"],
         lam=0.5, erase_scale=1.0, preserve_scale=1.0, all_tokens=False),
    dict(name="sd2_time", model="sd2", method="time", src="An apple on a table", dst="A green apple on a wooden table",
         lam=0.1, augment=True),
]
# diffusers reload checks: (case, input, what diffscope writes)
RELOADS = [
    ("sd1_erase", os.path.join(FIX, "sd1_tiny.safetensors"), "single"),  # fp32 single file, LDM key names
    ("sd1_erase", SD1, "folder"),                                         # fp16 diffusers folder
]


def save_file(tensors, path, metadata):
    """Byte-stable safetensors, tensors in the order given (tools/st_write.py)."""
    write_deterministic(path, tensors, metadata, sort_keys=False)


def load_text(model):
    folder = SD1 if model == "sd1" else SD2
    tok = CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer"))
    te = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"), torch_dtype=torch.float32).eval()
    return tok, te


def attn2_weights(model):
    """(name, float64 W) of every attn2.to_k / to_v, in UNet module order (named_modules), from the folder."""
    from diffusers import UNet2DConditionModel
    folder = SD1 if model == "sd1" else SD2
    unet = UNet2DConditionModel.from_pretrained(os.path.join(folder, "unet"), torch_dtype=torch.float32)
    out = []
    for name, module in unet.named_modules():
        if "attn2" in name and (name.endswith("to_k") or name.endswith("to_v")):
            assert module.bias is None
            out.append(("unet." + name + ".weight", module.weight.detach().double().numpy().copy()))
    return out


def encode(tok, te, texts):
    ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    emb = te(ids.input_ids)[0]
    last = (ids.attention_mask.sum(dim=1) - 2).tolist()  # UCE: attention_mask.sum() - 2
    return emb.double().numpy(), [int(x) for x in last], ids.input_ids.numpy()


def uce_keys(case, tok, te):
    """Keys, targets and scales exactly as the UCE scripts build them (targets as input vectors t, v* = W t)."""
    K, T, S = [], [], []
    lam = case["lam"]
    if case["method"] == "debias":
        # uce_sd_debias.py: v* = W c + Σ δ W a  (δ = desired - measured; here one round with given measurements)
        texts = case["concepts"] + case["attributes"] + case["preserve"]
        emb, last, _ = encode(tok, te, texts)
        e = {t: emb[i, last[i]] for i, t in enumerate(texts)}
        for ci, c in enumerate(case["concepts"]):
            t = e[c].copy()
            for ai, a in enumerate(case["attributes"]):
                t += (case["desired"][ai] - case["measured"][ci][ai]) * e[a]
            K.append(e[c]); T.append(t); S.append(case["erase_scale"])
        for p in case["preserve"]:
            K.append(e[p]); T.append(e[p]); S.append(case["preserve_scale"])
        return np.array(K), np.array(T), np.array(S), lam, None
    guides = case["guides"] * (len(case["concepts"]) if len(case["guides"]) == 1 else 1)
    texts = list(dict.fromkeys(case["concepts"] + guides + case["preserve"]))
    emb, last, _ = encode(tok, te, texts)
    idx = {t: i for i, t in enumerate(texts)}
    positions = []
    for c, g in zip(case["concepts"], guides):
        ic, ig = idx[c], idx[g]
        positions.append(last[ic])
        if case["all_tokens"]:
            # train-scripts/train_erase.py: old_emb[i : 77 - (far - i)] paired with new_emb[j : 77 - (far - j)]
            i, j = last[ic], last[ig]
            far = max(i, j)
            for r in range(77 - far):
                K.append(emb[ic, i + r]); T.append(emb[ig, j + r]); S.append(case["erase_scale"])
        else:
            K.append(emb[ic, last[ic]]); T.append(emb[ig, last[ig]]); S.append(case["erase_scale"])
    for p in case["preserve"]:
        ip = idx[p]
        if case["all_tokens"]:
            for r in range(77):
                K.append(emb[ip, r]); T.append(emb[ip, r]); S.append(case["preserve_scale"])
        else:
            K.append(emb[ip, last[ip]]); T.append(emb[ip, last[ip]]); S.append(case["preserve_scale"])
    return np.array(K), np.array(T), np.array(S), lam, np.array(positions, dtype=np.int32)


def context_keys(case, tok, te):
    """In-context keys, written from the method's description (MACE, Lu et al. 2024, closed-form refinement): for
    each context prompt P = prefix + concept + suffix, every position q from the concept's first token a on is a
    key; its target is the prompt with the guide in the concept's place at position a + n_guide - 1 for the
    concept's own tokens and q - n_concept + n_guide after them (clamped to 76); each preserved word x in the
    concept's place gives identity keys for its positions a..76, once per distinct prompt. A line with "{}" is a
    template; otherwise the line must name a concept (first whole-word, case-insensitive occurrence). An article
    "a"/"an" just before the place agrees with the word put there (or, for the empty guide, the next word)."""
    import re
    guides = case["guides"] * (len(case["concepts"]) if len(case["guides"]) == 1 else 1)
    ntok = lambda text: len(tok(text).input_ids) - 2

    def put(pre, word, suf):
        """pre + word + suf, with an article "a"/"an" ending pre made to agree with what follows it."""
        follow = word if word else suf.lstrip(" ")
        m = re.search(r"(?:^|[^A-Za-z0-9])([Aa]n?)( *)$", pre)
        if m and follow[:1].isalpha():
            art = m.group(1)[0] + ("n" if follow[0].lower() in "aeiou" else "")
            pre = pre[:m.start(1)] + art + m.group(2)
        return pre, pre + word + suf
    items, kept = [], set()   # (kind, src, dst, a, n_src, n_dst)
    for line in case["contexts"]:
        for c, g in zip(case["concepts"], guides):
            if "{}" in line:
                at, ln = line.index("{}"), 2
            else:
                m = re.search(r"(?<![A-Za-z0-9])" + re.escape(c) + r"(?![A-Za-z0-9])", line, re.IGNORECASE)
                if not m:
                    continue
                at, ln = m.start(), len(c)
            pre0, suf = line[:at], line[at + ln:]
            pre, src = put(pre0, c, suf)
            pre_g, dst = put(pre0, g, suf)
            a = 1 + ntok(pre)
            items.append(("erase", src, dst, a, ntok(pre + c) - ntok(pre), ntok(pre_g + g) - ntok(pre_g) if g else 0))
            for x in case["preserve"]:
                pre_x, px = put(pre0, x, suf)
                if px not in kept:
                    kept.add(px)
                    items.append(("keep", px, px, 1 + ntok(pre_x), 0, 0))
    texts = list(dict.fromkeys([t for it in items for t in it[1:3]]))
    emb, _, _ = encode(tok, te, texts)
    idx = {t: i for i, t in enumerate(texts)}
    K, T, S = [], [], []
    for kind, src, dst, a, nc, ng in items:
        for q in range(a, 77):
            if kind == "keep":
                K.append(emb[idx[src], q]); T.append(emb[idx[src], q]); S.append(case["preserve_scale"])
                continue
            t = a + ng - 1 if q < a + nc else q - nc + ng
            K.append(emb[idx[src], q]); T.append(emb[idx[dst], min(t, 76)]); S.append(case["erase_scale"])
    return np.array(K), np.array(T), np.array(S), case["lam"], None


def time_texts(case):
    old, new = [case["src"]], [case["dst"]]
    if case["augment"]:
        for pre in ("A photo of ", "An image of ", "A picture of "):
            base = old[0] if old[0][0:1] != "A" else "a" + old[0][1:]
            old.append(pre + base)
        for pre in ("A photo of ", "An image of ", "A picture of "):
            base = new[0] if new[0][0:1] != "A" else "a" + new[0][1:]
            new.append(pre + base)
    return old, new


def time_keys(case, tok, te):
    old_texts, new_texts = time_texts(case)
    K, T, S, aligns = [], [], [], []
    for old_text, new_text in zip(old_texts, new_texts):
        ids = tok([old_text, new_text], padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt")
        old_emb, new_emb = te(ids.input_ids)[0].double().numpy()
        tokens_a = tok(old_text).input_ids
        tokens_b = tok(new_text).input_ids
        a_id = tok.encode("a ")[1]
        tokens_a = [a_id if tok.decode(t) == "an" else t for t in tokens_a]
        tokens_b = [a_id if tok.decode(t) == "an" else t for t in tokens_b]
        idxs, j = [], 0
        for i in range(len(tokens_a)):
            while tokens_b[j] != tokens_a[i]:
                j += 1
            idxs.append(j)
            j += 1
        while j < 77:
            idxs.append(j)
            j += 1
        while len(idxs) < 77:
            idxs.append(76)
        aligns.append(idxs)
        for r in range(77):
            K.append(old_emb[r]); T.append(new_emb[idxs[r]]); S.append(1.0)
    return np.array(K), np.array(T), np.array(S), case["lam"], np.array(aligns, dtype=np.int32)


def closed_form(W, K, T, S, lam):
    """The UCE/TIME per-module update, float64: (λW + Σ s v* kᵀ) @ inv(λI + Σ s k kᵀ), v* = W t."""
    d = W.shape[1]
    mat1 = lam * W.copy()
    mat2 = lam * np.eye(d)
    for k, t, s in zip(K, T, S):
        v = W @ t
        mat1 += s * np.outer(v, k)
        mat2 += s * np.outer(k, k)
    return mat1 @ np.linalg.inv(mat2), np.linalg.cond(mat2)


def run_bin(binary, args):
    r = subprocess.run([binary] + args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("diffscope failed: %s\n%s%s" % (" ".join(args), r.stdout, r.stderr))
    return r


def fingerprint(names, values):
    """diffscope's base fingerprint (host/model_write.c ds_weights_fingerprint): per tensor FNV-1a 64 over the name's
    bytes, then over each value's fp32 bit pattern (-0 as +0) as one 32-bit word; the sum of those, mod 2^64."""
    total = 0
    P, M = 1099511628211, (1 << 64) - 1
    for name, v in zip(names, values):
        h = 1469598103934665603
        for ch in name.encode():
            h = ((h ^ ch) * P) & M
        v = np.asarray(v, dtype=np.float32).ravel().copy()
        v[v == 0] = 0
        for b in v.view(np.uint32).tolist():
            h = ((h ^ b) * P) & M
        total = (total + h) & M
    return "%016x" % total


def reload_checks(binary, cases_by_name, refs, weights, tensors, meta):
    """What diffusers loads from models diffscope wrote.

    1. The reference ΔW of a case is written as a diffscope delta (fp32, edit/<case>.delta.safetensors) and applied by
       `diffscope apply` to the single file (fp32, LDM key names) and to the fp16 folder; diffusers loads both
       (from_single_file(config=folder) / from_pretrained) and must see the reference W' (to the file's rounding) in
       every edited tensor and the original value in every other one. What it loaded is stored as
       reload_<kind>.<tensor>: the C test applies the same delta and must write exactly these values.
    2. `diffscope erase` itself (its own keys) on the same inputs, loaded by diffusers: within the text encoder's
       precision of the reference (checked here, recorded in the metadata only).
    """
    from diffusers import StableDiffusionPipeline
    tmp = tempfile.mkdtemp(prefix="ds-edit-fix-")
    try:
        for case_name, src, kind in RELOADS:
            c = cases_by_name[case_name]
            W0 = dict(weights[c["model"]])
            names = [n for n, _ in refs[case_name]]
            delta = {n: (Wn - W0[n]).astype(np.float32) for n, Wn in refs[case_name]}
            dpath = os.path.join(OUT, case_name + ".delta.safetensors")
            save_file({n: delta[n] for n in sorted(delta)}, dpath, metadata={
                "format": "diffscope-delta", "version": "1", "diffscope.edit": "erase",
                "diffscope.params": json.dumps({"reference": "tools/make_edit_fixtures.py", "case": case_name}),
                "diffscope.base_model": "tests/fixtures/sd1_tiny", "diffscope.base_format": "diffusers",
                "diffscope.base_arch": "SD1.x", "diffscope.base_dtype": "fp16",
                "diffscope.base_fingerprint": fingerprint(sorted(delta), [W0[n] for n in sorted(delta)]),
                "diffscope.version": "reference"})
            results = {}
            for how in ("apply", "erase"):
                out = os.path.join(tmp, "%s_%s_%s" % (case_name, kind, how)) + (".safetensors" if kind == "single" else "")
                if how == "apply":
                    run_bin(binary, ["apply", "--model", src, "--delta", dpath, "--out", out, "--quiet"])
                else:
                    run_bin(binary, ["erase", "--model", src, "--concept", ",".join(c["concepts"]), "--guide",
                                     ",".join(c["guides"]), "--preserve", ",".join(c["preserve"]), "--lambda",
                                     repr(c["lam"]), "--erase-scale", repr(c["erase_scale"]), "--preserve-scale",
                                     repr(c["preserve_scale"]), "--out", out, "--quiet"])
                if kind == "single":
                    pipe = StableDiffusionPipeline.from_single_file(out, config=SD1, torch_dtype=torch.float32,
                                                                    safety_checker=None)
                    base = StableDiffusionPipeline.from_single_file(src, config=SD1, torch_dtype=torch.float32,
                                                                    safety_checker=None)
                else:
                    pipe = StableDiffusionPipeline.from_pretrained(out, torch_dtype=torch.float16, safety_checker=None)
                    base = StableDiffusionPipeline.from_pretrained(src, torch_dtype=torch.float16, safety_checker=None)
                dt = np.float32 if kind == "single" else np.float16
                worst = 0.0
                for name, Wn in refs[case_name]:
                    got = pipe.unet.state_dict()[name[len("unet."):]].float().numpy()
                    if how == "apply":
                        tensors["reload_%s.%s" % (kind, name)] = got.astype(np.float32)
                        # exactly dtype(W0 + ΔW) with ΔW in fp32, the sum in fp64, one rounding
                        want = (W0[name] + delta[name].astype(np.float64)).astype(dt).astype(np.float32)
                        assert np.array_equal(got, want), "%s %s: diffusers sees other values in %s" % (kind, how, name)
                    want = Wn.astype(dt).astype(np.float32)
                    worst = max(worst, float(np.max(np.abs(got - want)) / np.max(np.abs(want))))
                unchanged = 0
                for comp in ("unet", "vae", "text_encoder"):
                    sa, sb = getattr(pipe, comp).state_dict(), getattr(base, comp).state_dict()
                    for n in sa:
                        if comp + "." + n in names:
                            continue
                        assert torch.equal(sa[n], sb[n]), "%s %s: %s.%s changed" % (kind, how, comp, n)
                        unchanged += 1
                tol = (2e-6 if kind == "single" else 1e-3) if how == "erase" else (1e-6 if kind == "single" else 5e-4)
                assert worst <= tol, "%s %s: max rel diff %g vs the reference W'" % (kind, how, worst)
                results[how] = {"max_rel_diff_vs_reference": worst, "unchanged_tensors_checked": unchanged}
                print("  diffusers reload (%s, %s): %d edited tensors within %.2g (relative to the largest) of the "
                      "reference W', %d others unchanged" % (kind, how, len(names), worst, unchanged))
            meta["reload_%s" % kind] = json.dumps({
                "case": case_name, "input": os.path.relpath(src, ROOT), "delta": os.path.relpath(dpath, ROOT),
                "loader": ("StableDiffusionPipeline.from_single_file(out, config=tests/fixtures/sd1_tiny)"
                           if kind == "single" else "StableDiffusionPipeline.from_pretrained(out, torch_dtype=float16)"),
                "edited_tensors": len(names), "apply": results["apply"], "erase": results["erase"]})
    finally:
        shutil.rmtree(tmp)


def write_neurons():
    """neurons.json fixtures for `diffscope prune` (format: docs/editing.md)."""
    sd1 = {
        "format": "diffscope-neurons", "version": 1, "arch": "SD1.x",
        "model": "tests/fixtures/sd1_tiny", "method": "conceptprune", "concept": "fixture", "ratio": 0.02,
        "blocks": {
            "down_blocks.0.attentions.0.transformer_blocks.0": {
                "in_features": 64, "out_features": 16, "columns": [0, 5, 63]},
            "up_blocks.1.attentions.2.transformer_blocks.0": {
                "in_features": 128, "out_features": 32, "columns": [7],
                "rows": {"0": [1, 2, 3], "31": [127], "4": [7]}},
            "mid_block.attentions.0.transformer_blocks.0.ff": {
                "in_features": 128, "out_features": 32, "rows": {"10": [100, 101]}},
        },
    }
    with open(os.path.join(OUT, "neurons_sd1.json"), "w") as f:
        json.dump(sd1, f, indent=1)
        f.write("\n")
    # the same block names with SD1.5's real widths: another architecture for the tiny model
    big = json.loads(json.dumps(sd1))
    big["model"] = "runwayml/stable-diffusion-v1-5"
    big["blocks"] = {"down_blocks.0.attentions.0.transformer_blocks.0": {"in_features": 1280, "out_features": 320,
                                                                         "columns": [1, 2]}}
    with open(os.path.join(OUT, "neurons_sd15.json"), "w") as f:
        json.dump(big, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=None, help="the diffscope binary (default: build-edit/ or build/)")
    args = ap.parse_args()
    binary = args.bin
    if binary is None:
        for b in ("build-edit/diffscope", "build/diffscope"):
            if os.path.exists(os.path.join(ROOT, b)):
                binary = os.path.join(ROOT, b)
                break
    if binary is None or not os.path.exists(binary):
        sys.exit("build diffscope first (cmake --build build-edit) or pass --bin")
    os.makedirs(OUT, exist_ok=True)
    tensors, meta = {}, {"format": "diffscope-fixture", "version": "1"}
    texts = {m: load_text(m) for m in ("sd1", "sd2")}
    weights = {m: attn2_weights(m) for m in ("sd1", "sd2")}
    refs = {}
    cases_meta = []
    for c in CASES:
        tok, te = texts[c["model"]]
        if c["method"] == "time":
            K, T, S, lam, align = time_keys(c, tok, te)
            tensors[c["name"] + ".align"] = align
        elif c.get("contexts"):
            K, T, S, lam, pos = context_keys(c, tok, te)
        else:
            K, T, S, lam, pos = uce_keys(c, tok, te)
            if pos is not None:
                tensors[c["name"] + ".positions"] = pos
        tensors[c["name"] + ".keys"] = K
        tensors[c["name"] + ".targets"] = T
        tensors[c["name"] + ".scales"] = S
        out = []
        cond = None
        for name, W in weights[c["model"]]:
            Wn, cond = closed_form(W, K, T, S, lam)
            tensors["%s.dW.%s" % (c["name"], name)] = Wn - W
            out.append((name, Wn))
        tensors[c["name"] + ".cond"] = np.array([cond])
        refs[c["name"]] = out
        cm = {k: v for k, v in c.items()}
        cm["n_keys"] = int(K.shape[0])
        cm["matrices"] = [n for n, _ in out]
        cases_meta.append(cm)
        print("  %-11s %3d keys, d = %d, cond %.4g, %d matrices, max |ΔW| %.3g" % (
            c["name"], K.shape[0], K.shape[1], cond, len(out), max(np.abs(Wn - W).max() for (_, Wn), (_, W) in
                                                                    zip(out, weights[c["model"]]))))
    meta["cases"] = json.dumps(cases_meta)
    reload_checks(binary, {c["name"]: c for c in CASES}, refs, weights, tensors, meta)
    import diffusers
    import safetensors
    import transformers
    meta.update(torch=torch.__version__, diffusers=diffusers.__version__, transformers=transformers.__version__,
                numpy=np.__version__, safetensors=safetensors.__version__,
                tokenizer="no-ftfy path: sys.modules['ftfy']=None; CLIPTokenizer from each fixture folder's tokenizer/")
    path = os.path.join(OUT, "edit_ref.safetensors")
    save_file({k: np.ascontiguousarray(v) for k, v in sorted(tensors.items())}, path, metadata=meta)
    write_neurons()
    for f in os.listdir(OUT):
        os.chmod(os.path.join(OUT, f), 0o644)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print("wrote %s: %d tensors; tests/fixtures/edit/ is %d bytes (budget %d)" % (path, len(tensors), total, BUDGET))
    assert total < BUDGET


if __name__ == "__main__":
    main()
