#!/usr/bin/env python3
"""Regenerate diffscope's committed test fixtures (tests/fixtures/): tiny random-weight SD1/SD2 models and
fp32 reference dumps computed with diffusers/transformers.

    python tools/make_fixtures.py            # rewrites everything under tests/fixtures/, prints the total size

Deterministic: fixed seeds, torch.use_deterministic_algorithms(True), one thread. Needs torch, diffusers,
transformers, safetensors, numpy and open_clip_torch (for the BPE file and an OpenCLIP cross-check, run in a
subprocess because transformers must be imported with ftfy blocked). See tests/fixtures/README.md.
"""

import json
import math
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIX = os.path.join(ROOT, "tests", "fixtures")
sys.path.insert(0, HERE)

# ----------------------------------------------------------------------------------------------------------------
# Shared settings
# ----------------------------------------------------------------------------------------------------------------
PROMPT = "A photo of an astronaut riding a horse, 4K  HDR's best!!"
NEGATIVE = "blurry, low-quality jpeg"
SEED = 1234            # generation seed (torch.Generator("cpu").manual_seed)
GIVEN_SEED = 4321      # seed of the user-given initial latents (gen.given.init)
STEPS = 4
GUIDANCE = 7.5
UNET_TIMESTEP = 537.0
SAMPLERS = ["ddim", "euler", "euler_a", "dpmpp_2m", "pndm"]
BUDGET = 24_000_000    # bytes, all fixtures together

# Real hub scheduler configs (runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-2-1), verbatim: keys that
# are absent (timestep_spacing, ...) take each scheduler class's own default when switched with from_config.
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}
SD21_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.8.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

ARCHS = {
    "sd1": dict(
        width=32, height=32,
        text=dict(vocab_size=49408, max_position_embeddings=77, hidden_size=16, num_hidden_layers=3,
                  num_attention_heads=4, intermediate_size=64, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                  bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, projection_dim=16),
        text_extra_layers=0,
        unet=dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32, 32),
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                  layers_per_block=2, cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8,
                  use_linear_projection=False),
        vae=dict(in_channels=3, out_channels=3, block_out_channels=(16, 32, 32),
                 down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                 layers_per_block=2, latent_channels=4, norm_num_groups=8, sample_size=32, scaling_factor=0.18215),
        scheduler=SD15_SCHEDULER,
        pad_token="<|endoftext|>",
        folder_dtype="float16", single_dtype="float32",
        seed=100,
    ),
    "sd2": dict(
        width=48, height=32,
        text=dict(vocab_size=49408, max_position_embeddings=77, hidden_size=20, num_hidden_layers=3,
                  num_attention_heads=4, intermediate_size=96, hidden_act="gelu", layer_norm_eps=1e-5,
                  bos_token_id=49406, eos_token_id=49407, pad_token_id=0, projection_dim=20),
        text_extra_layers=1,
        unet=dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32, 32),
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                  layers_per_block=2, cross_attention_dim=20, attention_head_dim=[2, 4, 4], norm_num_groups=8,
                  use_linear_projection=True, upcast_attention=True),
        vae=dict(in_channels=3, out_channels=3, block_out_channels=(16, 32, 32),
                 down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                 layers_per_block=2, latent_channels=4, norm_num_groups=8, sample_size=32, scaling_factor=0.18215),
        scheduler=SD21_SCHEDULER,
        pad_token="!",
        folder_dtype="bfloat16", single_dtype="float16",
        seed=200,
    ),
}


# ----------------------------------------------------------------------------------------------------------------
# OpenCLIP / open_clip tokenizer cross-check (subprocess: open_clip needs the real ftfy)
# ----------------------------------------------------------------------------------------------------------------
def openclip_check_main(ckpt, out_path, n_layers, width, heads, mlp):
    import torch
    import open_clip
    from open_clip.transformer import TextTransformer
    from safetensors.torch import load_file, save_file

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    sd = load_file(ckpt)
    P = "cond_stage_model.model."
    tsd = {k[len(P):]: v.float() for k, v in sd.items() if k.startswith(P) and k != P + "logit_scale"}
    tt = TextTransformer(context_length=77, vocab_size=49408, width=width, heads=heads, layers=n_layers,
                         mlp_ratio=mlp / width, output_dim=tsd["text_projection"].shape[1],
                         act_layer=torch.nn.GELU, pad_id=0)
    missing, unexpected = tt.load_state_dict(tsd, strict=False)
    assert not unexpected and all("attn_mask" in m for m in missing), (missing, unexpected)
    tt.eval()
    ids = open_clip.tokenize(json.loads(os.environ["OC_TEXTS"]))
    ids_in = torch.tensor(json.loads(os.environ["OC_IDS"]), dtype=torch.long)
    with torch.no_grad():
        # ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder(layer="penultimate").encode_with_transformer
        x = tt.token_embedding(ids_in) + tt.positional_embedding
        mask = tt.attn_mask
        for r in tt.transformer.resblocks[: len(tt.transformer.resblocks) - 1]:
            x = r(x, attn_mask=mask)
        pen = tt.ln_final(x)
        x = tt.transformer.resblocks[-1](x, attn_mask=mask)
        last = tt.ln_final(x)
    save_file({"openclip_ids": ids.to(torch.int32).contiguous(), "penultimate": pen.contiguous(),
               "last": last.contiguous()}, out_path)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--openclip-check":
    openclip_check_main(sys.argv[2], sys.argv[3], *map(int, sys.argv[4:8]))
    sys.exit(0)

# ----------------------------------------------------------------------------------------------------------------
# Main path: transformers must take the no-ftfy tokenizer path
# ----------------------------------------------------------------------------------------------------------------
sys.modules["ftfy"] = None

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import diffusers  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from st_write import write_deterministic  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel,
)
from diffusers.loaders import single_file_utils as sfu  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

import clip_tokenizer_files  # noqa: E402
import ldm_keys  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
diffusers.utils.logging.set_verbosity_error()
diffusers.utils.logging.disable_progress_bar()

SCHED_CLASSES = {
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "pndm": (PNDMScheduler, {}),
}

FP16_MIN_NORMAL = 2.0 ** -14


# ----------------------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------------------
def round_exact(t, arch):
    """SD1: fp16-representable. SD2: representable in bf16 (folder) *and* fp16 (single file)."""
    t = t.float()
    if arch == "sd1":
        r = t.half().float()
    else:
        r = t.bfloat16().float()
        r = torch.where(r.half().float() == r, r, torch.zeros_like(r))  # a few tiny values lost in fp16 subnormals
        assert torch.equal(r.bfloat16().float(), r)
    assert torch.equal(r.half().float(), r) and torch.isfinite(r).all()
    return r


def random_like(name, shape, g, role):
    """Seeded re-initialisation with scales that keep every path alive (see README)."""
    n = torch.randn(shape, generator=g, dtype=torch.float64).float()
    if role == "token_embedding":
        return 0.5 * n
    if role == "position_embedding":
        return 0.2 * n
    if len(shape) == 1:
        if name.endswith("weight"):  # LayerNorm / GroupNorm scale
            return 1.0 + 0.1 * n
        return 0.05 * n  # biases, norm shifts
    fan_in = int(np.prod(shape[1:]))
    gain = 1.0
    if role == "qk":
        gain = 1.5  # somewhat peaked attention so the softmax is far from uniform
    return gain * n / math.sqrt(fan_in)


def randomize_(model, g, arch, gains=None):
    gains = gains or {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            role = None
            if name.endswith("token_embedding.weight"):
                role = "token_embedding"
            elif name.endswith("position_embedding.weight"):
                role = "position_embedding"
            elif any(s in name for s in ("to_q.", "to_k.", "q_proj.", "k_proj.")) and p.ndim == 2:
                role = "qk"
            v = random_like(name, tuple(p.shape), g, role)
            for key, gain in gains.items():
                if name.startswith(key) and p.ndim > 1:
                    v = v * gain
            p.copy_(round_exact(v, arch))


def random_openclip_layer(width, mlp, g, arch):
    """One extra OpenCLIP residual block (transformers naming), randomized like the others."""
    shapes = {
        "layer_norm1.weight": (width,), "layer_norm1.bias": (width,),
        "self_attn.q_proj.weight": (width, width), "self_attn.q_proj.bias": (width,),
        "self_attn.k_proj.weight": (width, width), "self_attn.k_proj.bias": (width,),
        "self_attn.v_proj.weight": (width, width), "self_attn.v_proj.bias": (width,),
        "self_attn.out_proj.weight": (width, width), "self_attn.out_proj.bias": (width,),
        "layer_norm2.weight": (width,), "layer_norm2.bias": (width,),
        "mlp.fc1.weight": (mlp, width), "mlp.fc1.bias": (mlp,),
        "mlp.fc2.weight": (width, mlp), "mlp.fc2.bias": (width,),
    }
    out = {}
    for k, s in shapes.items():
        role = "qk" if k.startswith(("self_attn.q_proj.w", "self_attn.k_proj.w")) else None
        out[k] = round_exact(random_like(k, s, g, role), arch)
    return out


def build_models(arch, cfg):
    g = torch.Generator().manual_seed(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    text = CLIPTextModel(CLIPTextConfig(**cfg["text"])).eval()
    randomize_(text, g, arch)
    unet = UNet2DConditionModel(**cfg["unet"]).eval()
    randomize_(unet, g, arch)
    vae = AutoencoderKL(**cfg["vae"]).eval()
    randomize_(vae, g, arch, gains={"decoder.conv_out": 0.5})
    tc = cfg["text"]
    extra = [random_openclip_layer(tc["hidden_size"], tc["intermediate_size"], g, arch)
             for _ in range(cfg["text_extra_layers"])]
    text_projection = round_exact(torch.randn(tc["hidden_size"], tc["projection_dim"], generator=g)
                                  / math.sqrt(tc["hidden_size"]), arch)
    logit_scale = round_exact(torch.tensor(math.log(100.0)), arch)
    return text, unet, vae, extra, text_projection, logit_scale


# ----------------------------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------------------------
def save_folder(arch, cfg, text, unet, vae, folder):
    dtype = getattr(torch, cfg["folder_dtype"])
    if os.path.exists(folder):
        shutil.rmtree(folder)
    tok_dir = os.path.join(folder, "tokenizer")
    clip_tokenizer_files.write_tokenizer_folder(tok_dir, cfg["pad_token"])
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    scheduler = PNDMScheduler.from_config(cfg["scheduler"]) if cfg["scheduler"]["_class_name"] == "PNDMScheduler" \
        else DDIMScheduler.from_config(cfg["scheduler"])
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    import copy
    pipe_lo = StableDiffusionPipeline(vae=copy.deepcopy(vae).to(dtype), text_encoder=copy.deepcopy(text).to(dtype),
                                      tokenizer=tokenizer, unet=copy.deepcopy(unet).to(dtype), scheduler=scheduler,
                                      safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe_lo.save_pretrained(folder, safe_serialization=True)
    # Tokenizer: keep the hub-style hand-written files (save_pretrained would add tokenizer.json etc.).
    shutil.rmtree(tok_dir)
    clip_tokenizer_files.write_tokenizer_folder(tok_dir, cfg["pad_token"])
    # Scheduler: the verbatim hub config (absent keys matter when switching classes with from_config).
    with open(os.path.join(folder, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(cfg["scheduler"], f, indent=2)
        f.write("\n")
    # SD1 text encoder: the hub's "text_model."-prefixed names (every SD1.x/SD2.x hub folder has them);
    # SD2 keeps transformers >= 5.6's flattened names, so both spellings are covered.
    te_file = os.path.join(folder, "text_encoder", "model.safetensors")
    if arch == "sd1":
        sd = load_file(te_file)
        save_file({"text_model." + k: v for k, v in sd.items()}, te_file, metadata={"format": "pt"})
    return pipe


def write_single_file(arch, cfg, text, unet, vae, extra, text_projection, logit_scale, path):
    dtype = getattr(torch, cfg["single_dtype"])
    ckpt = {}
    ckpt.update(ldm_keys.unet_to_ldm(unet.state_dict(), dict(unet.config)))
    ckpt.update(ldm_keys.vae_to_ldm(vae.state_dict(), dict(vae.config)))
    if arch == "sd1":
        ckpt.update(ldm_keys.clip_to_ldm(text.state_dict()))
    else:
        ckpt.update(ldm_keys.openclip_to_ldm(text.state_dict(), cfg["text"]["num_hidden_layers"], extra,
                                             text_projection, logit_scale))
    ckpt = {k: v.detach().to(dtype).contiguous() for k, v in ckpt.items()}
    if arch == "sd1":  # real SD1 checkpoints carry the CLIP position_ids buffer (int64)
        ckpt[ldm_keys.CLIP_PREFIX + "embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
    for k, v in ldm_keys.ldm_ddpm_buffers().items():  # LatentDiffusion's schedule buffers, fp32
        ckpt[k] = v
    # Single files carry no hyper-parameters that shapes cannot tell. Real SD checkpoints follow the
    # standard rules (SD1: 8 UNet heads; SD2: head dim 64; CLIP head dim 64; 32 norm groups); these
    # tiny models do not, so they carry diffscope's documented overrides (docs/loading.md).
    heads = cfg["unet"]["attention_head_dim"]
    meta = {"format": "pt",
            "diffscope.unet_heads": ",".join(str(h) for h in heads) if isinstance(heads, (list, tuple)) else str(heads),
            "diffscope.text_heads": str(cfg["text"]["num_attention_heads"]),
            "diffscope.norm_groups": str(cfg["unet"]["norm_num_groups"]),
            "diffscope.vae_norm_groups": str(cfg["vae"]["norm_num_groups"]),
            "diffscope.sample_size": str(cfg["unet"]["sample_size"]),
            "diffscope.prediction_type": cfg["scheduler"].get("prediction_type", "epsilon")}
    save_file(ckpt, path, metadata=meta)
    return ckpt


def verify_single_file(arch, cfg, path, folder, text, unet, vae):
    """Convert the single file back with diffusers' own converters; every tensor must equal the original."""
    ckpt = {k: v.float() if v.is_floating_point() else v for k, v in load_file(path).items()}
    report = {}

    def compare(what, conv, ref):
        ref = {k: v.float() for k, v in ref.items()}
        missing = sorted(set(ref) - set(conv))
        extra = sorted(set(conv) - set(ref))
        assert not missing, f"{what}: missing after conversion: {missing[:5]}"
        for k in ref:
            assert conv[k].shape == ref[k].shape, (what, k, conv[k].shape, ref[k].shape)
            assert torch.equal(conv[k].float(), ref[k]), (what, k)
        report[what] = (len(ref), extra)

    conv = sfu.convert_ldm_unet_checkpoint(ckpt, dict(unet.config))
    compare("unet", conv, unet.state_dict())
    conv = sfu.convert_ldm_vae_checkpoint(ckpt, dict(vae.config))
    compare("vae", conv, vae.state_dict())
    if arch == "sd1":
        assert sfu.is_clip_model(ckpt)
        conv = sfu.convert_ldm_clip_checkpoint(ckpt)
    else:
        assert sfu.is_open_clip_model(ckpt)
        conv = sfu.convert_open_clip_checkpoint(text, ckpt, prefix="cond_stage_model.model.")
    conv = {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in conv.items()}
    compare("text_encoder", conv, text.state_dict())
    for what, (n, extra) in report.items():
        print(f"  single-file -> diffusers {what}: {n} tensors equal; extra keys ignored: "
              f"{extra if len(extra) < 8 else extra[:3] + ['...'] + extra[-2:]} ({len(extra)})")
    # The whole pipeline through diffusers' from_single_file, configs from the local folder.
    p1 = StableDiffusionPipeline.from_single_file(path, config=folder, torch_dtype=torch.float32, safety_checker=None,
                                                  feature_extractor=None, requires_safety_checker=False,
                                                  local_files_only=True)
    for what, ref in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        got = getattr(p1, what).state_dict()
        want_sd = ref.state_dict()
        assert set(got) == set(want_sd), (what, set(got) ^ set(want_sd))
        assert all(torch.equal(got[k], want_sd[k]) for k in want_sd), what
    print("  StableDiffusionPipeline.from_single_file(config=folder): all unet/vae/text_encoder tensors equal")
    if arch == "sd2":
        want = {f"encoder.layers.{cfg['text']['num_hidden_layers']}." + s for s in
                ("layer_norm1.weight", "layer_norm1.bias", "layer_norm2.weight", "layer_norm2.bias",
                 "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                 "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias",
                 "self_attn.out_proj.weight", "self_attn.out_proj.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                 "mlp.fc2.weight", "mlp.fc2.bias")}  # text_projection: on diffusers' ignore list
        assert set(report["text_encoder"][1]) == want, report["text_encoder"][1]


# ----------------------------------------------------------------------------------------------------------------
# Reference computation
# ----------------------------------------------------------------------------------------------------------------
class Dump:
    def __init__(self):
        self.t = {}

    def put(self, name, x):
        assert name not in self.t, name
        if isinstance(x, (tuple, list)):
            x = x[0]
        if hasattr(x, "sample") and not torch.is_tensor(x):
            x = x.sample
        x = x.detach().cpu()
        x = x.float() if x.is_floating_point() else x.to(torch.int32)
        self.t[name] = x.contiguous().clone()


def hook_outputs(module, prefix, dump, names):
    handles = []
    mods = dict(module.named_modules())
    for mname, dname in names:
        def fn(m, inp, out, dname=dname):
            dump.put(dname, out)
        handles.append(mods[mname].register_forward_hook(fn))
    return handles


def unet_hook_names(unet):
    import re
    names = [("time_proj", "unet.time_proj"), ("time_embedding", "unet.time_emb"), ("conv_in", "unet.conv_in")]
    for i in range(len(unet.down_blocks)):
        names.append((f"down_blocks.{i}", f"unet.down_blocks.{i}"))
    names.append(("mid_block", "unet.mid_block"))
    for i in range(len(unet.up_blocks)):
        names.append((f"up_blocks.{i}", f"unet.up_blocks.{i}"))
    pat = re.compile(r"^((down|up)_blocks\.\d+\.(resnets|attentions|downsamplers|upsamplers)\.\d+"
                     r"|mid_block\.(resnets|attentions)\.\d+)$")
    for n, _ in unet.named_modules():
        if pat.match(n):
            names.append((n, "unet." + n))
    return names


def compute_refs(arch, cfg, pipe):
    W, H = cfg["width"], cfg["height"]
    vsf = pipe.vae_scale_factor
    h, w = H // vsf, W // vsf
    d = Dump()
    tok, te, unet, vae = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae
    L = te.config.num_hidden_layers

    # ---- text ----
    ids = tok([NEGATIVE, PROMPT], padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    d.put("text.input_ids", ids)
    with torch.no_grad():
        out = te(ids, output_hidden_states=True)
    assert len(out.hidden_states) == L + 1
    for k, hs in enumerate(out.hidden_states):
        d.put(f"text.hidden_states.{k}", hs)
    with torch.no_grad():
        pe, ne = pipe.encode_prompt(PROMPT, "cpu", 1, True, NEGATIVE)
    ctx = torch.cat([ne, pe])
    assert torch.equal(ctx, out.last_hidden_state)
    d.put("text.out", ctx)
    final_ln = te.final_layer_norm if hasattr(te, "final_layer_norm") else te.text_model.final_layer_norm
    with torch.no_grad():
        skip = final_ln(out.hidden_states[-2])
    d.put("text.out_clip_skip2", skip)
    try:
        with torch.no_grad():
            pe1, ne1 = pipe.encode_prompt(PROMPT, "cpu", 1, True, NEGATIVE, clip_skip=1)
        assert torch.allclose(pe1[0], skip[1], atol=1e-6)
        clip_skip_note = "pipeline encode_prompt(clip_skip=1) prompt row == text.out_clip_skip2[1]"
    except AttributeError as e:
        clip_skip_note = f"pipeline encode_prompt(clip_skip=1) fails with this transformers: {e}"
    print("  clip_skip:", clip_skip_note)

    # ---- UNet ----
    g = torch.Generator().manual_seed(cfg["seed"] + 1)
    sample = torch.randn(2, 4, h, w, generator=g)
    timestep = torch.tensor([UNET_TIMESTEP], dtype=torch.float32)
    d.put("unet.in.sample", sample)
    d.put("unet.in.timestep", timestep)
    d.put("unet.in.context", ctx)
    handles = hook_outputs(unet, "unet", d, unet_hook_names(unet))
    blk = unet.down_blocks[0].attentions[0].transformer_blocks[0]
    attn2 = blk.attn2
    cap = {}

    def pre(m, args, kwargs):
        cap["hs"] = args[0] if args else kwargs["hidden_states"]
        cap["ctx"] = kwargs.get("encoder_hidden_states")

    def post(m, args, kwargs, out):
        cap["out"] = out

    handles.append(attn2.register_forward_pre_hook(pre, with_kwargs=True))
    handles.append(attn2.register_forward_hook(post, with_kwargs=True))
    handles.append(blk.ff.net[0].register_forward_hook(
        lambda m, i, o: d.put("unet.down_blocks.0.attentions.0.transformer_blocks.0.ff.act", o)))
    with torch.no_grad():
        uo = unet(sample, timestep, encoder_hidden_states=ctx).sample
    for hd in handles:
        hd.remove()
    d.put("unet.out", uo)
    with torch.no_grad():
        hs, c = cap["hs"], cap["ctx"]
        assert c is not None and torch.equal(c, ctx)
        B, N, _ = hs.shape
        heads = attn2.heads
        q, k, v = attn2.to_q(hs), attn2.to_k(c), attn2.to_v(c)
        dh = q.shape[-1] // heads

        def split(t):  # (B, T, H*dh) -> (B*H, T, dh), batch-major like diffusers' head_to_batch_dim
            return t.view(B, t.shape[1], heads, dh).permute(0, 2, 1, 3).reshape(B * heads, t.shape[1], dh)

        probs = torch.softmax(split(q) @ split(k).transpose(1, 2) * attn2.scale, dim=-1)
        o = (probs @ split(v)).view(B, heads, N, dh).permute(0, 2, 1, 3).reshape(B, N, heads * dh)
        o = attn2.to_out[1](attn2.to_out[0](o))
        err = (o - cap["out"]).abs().max().item()
        assert err < 1e-5, err
    assert attn2.scale == dh ** -0.5
    d.put("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.probs", probs)

    # ---- VAE ----
    g = torch.Generator().manual_seed(cfg["seed"] + 2)
    x = torch.rand(1, 3, H, W, generator=g) * 2 - 1
    z = torch.randn(1, 4, h, w, generator=g) / vae.config.scaling_factor
    d.put("vae.enc.in", x)
    names = [(f"encoder.down_blocks.{i}", f"vae.enc.down_blocks.{i}") for i in range(len(vae.encoder.down_blocks))]
    names += [("encoder.mid_block.attentions.0", "vae.enc.mid_block.attentions.0"),
              ("encoder.mid_block", "vae.enc.mid_block"), ("encoder", "vae.enc.out"),
              ("quant_conv", "vae.enc.moments")]
    handles = hook_outputs(vae, "vae", d, names)
    with torch.no_grad():
        dist = vae.encode(x).latent_dist
    for hd in handles:
        hd.remove()
    assert torch.equal(dist.mean, d.t["vae.enc.moments"][:, :4])
    d.put("vae.dec.in", z)
    names = [("post_quant_conv", "vae.dec.post_quant"), ("decoder.conv_in", "vae.dec.conv_in"),
             ("decoder.mid_block.attentions.0", "vae.dec.mid_block.attentions.0"),
             ("decoder.mid_block", "vae.dec.mid_block")]
    names += [(f"decoder.up_blocks.{i}", f"vae.dec.up_blocks.{i}") for i in range(len(vae.decoder.up_blocks))]
    handles = hook_outputs(vae, "vae", d, names)
    with torch.no_grad():
        dec = vae.decode(z).sample
    for hd in handles:
        hd.remove()
    d.put("vae.dec.out", dec)

    # ---- full generations ----
    base_config = pipe.scheduler.config
    default_sched = pipe.scheduler
    orig_prepare = pipe.prepare_latents
    shape = (1, 4, h, w)

    def run(sampler_name, scheduler, latents=None):
        pipe.scheduler = scheduler
        cap = {"steps": []}

        def prepare(*args, **kwargs):
            gen = kwargs.get("generator", args[6] if len(args) > 6 else None)
            state = gen.get_state()
            res = orig_prepare(*args, **kwargs)
            if kwargs.get("latents", args[7] if len(args) > 7 else None) is None:
                g2 = torch.Generator("cpu")
                g2.set_state(state)
                noise = torch.randn(shape, generator=g2, dtype=torch.float32)
                assert torch.equal(noise * pipe.scheduler.init_noise_sigma, res)
                cap["noise"] = noise
            return res

        def on_step(p, i, t, kw):
            cap["steps"].append(kw["latents"].detach().clone())
            return kw

        pipe.prepare_latents = prepare
        outs = {}
        for ot in ("latent", "np"):
            cap["steps"] = []
            with torch.no_grad():
                r = pipe(PROMPT, negative_prompt=NEGATIVE, height=H, width=W, num_inference_steps=STEPS,
                         guidance_scale=GUIDANCE, generator=torch.Generator("cpu").manual_seed(SEED),
                         latents=None if latents is None else latents.clone(), output_type=ot,
                         callback_on_step_end=on_step)
            outs[ot] = r.images
        pipe.prepare_latents = orig_prepare
        lat = outs["latent"]
        assert torch.equal(lat, cap["steps"][-1])
        img = torch.from_numpy(np.ascontiguousarray(outs["np"])).permute(0, 3, 1, 2)
        with torch.no_grad():  # consistency: image == postprocess(decode(latents / scaling_factor))
            chk = (vae.decode(lat / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
        assert (chk - img).abs().max().item() < 1e-6
        pre = f"gen.{sampler_name}"
        if latents is None:
            d.put(pre + ".init_noise", cap["noise"])
        d.put(pre + ".timesteps", scheduler.timesteps.float())
        for i, s in enumerate(cap["steps"]):
            d.put(f"{pre}.step.{i}", s)
        d.put(pre + ".latents", lat)
        d.put(pre + ".image", img)
        sat = ((img <= 0) | (img >= 1)).float().mean().item()
        print(f"  gen {sampler_name:9s} {type(scheduler).__name__:34s} timesteps={scheduler.timesteps.tolist()} "
              f"latents std={lat.std():.3f} image mean={img.mean():.3f} std={img.std():.3f} clipped={sat:.1%}")
        return scheduler

    sched_desc = {}
    for name in SAMPLERS:
        cls, extra = SCHED_CLASSES[name]
        s = run(name, cls.from_config(base_config, **extra))
        sched_desc[name] = {k: v for k, v in dict(s.config).items() if not k.startswith("_")}
    g = torch.Generator("cpu").manual_seed(GIVEN_SEED)
    given = torch.randn(shape, generator=g)
    d.put("gen.given.init", given)
    run("given", type(default_sched).from_config(base_config), latents=given)
    pipe.scheduler = default_sched

    meta = {
        "format": "diffscope-fixture", "version": "1", "arch": arch,
        "prompt": PROMPT, "negative_prompt": NEGATIVE, "seed": str(SEED), "given_seed": str(GIVEN_SEED),
        "steps": str(STEPS), "guidance": str(GUIDANCE), "width": str(W), "height": str(H),
        "unet_timestep": str(UNET_TIMESTEP),
        "samplers": ",".join(SAMPLERS), "default_scheduler": type(default_sched).__name__,
        "scheduler_configs": json.dumps(sched_desc, sort_keys=True),
        "cfg_batch_order": "uncond,cond",
        "tokenizer": ("no-ftfy path: sys.modules['ftfy']=None; transformers " + transformers.__version__ +
                      " CLIPTokenizer = tokenizers backend (NFC, \\s+ -> ' ', lowercase, CLIP split regex, "
                      "byte-level BPE); pad '" + tok.pad_token + "' = id " + str(tok.pad_token_id)),
        "clip_skip": clip_skip_note,
        "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
        "safetensors": safetensors.__version__, "numpy": np.__version__,
        "attention": type(unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.processor).__name__,
    }
    return d.t, meta


def save_safetensors_deterministic(tensors, path, metadata):
    """Byte-stable safetensors of torch tensors (tools/st_write.py)."""
    return write_deterministic(path, {k: t.contiguous().numpy() for k, t in tensors.items()}, metadata)


def print_stats(tensors):
    bad = []
    for k in sorted(tensors):
        t = tensors[k]
        if not t.is_floating_point():
            print(f"    {k:70s} {str(tuple(t.shape)):18s} int  min={t.min().item()} max={t.max().item()}")
            continue
        mn, mx, sd = t.min().item(), t.max().item(), t.std().item() if t.numel() > 1 else 0.0
        flag = ""
        if not torch.isfinite(t).all():
            flag = "  <-- NaN/Inf"
        elif max(abs(mn), abs(mx)) > 1e4:
            flag = "  <-- exploding"
        elif t.numel() > 1 and sd < 1e-4:
            flag = "  <-- vanishing"
        if flag:
            bad.append(k)
        print(f"    {k:70s} {str(tuple(t.shape)):18s} min={mn:+10.4f} max={mx:+10.4f} std={sd:9.4f}{flag}")
    return bad


def openclip_crosscheck(cfg, single_path, ids, text_out, tmpdir):
    tc = cfg["text"]
    out = os.path.join(tmpdir, "openclip_check.safetensors")
    env = dict(os.environ, OC_TEXTS=json.dumps([NEGATIVE, PROMPT]), OC_IDS=json.dumps(ids.tolist()))
    subprocess.run([sys.executable, os.path.abspath(__file__), "--openclip-check", single_path, out,
                    str(tc["num_hidden_layers"] + cfg["text_extra_layers"]), str(tc["hidden_size"]),
                    str(tc["num_attention_heads"]), str(tc["intermediate_size"])], check=True, env=env)
    r = load_file(out)
    err = (r["penultimate"] - text_out).abs().max().item()
    diff_last = (r["last"] - text_out).abs().max().item()
    print(f"  OpenCLIP (open_clip TextTransformer on the single file, layer='penultimate') vs text.out: "
          f"max|diff|={err:.2e}; full-depth output differs by {diff_last:.2f} (extra layer is real)")
    assert err < 1e-5 and diff_last > 1e-2
    return r["openclip_ids"]


def tokenizer_crosscheck(arch, ids, oc_ids):
    """open_clip.tokenize (ftfy on, pads 0) vs transformers (no ftfy): same tokens up to the first EOS?"""
    for row in range(ids.shape[0]):
        a, b = ids[row].tolist(), oc_ids[row].tolist()
        na, nb = a.index(49407), b.index(49407)
        same = a[:na + 1] == b[:nb + 1]
        print(f"  tokens row {row}: transformers {a[:na + 2]}")
        if not same:
            print(f"               open_clip   {b[:nb + 2]}   <-- differs")


def owned_files():
    out = []
    for arch in ARCHS:
        for dp, _, fs in os.walk(os.path.join(FIX, f"{arch}_tiny")):
            out += [os.path.join(dp, f) for f in fs]
        out += [os.path.join(FIX, f"{arch}_tiny.safetensors"), os.path.join(FIX, f"{arch}_ref.safetensors")]
    return sorted(out)


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(FIX, exist_ok=True)
    tmpdir = os.path.join(FIX, ".tmp")
    os.makedirs(tmpdir, exist_ok=True)
    all_bad = []
    for arch, cfg in ARCHS.items():
        print(f"== {arch} ==")
        text, unet, vae, extra, text_projection, logit_scale = build_models(arch, cfg)
        folder = os.path.join(FIX, f"{arch}_tiny")
        save_folder(arch, cfg, text, unet, vae, folder)
        single = os.path.join(FIX, f"{arch}_tiny.safetensors")
        write_single_file(arch, cfg, text, unet, vae, extra, text_projection, logit_scale, single)
        verify_single_file(arch, cfg, single, folder, text, unet, vae)

        # Reference pipeline: the saved folder loaded back in fp32 (must equal the in-memory weights).
        pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32, safety_checker=None,
                                                       feature_extractor=None, requires_safety_checker=False)
        for name, mod in (("text_encoder", text), ("unet", unet), ("vae", vae)):
            loaded = getattr(pipe, name).state_dict()
            for k, v in mod.state_dict().items():
                assert torch.equal(loaded[k], v), (name, k)
        assert dict(pipe.scheduler.config)["timestep_spacing"] == "leading"
        pipe.set_progress_bar_config(disable=True)
        tensors, meta = compute_refs(arch, cfg, pipe)
        oc_ids = openclip_crosscheck(cfg, single, tensors["text.input_ids"], tensors["text.out"], tmpdir) \
            if arch == "sd2" else None
        if oc_ids is None:
            r = subprocess.run([sys.executable, "-c", "import json,sys,open_clip;print(json.dumps("
                                "open_clip.tokenize(json.loads(sys.argv[1])).tolist()))",
                                json.dumps([NEGATIVE, PROMPT])], check=True, capture_output=True, text=True)
            oc_ids = torch.tensor(json.loads(r.stdout.strip().splitlines()[-1]))
        tokenizer_crosscheck(arch, tensors["text.input_ids"], oc_ids)
        bad = print_stats(tensors)
        all_bad += [f"{arch}:{b}" for b in bad]
        save_safetensors_deterministic(tensors, os.path.join(FIX, f"{arch}_ref.safetensors"), meta)
    shutil.rmtree(tmpdir)
    for p in owned_files():  # safetensors writes 0600 files
        os.chmod(p, 0o644)

    print("== sizes ==")
    total = 0
    for p in owned_files():
        sz = os.path.getsize(p)
        total += sz
        print(f"  {sz:>10,d}  {os.path.relpath(p, ROOT)}")
    print(f"  {total:>10,d}  total of this script's fixtures ({total / 1e6:.2f} MB = {total / 2**20:.2f} MiB; "
          f"budget < {BUDGET / 1e6:.0f} MB)")
    others = [os.path.join(dp, f) for dp, _, fs in os.walk(FIX) for f in fs]
    others = sorted(set(others) - set(owned_files()) - {os.path.join(FIX, "README.md")})
    if others:
        print(f"  (not counted, written by other tools: {sum(map(os.path.getsize, others)):,d} bytes in "
              f"{len(others)} files, e.g. {os.path.relpath(others[0], ROOT)})")
    assert total < BUDGET, "fixtures over budget"
    if all_bad:
        print("WARNING: suspicious activations:", all_bad)
        sys.exit(1)


if __name__ == "__main__":
    main()
