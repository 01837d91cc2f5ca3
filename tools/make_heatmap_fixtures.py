#!/usr/bin/env python3
"""Regenerate tests/fixtures/heatmap/: reference dumps for cross-attention heatmaps (DAAM, prompt-to-prompt),
bicubic upsampling, img2img and DDIM inversion, all on the tiny fixture models of tests/fixtures/.

    bash tools/daam_venv.sh                 # once: the venv with daam 0.2.0's pinned diffusers/transformers
    python tools/make_heatmap_fixtures.py   # main environment (torch, diffusers 0.42, transformers 5.x)

The DAAM part runs the real daam 0.2.0 package inside the venv (tools/daam_trace_dump.py, a subprocess); the rest
runs here. Deterministic: fixed seeds, torch.use_deterministic_algorithms(True), one thread, safetensors headers
written in a fixed order (a rerun on the same machine and library versions gives identical bytes).
See tests/fixtures/heatmap/README.md for every tensor name.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIX = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(FIX, "heatmap")
SD1 = os.path.join(FIX, "sd1_tiny")
SD2 = os.path.join(FIX, "sd2_tiny")
DAAM_PY = os.environ.get("DAAM_PYTHON", os.path.join(ROOT, ".venv-daam", "bin", "python"))
BUDGET = 4_000_000  # bytes for the whole folder

# ----------------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------------
DAAM_PROMPTS = [
    ("a red circle and a blue square", 11),
    ("a dog chasing a dog on the beach", 22),       # a word that occurs twice: daam averages both
    ("a cat, a hat; and a bat!", 33),               # punctuation tokens are inside the SOS..EOS slice
    ("a photorealistic photo of a xylophone", 44),  # multi-token words; "photo" also matches photo|realistic
]
DAAM_GLOBAL_NORM = (2,)       # prompts whose normalize=True global map is stored (size budget)
STEPS = 5
GUIDANCE = 7.5
P2P_PROMPTS = [0, 1]          # indices into DAAM_PROMPTS
P2P_RES = [(8, ("up", "down")), (4, ("up", "down")), (2, ("mid",))]
I2I_PROMPT = "a red circle and a blue square"
I2I_SEED = 555
I2I_STRENGTHS = (0.6, 0.8)
INV_STEPS = 5
BICUBIC_SEED = 7
BICUBIC_CASES = [  # name, (in_h, in_w), (out_h, out_w)
    ("up8_64", (8, 8), (64, 64)),
    ("up4_64", (4, 4), (64, 64)),
    ("up16_64", (16, 16), (64, 64)),
    ("up2_96", (2, 2), (96, 96)),
    ("rect5x7_31x17", (5, 7), (31, 17)),
    ("same8_8", (8, 8), (8, 8)),
    ("down64_24", (64, 64), (24, 24)),
]

# The main environment takes the same no-ftfy tokenizer path as tools/make_fixtures.py.
sys.modules["ftfy"] = None

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import diffusers  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from st_write import write_deterministic  # noqa: E402
from diffusers import (  # noqa: E402
    DDIMInverseScheduler, DDIMScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline,
)
from diffusers.models.attention_processor import Attention  # noqa: E402

transformers.logging.set_verbosity_error()
diffusers.logging.set_verbosity_error()
diffusers.utils.logging.disable_progress_bar()


def versions():
    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "safetensors": safetensors.__version__, "numpy": np.__version__}


def save_safetensors_deterministic(tensors, path, metadata):
    """Byte-stable safetensors of torch tensors (tools/st_write.py)."""
    return write_deterministic(path, {k: t.contiguous().numpy() for k, t in tensors.items()}, metadata)


def base_meta(kind, **kw):
    m = {"format": "diffscope-fixture", "version": "1", "kind": kind}
    m.update(versions())
    m.update(kw)
    return m


def load_pipe(cls, folder):
    pipe = cls.from_pretrained(folder, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def to_uint8(img01):
    """diffusers numpy_to_pil: (x * 255).round() to uint8, HWC."""
    return torch.from_numpy((img01 * 255).round().astype(np.uint8))


# ----------------------------------------------------------------------------------------------------------------
# 1. DAAM (real package, in its venv)
# ----------------------------------------------------------------------------------------------------------------
def make_daam(tmp):
    if not os.path.exists(DAAM_PY):
        sys.exit(f"{DAAM_PY} not found: run `bash tools/daam_venv.sh` first (or set DAAM_PYTHON)")
    cfg = {"prompts": [{"prompt": p, "seed": s} for p, s in DAAM_PROMPTS], "steps": STEPS, "guidance": GUIDANCE,
           "height": 32, "width": 32}
    raw_path, info_path = os.path.join(tmp, "daam_raw.safetensors"), os.path.join(tmp, "daam_info.json")
    # daam mkdirs $XDG_CACHE_HOME/daam/heads; transformers 4.30 migrates $HF_HOME: keep both in the temp dir
    env = dict(os.environ, HF_HOME=os.path.join(tmp, "hf_home"), XDG_CACHE_HOME=os.path.join(tmp, "xdg_cache"),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore")
    subprocess.run([DAAM_PY, os.path.join(HERE, "daam_trace_dump.py"), raw_path, info_path, json.dumps(cfg)],
                   check=True, env=env, cwd=ROOT)
    raw = load_file(raw_path)
    info = json.load(open(info_path))

    pipe = load_pipe(StableDiffusionPipeline, SD1)
    tok = pipe.tokenizer
    out, checks = {}, []
    for i, ((prompt, seed), pinfo) in enumerate(zip(DAAM_PROMPTS, info["prompts"])):
        pre = f"p{i}."
        # token ids: daam's venv (transformers 4.30 + ftfy) vs ours (transformers 5, no ftfy)
        ours = tok(prompt, padding="max_length", max_length=77, truncation=True).input_ids
        assert raw[pre + "input_ids"].tolist() == ours, (prompt, ours)
        # generation: daam's (diffusers 0.21.2, daam's explicit-softmax processor on attn2) vs diffusers 0.42 (SDPA)
        img = pipe(prompt, height=32, width=32, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                   generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images[0]
        ours_u8 = to_uint8(img)
        d_img = (ours_u8.int() - raw[pre + "image"].int()).abs()
        lat = pipe(prompt, height=32, width=32, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                   generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
        d_lat = (lat - raw[pre + "latents"]).abs().max().item()
        checks.append(f"p{i}: image max|diff| {d_img.max().item()} LSB ({(d_img > 0).sum().item()} of "
                      f"{d_img.numel()} values differ), final latents max|diff| {d_lat:.2e}")
        assert d_img.max().item() <= 2 and d_lat < 1e-3, checks[-1]
        n = pinfo["n_tok"]
        g = raw[pre + "global"]
        assert g.shape == (n, 96, 96)
        for k in ("input_ids", "image", "latents", "timesteps", "global"):
            out[pre + k] = raw[pre + k]
        if i in DAAM_GLOBAL_NORM:
            out[pre + "global_norm"] = raw[pre + "global_norm"]
        # normalize=True is exactly this (checked for every prompt, stored for some):
        gn = g / (g[1:-1].sum(0, keepdim=True) + 1e-6)
        assert torch.equal(gn, raw[pre + "global_norm"])
        for L in range(len(pinfo["layers"])):
            out[pre + f"raw.l{L}"] = raw[pre + f"raw.l{L}"]
        for w in pinfo["words"]:
            idx = raw[pre + f"word.{w}.idx"]
            out[pre + f"word.{w}.idx"] = idx
            wm = raw[pre + f"word.{w}"]
            assert torch.equal(wm, g[idx.long()].mean(0))
            if len(idx) > 1:  # single-token word maps are the global row itself (bit-exact): not stored
                out[pre + f"word.{w}"] = wm
    for c in checks:
        print("  daam vs diffusers", diffusers.__version__, c)

    layers = info["prompts"][0]["layers"]
    meta = base_meta(
        "daam", arch="sd1", model="tests/fixtures/sd1_tiny",
        prompts=json.dumps([p for p, _ in DAAM_PROMPTS]), seeds=json.dumps([s for _, s in DAAM_PROMPTS]),
        steps=STEPS, guidance=GUIDANCE, width=32, height=32, scheduler="PNDMScheduler (folder default)",
        cfg_batch_order="uncond,cond", negative_prompt="",
        n_tokens=json.dumps([p["n_tok"] for p in info["prompts"]]),
        words=json.dumps([p["words"] for p in info["prompts"]]),
        word_idx=json.dumps([p["word_idx"] for p in info["prompts"]], sort_keys=True),
        global_norm_stored=json.dumps(list(DAAM_GLOBAL_NORM)),
        layers=json.dumps(layers), factors=json.dumps(info["prompts"][0]["factors"]),
        latent_hw=info["prompts"][0]["latent_hw"], map_size=info["prompts"][0]["map_size"],
        unet_calls=info["prompts"][0]["unet_calls"],
        raw_insertion_order=json.dumps(info["prompts"][0]["insertion_order"]),
        raw_tokens_stored="SOS+prompt+EOS (first n_tokens of daam's 77)",
        default_call_error=info["prompts"][0]["default_call_error"],
        compute_global_heat_map_call="compute_global_heat_map(factors=[12, 24][, normalize=True])",
        daam_tokenizer=info["tokenizer"],
        daam_env=json.dumps(info["versions"], sort_keys=True),
        crosscheck="; ".join(checks),
    )
    return out, meta, info


# ----------------------------------------------------------------------------------------------------------------
# 2. bicubic
# ----------------------------------------------------------------------------------------------------------------
def make_bicubic():
    g = torch.Generator("cpu").manual_seed(BICUBIC_SEED)
    out = {}
    for name, (ih, iw), (oh, ow) in BICUBIC_CASES:
        x = torch.rand((2, 1, ih, iw), generator=g) * 3.0
        x[1, 0, 0, 0] = 0.0   # an exact zero and a spike: exercises the negative lobes
        x[1, 0, -1, -1] = 5.0
        y = F.interpolate(x, size=(oh, ow), mode="bicubic", align_corners=False)
        out[f"{name}.in"] = x.contiguous()
        out[f"{name}.out"] = y.contiguous()
    meta = base_meta("bicubic", seed=BICUBIC_SEED,
                     call="torch.nn.functional.interpolate(x, size=(H, W), mode='bicubic', align_corners=False)",
                     cases=json.dumps([[n, list(i), list(o)] for n, i, o in BICUBIC_CASES]),
                     input="torch.rand((2,1,h,w), Generator('cpu').manual_seed(seed)) * 3, drawn case by case in "
                           "order; then x[1,0,0,0]=0, x[1,0,-1,-1]=5")
    return out, meta


# ----------------------------------------------------------------------------------------------------------------
# 3. prompt-to-prompt AttentionStore + aggregate_attention, as a diffusers 0.42 attention processor
# ----------------------------------------------------------------------------------------------------------------
class AttentionStore:
    """prompt-to-prompt's AttentionControl/AttentionStore (LOW_RESOURCE = False), same bookkeeping."""

    def __init__(self):
        self.cur_step, self.num_att_layers, self.cur_att_layer = 0, -1, 0
        self.step_store, self.attention_store = self.get_empty_store(), {}

    @staticmethod
    def get_empty_store():
        return {"down_cross": [], "mid_cross": [], "up_cross": [], "down_self": [], "mid_self": [], "up_self": []}

    def __call__(self, attn, is_cross, place_in_unet):
        h = attn.shape[0]
        attn[h // 2:] = self.forward(attn[h // 2:], is_cross, place_in_unet)
        self.cur_att_layer += 1
        if self.cur_att_layer == self.num_att_layers:
            self.cur_att_layer = 0
            self.cur_step += 1
            self.between_steps()
        return attn

    def forward(self, attn, is_cross, place_in_unet):
        key = f"{place_in_unet}_{'cross' if is_cross else 'self'}"
        if attn.shape[1] <= 32 ** 2:
            self.step_store[key].append(attn.clone())
        return attn

    def between_steps(self):
        if len(self.attention_store) == 0:
            self.attention_store = self.step_store
        else:
            for key in self.attention_store:
                for i in range(len(self.attention_store[key])):
                    self.attention_store[key][i] += self.step_store[key][i]
        self.step_store = self.get_empty_store()

    def get_average_attention(self):
        return {key: [item / self.cur_step for item in self.attention_store[key]] for key in self.attention_store}


class P2PProcessor:
    """diffusers' classic AttnProcessor with p2p's controller call on the probabilities (ptp_utils.ca_forward)."""

    def __init__(self, controller, place):
        self.controller, self.place = controller, place

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *a, **kw):
        is_cross = encoder_hidden_states is not None
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, hh, ww = hidden_states.shape
            hidden_states = hidden_states.view(b, c, hh * ww).transpose(1, 2)
        batch_size, sequence_length, _ = (hidden_states.shape if encoder_hidden_states is None
                                          else encoder_hidden_states.shape)
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        query = attn.head_to_batch_dim(query)
        probs = attn.get_attention_scores(query, key, attention_mask)
        probs = self.controller(probs, is_cross, self.place)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, hh, ww)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def register_p2p(unet, controller):
    """ptp_utils.register_attention_control: every Attention under down*/up*/mid* children, counted."""
    procs, count, names = {}, 0, []
    for name, mod in unet.attn_processors.items():
        place = "down" if name.startswith("down") else "up" if name.startswith("up") else "mid"
        procs[name] = P2PProcessor(controller, place)
        count += 1
        names.append(name)
    unet.set_attn_processor(procs)
    controller.num_att_layers = count
    return names


def aggregate_attention(store, res, from_where, is_cross, select, n_prompts):
    out = []
    maps = store.get_average_attention()
    for location in from_where:
        for item in maps[f"{location}_{'cross' if is_cross else 'self'}"]:
            if item.shape[1] == res ** 2:
                out.append(item.reshape(n_prompts, -1, res, res, item.shape[-1])[select])
    out = torch.cat(out, dim=0)
    return out.sum(0) / out.shape[0], out.shape[0]


def make_p2p():
    pipe = load_pipe(StableDiffusionPipeline, SD1)
    tok = pipe.tokenizer
    out, counts, calls = {}, {}, None
    for j, pi in enumerate(P2P_PROMPTS):
        prompt, seed = DAAM_PROMPTS[pi]
        ref = pipe(prompt, height=32, width=32, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                   generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
        store = AttentionStore()
        saved = pipe.unet.attn_processors
        names = register_p2p(pipe.unet, store)
        lat = pipe(prompt, height=32, width=32, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                   generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
        pipe.unet.set_attn_processor(saved)
        d = (lat - ref).abs().max().item()
        assert d < 1e-3, d
        calls = store.cur_step
        ids = tok(prompt, padding="max_length", max_length=77, truncation=True).input_ids
        n_tok = len(tok.encode(prompt))
        out[f"q{j}.input_ids"] = torch.tensor(ids, dtype=torch.int32)
        out[f"q{j}.latents"] = lat.contiguous()
        for res, where in P2P_RES:
            agg, nmaps = aggregate_attention(store, res, where, True, 0, 1)
            counts[f"res{res}"] = nmaps
            out[f"q{j}.res{res}"] = agg.contiguous()                       # (res, res, 77)
            # show_cross_attention: per token map / map.max() (then *255, uint8, resize 256 for display)
            out[f"q{j}.res{res}.disp"] = (agg / agg.amax(dim=(0, 1), keepdim=True)).contiguous()
        print(f"  p2p q{j}: {prompt!r} unet calls {calls}, maps per res {counts}, vs SDPA latents {d:.1e}, "
              f"shown tokens {n_tok}")
    cross_layers = [n for n in names if "attn2" in n]
    meta = base_meta(
        "p2p", arch="sd1", model="tests/fixtures/sd1_tiny",
        prompts=json.dumps([DAAM_PROMPTS[i][0] for i in P2P_PROMPTS]),
        seeds=json.dumps([DAAM_PROMPTS[i][1] for i in P2P_PROMPTS]),
        steps=STEPS, guidance=GUIDANCE, width=32, height=32, scheduler="PNDMScheduler (folder default)",
        negative_prompt="", cfg_batch_order="uncond,cond",
        num_att_layers=len(names), cross_layers=json.dumps(cross_layers),
        cur_step=calls, divisor="cur_step = number of UNet calls (PNDM: steps + 1)",
        aggregate=json.dumps({f"res{r}": {"from_where": list(w), "n_maps": counts[f'res{r}']} for r, w in P2P_RES}),
        store_rule="attn.shape[1] <= 32**2 (all maps in this model), conditional half attn[h//2:]",
    )
    return out, meta


# ----------------------------------------------------------------------------------------------------------------
# 4. img2img + DDIM inversion
# ----------------------------------------------------------------------------------------------------------------
def synthetic_image(w, h):
    """Deterministic RGB uint8 (h, w, 3): a diagonal gradient, a red disc (left), a blue square (right)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    img[..., 0] = 40 + 100 * xx / (w - 1)
    img[..., 1] = 160 - 90 * yy / (h - 1)
    img[..., 2] = 60 + 50 * (xx + yy) / (w + h - 2)
    cx, cy, r = w * 0.3, h * 0.45, h * 0.22
    disc = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r
    img[disc] = (220, 30, 40)
    x0, y0, s = int(w * 0.58), int(h * 0.35), int(h * 0.4)
    img[y0:y0 + s, x0:x0 + s] = (30, 50, 210)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def run_img2img(pipe, image_u8, strength, seed, prefix, out):
    sched = pipe.scheduler
    cap = {}
    orig_add_noise = sched.add_noise

    def add_noise(original, noise, timesteps):
        r = orig_add_noise(original, noise, timesteps)
        cap.update(original=original.clone(), noise=noise.clone(), t=timesteps.clone(), noised=r.clone())
        return r

    sched.add_noise = add_noise
    unet_ts, steps = [], []
    h = pipe.unet.register_forward_pre_hook(
        lambda m, a, k: unet_ts.append(float(a[1] if len(a) > 1 else k["timestep"])), with_kwargs=True)

    def on_step(p, i, t, kw):
        steps.append(kw["latents"].clone())
        return kw

    pil = Image.fromarray(image_u8)
    res = pipe(I2I_PROMPT, image=pil, strength=strength, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
               generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
               callback_on_step_end=on_step)
    h.remove()
    del sched.add_noise
    img = res.images[0]

    # Re-derive the draws: latent_dist.sample(generator) first, then the add_noise noise, same generator.
    x = pipe.image_processor.preprocess(pil)
    dist = pipe.vae.encode(x).latent_dist
    g = torch.Generator("cpu").manual_seed(seed)
    eps = torch.randn(dist.mean.shape, generator=g)
    noise = torch.randn(dist.mean.shape, generator=g)
    sf = pipe.vae.config.scaling_factor
    init = sf * (dist.mean + dist.std * eps)
    assert torch.equal(init, cap["original"]) and torch.equal(noise, cap["noise"])
    ac = sched.alphas_cumprod[int(cap["t"][0])]
    noised = ac ** 0.5 * init + (1 - ac) ** 0.5 * noise
    assert (noised - cap["noised"]).abs().max().item() < 1e-5
    lat = pipe(I2I_PROMPT, image=pil, strength=strength, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
               generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
    assert torch.equal(lat, steps[-1])

    out[prefix + "image_in_pre"] = x.contiguous()
    out[prefix + "posterior_mean"] = dist.mean.contiguous()
    out[prefix + "posterior_logvar"] = dist.logvar.contiguous()
    out[prefix + "posterior_eps"] = eps
    out[prefix + "init_latents"] = cap["original"]
    out[prefix + "noise"] = cap["noise"]
    out[prefix + "latent_timestep"] = cap["t"].float()
    out[prefix + "start_latents"] = cap["noised"]
    out[prefix + "timesteps"] = torch.tensor(unet_ts, dtype=torch.float32)
    for i, s in enumerate(steps):
        out[prefix + f"step.{i}"] = s.contiguous()
    out[prefix + "latents"] = steps[-1].contiguous()
    out[prefix + "image"] = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float()
    out[prefix + "image_u8"] = to_uint8(img)
    return unet_ts, len(steps)


def make_img2img(arch, folder, w, h, samplers):
    out, desc = {}, {}
    pipe = load_pipe(StableDiffusionImg2ImgPipeline, folder)
    base_cfg = dict(pipe.scheduler.config)
    img = synthetic_image(w, h)
    out["image_in"] = torch.from_numpy(img)
    for sname in samplers:
        pipe.scheduler = (type(pipe.scheduler).from_config(base_cfg) if sname == "default"
                          else DDIMScheduler.from_config(base_cfg))
        label = "pndm" if type(pipe.scheduler).__name__ == "PNDMScheduler" else "ddim"
        desc[label] = {k: v for k, v in dict(pipe.scheduler.config).items() if not k.startswith("_")}
        for strength in I2I_STRENGTHS:
            pre = f"{label}.s{int(round(strength * 100))}."
            ts, ncb = run_img2img(pipe, img, strength, I2I_SEED, pre, out)
            print(f"  img2img {arch} {label} strength {strength}: unet timesteps {[int(t) for t in ts]} "
                  f"({ncb} step latents), start t={int(out[pre + 'latent_timestep'][0])}")
    meta = base_meta(
        "img2img", arch=arch, model=f"tests/fixtures/{arch}_tiny", prompt=I2I_PROMPT, negative_prompt="",
        seed=I2I_SEED, steps=STEPS, guidance=GUIDANCE, width=w, height=h, strengths=json.dumps(list(I2I_STRENGTHS)),
        scheduler_configs=json.dumps(desc, sort_keys=True), cfg_batch_order="uncond,cond",
        generator_order="1: latent_dist.sample(generator) eps (1,4,h,w); 2: add_noise noise (1,4,h,w); "
                        "same torch.Generator('cpu').manual_seed(seed)",
        preprocess="uint8 HWC -> x/255*2-1, NCHW (VaeImageProcessor.preprocess; size already a multiple of 4)",
        init_latents="scaling_factor * (mean + exp(0.5*clamp(logvar,-30,20)) * eps)",
    )
    return out, meta, pipe


def make_inversion(pipe_i2i, w, h):
    """DDIMInverseScheduler on the posterior mean (guidance 1, prompt only), then DDIM regeneration."""
    comps = dict(pipe_i2i.components)
    pipe = StableDiffusionPipeline(**{k: v for k, v in comps.items() if k in (
        "vae", "text_encoder", "tokenizer", "unet", "scheduler", "safety_checker", "feature_extractor",
        "image_encoder")}, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    base_cfg = dict(pipe.scheduler.config)
    inv = DDIMInverseScheduler.from_config(base_cfg)
    pipe.scheduler = DDIMScheduler.from_config(base_cfg)
    img = synthetic_image(w, h)
    x = pipe.image_processor.preprocess(Image.fromarray(img))
    z0 = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
    cond, _ = pipe.encode_prompt(I2I_PROMPT, "cpu", 1, False)
    inv.set_timesteps(INV_STEPS)
    out = {"image_in": torch.from_numpy(img), "z0": z0.contiguous(), "prompt_embeds": cond.contiguous(),
           "inv_timesteps": inv.timesteps.float()}
    lat = z0
    for i, t in enumerate(inv.timesteps):
        eps = pipe.unet(lat, t, encoder_hidden_states=cond).sample
        lat = inv.step(eps, t, lat).prev_sample
        out[f"inv.step.{i}"] = lat.contiguous()
    out["inverted"] = lat.contiguous()
    steps = []

    def on_step(p, i, t, kw):
        steps.append(kw["latents"].clone())
        return kw

    res = pipe(I2I_PROMPT, height=h, width=w, num_inference_steps=INV_STEPS, guidance_scale=1.0,
               latents=lat.clone(), output_type="np", callback_on_step_end=on_step)
    out["regen_timesteps"] = pipe.scheduler.timesteps.float()
    for i, s in enumerate(steps):
        out[f"regen.step.{i}"] = s.contiguous()
    out["recon_latents"] = steps[-1].contiguous()
    img_out = res.images[0]
    out["recon_image"] = torch.from_numpy(np.ascontiguousarray(img_out.transpose(2, 0, 1)))[None].float()
    out["recon_image_u8"] = to_uint8(img_out)
    err = (steps[-1] - z0).abs().max().item()
    print(f"  inversion: inv timesteps {inv.timesteps.tolist()}, regen {pipe.scheduler.timesteps.tolist()}, "
          f"recon latents max|z - z0| = {err:.3f} (z0 max {z0.abs().max().item():.3f})")
    meta = base_meta(
        "ddim_inversion", arch="sd1", model="tests/fixtures/sd1_tiny", prompt=I2I_PROMPT, steps=INV_STEPS,
        guidance="1.0", width=w, height=h, z0="vae.encode(x).latent_dist.mean * scaling_factor (no sampling)",
        inverse_scheduler_config=json.dumps({k: v for k, v in dict(inv.config).items() if not k.startswith("_")},
                                            sort_keys=True),
        scheduler_config=json.dumps({k: v for k, v in dict(pipe.scheduler.config).items()
                                     if not k.startswith("_")}, sort_keys=True),
        loop="for t in inv.timesteps: z = inv.step(unet(z, t, prompt_embeds).sample, t, z).prev_sample",
        regen="StableDiffusionPipeline(prompt, guidance_scale=1.0 (no CFG batch), latents=inverted), DDIMScheduler",
        recon_max_abs_err=f"{err:.6f}",
    )
    return out, meta


@torch.no_grad()
def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="diffscope_heatmap_fixtures_")
    try:
        generate(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def generate(tmp):
    sizes = {}

    print("== DAAM (daam 0.2.0 in its venv) ==")
    t, m, _ = make_daam(tmp)
    sizes["daam_sd1.safetensors"] = save_safetensors_deterministic(t, os.path.join(OUT, "daam_sd1.safetensors"), m)
    print("== bicubic ==")
    t, m = make_bicubic()
    sizes["bicubic.safetensors"] = save_safetensors_deterministic(t, os.path.join(OUT, "bicubic.safetensors"), m)
    print("== prompt-to-prompt ==")
    t, m = make_p2p()
    sizes["p2p_sd1.safetensors"] = save_safetensors_deterministic(t, os.path.join(OUT, "p2p_sd1.safetensors"), m)
    print("== img2img ==")
    t, m, pipe1 = make_img2img("sd1", SD1, 32, 32, ["default", "ddim"])
    sizes["img2img_sd1.safetensors"] = save_safetensors_deterministic(t, os.path.join(OUT, "img2img_sd1.safetensors"),
                                                                      m)
    t, m, _ = make_img2img("sd2", SD2, 48, 32, ["default"])
    sizes["img2img_sd2.safetensors"] = save_safetensors_deterministic(t, os.path.join(OUT, "img2img_sd2.safetensors"),
                                                                      m)
    print("== DDIM inversion ==")
    t, m = make_inversion(pipe1, 32, 32)
    sizes["ddim_inversion_sd1.safetensors"] = save_safetensors_deterministic(
        t, os.path.join(OUT, "ddim_inversion_sd1.safetensors"), m)

    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    for k, v in sizes.items():
        print(f"  {k:34s} {v:>10,d} bytes")
    print(f"  total tests/fixtures/heatmap/ (README included): {total:,d} bytes (budget {BUDGET:,d})")
    assert total < BUDGET


if __name__ == "__main__":
    main()
