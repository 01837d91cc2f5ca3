#!/usr/bin/env python3
"""`diffscope testbed eval`'s protocol run with the real daam 0.2.0 package on diffusers (issue 5, item 5).

Runs in the venv made by tools/daam_venv.sh (daam 0.2.0, diffusers 0.21.2, transformers 4.30.2; torch from the
main environment), CPU, one thread:

    .venv-daam/bin/python tools/testbed_daam.py [--model models/default] [--n 40] [--seed 0] [--first 0]
        [--per-word] [--quiet] [--json OUT.json] [--check K --diffscope build/diffscope] [--compare C_LOG]

The protocol is host/testbed.c + host/cli/cmd_testbed.c (docs/testbed.md), step for step:

  scenes       held-out scene i = tools/scenes.py sample_scene(10^12 + first + i, native size); its caption is
               the prompt (the C twin host/scenes.c gives the same captions, pixels and masks)
  generated    StableDiffusionPipeline (the model's own scheduler: PNDM for models/default), 20 steps, guidance
               7.5, generator torch.Generator("cpu").manual_seed(seed + i), native size, inside daam's
               `trace(pipe)`
  detection    tools/train_detect.py (the Python twin of host/detect.c, same integer rules; checked against
               the C detector by tests/fixtures/scenes/detect.safetensors and, here, with --check / --compare):
               every named object takes the largest unused component of its colour and shape
  words        the caption's distinct colour words, then its distinct shape words (caption order); a word's
               heat map is daam's: tc.compute_global_heat_map(factors=<every factor daam recorded>)
               .compute_word_heat_map(word) (all occurrences of the word merged), then daam's own
               WordHeatMap.expand_as(image, threshold=tau): bicubic to the image size, min-max per word,
               map > tau (tau 0.4). The plural "<word>s" is tried when the word itself is not in the prompt,
               as testbed.c does (never needed for scene captions).
  IoU          |pred & truth| / |pred | truth| over the image's pixels (NaN when both are empty). Truth for a
               word = union of the masks of every object it names; on generated images a word is scored only
               when all of its objects were detected
  real images  the scene rendered (scenes.render: exact masks) and run through StableDiffusionImg2ImgPipeline
               (same components, strength 0.5, generator manual_seed(seed + i), same steps/guidance/scheduler)
               inside `trace(img2img_pipe)`; every word scored against its objects' exact masks
  totals       detect = found / named over the generated images; miou_gen / miou_real = mean IoU over the
               shape-word instances (one distinct shape word of one image); colour words averaged separately

Why `factors=`: daam sets latent_hw = 9216 for any model whose native size is not 512/1024 px, so on the 64-px
default model (16x16 and 8x8 cross-attention) its factors are 6 and 12; the default factor set {0,1,2,4,8,...}
finds none and raises "No heat maps found". Passing every recorded factor is what daam's default does on
512/768-px models and what diffscope's daam mode does (docs/heatmaps.md).

daam's `trace` works unchanged on StableDiffusionImg2ImgPipeline in diffusers 0.21.2: its hooks are the attn2
processors of the UNet (shared with the txt2img pipe), `check_inputs` (prompt first in both pipelines; clears the
maps and records the prompt) and `run_safety_checker` (records the last image) — all present in the img2img
pipeline; only the UNet calls that run (the last `strength` of the schedule) are summed, as in diffscope. The
script checks this at startup (the img2img run records maps and the prompt).

Prints, like `diffscope testbed eval`, one line per image (unless --quiet), the colour-word / shape-word / per-
shape summary lines, the --per-word detection rates, and last:

    testbed(daam): detect=D miou_gen=G miou_real=R

Expect equal numbers up to float noise: diffscope's images equal diffusers' to about 1 grey level and its word maps
correlate with daam's at Pearson ~1 (see --check); but a few seeds have an ill-conditioned sampling trajectory
(diffusers fp32 vs fp64 differ by ~1e-2 there), where the images differ visibly and a detection can flip.

--json writes every per-word number. --check K runs `diffscope heatmap` (--diffscope BIN) on the first K
scenes (generated and real) and reports the image difference and the per-word map Pearson correlation between
diffscope and daam. --compare LOG reads the stdout of `diffscope testbed eval` (not --quiet) on the same
scenes and compares detection and every per-word IoU, image by image.
"""
import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

SEED0 = 10 ** 12          # DS_TESTBED_SEED0
TRAIN_SEEDS = 100000      # DS_TESTBED_TRAIN_SEEDS
COLOR, SHAPE = 0, 1


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def fmt(v):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else "%.3f" % v


def mean_or_nan(xs):
    return sum(xs) / len(xs) if xs else float("nan")


# ---- protocol pieces (testbed.c) -------------------------------------------------------------------

def collect_words(objs):
    """testbed.c collect_words: distinct colour words, then distinct shape words, caption order."""
    import scenes

    words = []
    for kind in (COLOR, SHAPE):
        for c, s in objs:
            idx = c if kind == COLOR else s
            w = next((w for w in words if w["kind"] == kind and w["index"] == idx), None)
            if w is None:
                w = dict(text=(scenes.COLORS if kind == COLOR else scenes.SHAPES)[idx], kind=kind, index=idx,
                         n_objects=0, mapped=False, iou=float("nan"), pred_frac=0.0, true_frac=0.0)
                words.append(w)
            w["n_objects"] += 1
    return words


def map_iou(pred, truth):
    """ds_map_iou on boolean arrays: (iou or NaN, pred_frac)."""
    inter = int((pred & truth).sum())
    uni = int((pred | truth).sum())
    return (inter / uni if uni else float("nan")), float(pred.sum()) / pred.size


def word_form(tok, prompt, text):
    """The form of the word daam finds in the prompt (the word, else its plural), or None (testbed.c
    build_wordlist)."""
    from daam.utils import compute_token_merge_indices

    for form in (text, text + "s"):
        try:
            compute_token_merge_indices(tok, prompt, form)
            return form
        except ValueError:
            pass
    return None


def score_words(gm, tok, prompt, image, objs, truth_masks, has_truth, words, tau, keep_maps=None):
    """testbed.c score_words with daam's own map -> mask route."""
    for w in words:
        form = word_form(tok, prompt, w["text"])
        w["mapped"] = form is not None
        if form is None:
            continue
        wm = gm.compute_word_heat_map(form)
        if keep_maps is not None:
            keep_maps[w["text"]] = wm.heatmap.detach().float().numpy().copy()
        names = [i for i, (c, s) in enumerate(objs) if (c if w["kind"] == COLOR else s) == w["index"]]
        if not all(has_truth[i] for i in names):
            continue
        truth = truth_masks[names[0]].copy()
        for i in names[1:]:
            truth |= truth_masks[i]
        if tau > 0:  # daam's route: expand_as(threshold=tau) = (minmax(bicubic(map, image size)) > tau).float()
            pred = wm.expand_as(image, threshold=tau).numpy() > 0.5
        else:  # daam skips a falsy threshold
            pred = wm.expand_as(image).numpy() > tau
        w["true_frac"] = float(truth.sum()) / truth.size
        w["iou"], w["pred_frac"] = map_iou(pred, truth)


def run_traced(pipe, factors_out=None, **kw):
    from daam import trace

    with trace(pipe) as tc:
        out = pipe(**kw)
        image = out.images[0]
        factors = sorted(tc.all_heat_maps.factors())
        if not factors:
            raise RuntimeError("daam recorded no cross-attention maps")
        gm = tc.compute_global_heat_map(factors=factors)
        last_prompt = tc.last_prompt
    if factors_out is not None:
        factors_out.append(factors)
    if last_prompt != kw["prompt"]:
        raise RuntimeError("daam's trace did not see the prompt of this run (%r)" % last_prompt)
    return image, gm


class Totals:
    """ds_testbed_totals."""

    def __init__(self, n_colors, n_shapes):
        self.named = self.found = 0
        self.word_named = [[0] * n_colors, [0] * n_shapes]
        self.word_found = [[0] * n_colors, [0] * n_shapes]
        self.iou = [[[], []], [[], []]]  # [real][kind] -> list
        self.unscored = [[0, 0], [0, 0]]
        self.word_iou = [[[[] for _ in range(n_colors)], [[] for _ in range(n_shapes)]] for _ in range(2)]

    def add(self, r, real):
        if not real:
            self.named += len(r["objects"])
            self.found += sum(r["found"])
            for (c, s), f in zip(r["objects"], r["found"]):
                self.word_named[COLOR][c] += 1
                self.word_found[COLOR][c] += f
                self.word_named[SHAPE][s] += 1
                self.word_found[SHAPE][s] += f
        for w in r["words"]:
            if math.isnan(w["iou"]):
                self.unscored[real][w["kind"]] += 1
                continue
            self.iou[real][w["kind"]].append(w["iou"])
            self.word_iou[real][w["kind"]][w["index"]].append(w["iou"])

    def detect(self):
        return self.found / self.named if self.named else float("nan")

    def miou(self, real, kind):
        return mean_or_nan(self.iou[real][kind])


def words_line(words):
    parts, prev = [], None
    for w in words:
        if prev is not None and w["kind"] != prev:
            parts.append(" |")
        prev = w["kind"]
        parts.append(" %s=-" % w["text"] if math.isnan(w["iou"]) else " %s=%.3f" % (w["text"], w["iou"]))
    return "".join(parts)


# ---- consistency with diffscope -----------------------------------------------------------------------

def pearson(a, b):
    import numpy as np

    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    d = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / d if d > 0 else float("nan")


def diffscope_heatmap(bin_path, model, prompt, seed, words, a, outdir, image_path=None):
    cmd = [bin_path, "heatmap", "--model", model, "--prompt", prompt, "--seed", str(seed), "--steps", str(a.steps),
           "--guidance", str(a.guidance), "--words", ",".join(words), "--mode", "daam", "--no-per-layer",
           "--tau", str(a.tau), "--quiet", "--out", outdir]
    if image_path:
        cmd += ["--image", image_path, "--strength", str(a.strength)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stderr.strip()[-2000:]))
    import numpy as np
    from PIL import Image

    img = np.array(Image.open(os.path.join(outdir, "image.png")).convert("RGB"))
    maps = np.load(os.path.join(outdir, "maps.npy"))
    with open(os.path.join(outdir, "meta.json")) as f:
        meta = json.load(f)
    names = meta.get("words")
    if isinstance(names, list) and names and isinstance(names[0], dict):
        names = [w.get("word") or w.get("text") or w.get("name") for w in names]
    if not isinstance(names, list) or len(names) != maps.shape[0]:
        names = list(words)
    return img, dict(zip(names, maps)), time.perf_counter() - t0


def consistency_one(kind, ds_img, ds_maps, dm_img, dm_maps, objs, tau):
    """Image and map agreement of one run (diffscope vs daam/diffusers)."""
    import numpy as np
    import torch
    from daam.heatmap import WordHeatMap
    from PIL import Image
    import train_detect as D

    di = np.abs(ds_img.astype(np.int16) - dm_img.astype(np.int16))
    rec = dict(kind=kind, img_max_abs=int(di.max()), img_mean_abs=float(di.mean()),
               img_px_differ=float((di.max(-1) > 0).mean()), words={})
    if kind == "gen":  # the C and Python detectors on the same pixels: diffscope's image
        comps = D.analyze(ds_img)
        res, used = D.match(comps, objs)
        rec["py_detect_on_diffscope_image"] = [int(r["found"]) for r in res]
        rec["py_extra_on_diffscope_image"] = sum(1 for u in used if not u)
        res2, _ = D.match(D.analyze(dm_img), objs)
        rec["py_detect_on_diffusers_image"] = [int(r["found"]) for r in res2]
    pil = Image.fromarray(dm_img)
    for w, m in dm_maps.items():
        if w not in ds_maps:
            continue
        o = ds_maps[w]
        if o.shape != m.shape:
            rec["words"][w] = dict(shape_mismatch=[list(o.shape), list(m.shape)])
            continue
        mask_ds = WordHeatMap(torch.from_numpy(np.ascontiguousarray(o))).expand_as(pil, threshold=tau).numpy() > 0.5
        mask_dm = WordHeatMap(torch.from_numpy(np.ascontiguousarray(m))).expand_as(pil, threshold=tau).numpy() > 0.5
        agree, _ = map_iou(mask_ds, mask_dm)
        rec["words"][w] = dict(pearson=pearson(o, m),
                               max_rel=float(np.abs(o - m).max() / max(float(np.abs(m).max()), 1e-30)),
                               mask_iou=agree, mask_px_differ=int((mask_ds != mask_dm).sum()))
    return rec


def parse_c_log(path):
    """Per-image lines of `diffscope testbed eval` stdout -> {scene seed: dict(found, named, extra, gen, real)}."""
    out = {}
    pat = re.compile(r"^\[(\d+)/\d+\] scene=(\d+) seed=(\d+) detect=(\d+)/(\d+) extra=(\d+) "
                     r"gen:(.*) real:(.*) \"(.*)\"$")
    for line in open(path):
        m = pat.match(line.rstrip("\n"))
        if not m:
            continue

        def words(s):
            d = {}
            for tok in s.replace("|", " ").split():
                k, v = tok.split("=")
                d[k] = float("nan") if v == "-" else float(v)
            return d

        out[int(m.group(2))] = dict(scene=int(m.group(2)), seed=int(m.group(3)), found=int(m.group(4)),
                                        named=int(m.group(5)), extra=int(m.group(6)), gen=words(m.group(7)),
                                        real=words(m.group(8)), caption=m.group(9))
    return out


def compare_with_c(c_rows, images):
    """Image-by-image comparison with diffscope's own testbed run."""
    n_img = n_det_same = n_extra_same = 0
    n_words = n_same_scored = n_both = n_exact = 0
    diffs = {"gen": [], "real": []}
    worst = []
    for rec in images:
        c = c_rows.get(rec["scene"])
        if c is None:
            continue
        if c["caption"] != rec["caption"]:
            raise RuntimeError("caption mismatch at %d: %r vs %r" % (rec["index"], c["caption"], rec["caption"]))
        if c["seed"] != rec["seed"]:
            raise RuntimeError("scene %d: the diffscope log used generation seed %d, this run %d (--seed/--first "
                               "differ: prompt i of a run has seed SEED + i)" % (rec["scene"], c["seed"], rec["seed"]))
        n_img += 1
        n_det_same += c["found"] == sum(rec["gen"]["found"])
        n_extra_same += c["extra"] == rec["gen"]["extra"]
        for half in ("gen", "real"):
            for w in rec[half]["words"]:
                cv = c[half].get(w["text"])
                if cv is None:
                    continue
                n_words += 1
                a_nan, b_nan = math.isnan(cv), math.isnan(w["iou"])
                if a_nan or b_nan:
                    n_same_scored += a_nan == b_nan
                    continue
                n_same_scored += 1
                n_both += 1
                d = abs(cv - w["iou"])
                n_exact += d < 0.0005 + 1e-9  # C prints 3 decimals
                diffs[half].append(d)
                worst.append((d, rec["index"], half, w["text"], cv, w["iou"]))
    worst.sort(reverse=True)
    return dict(images=n_img, detect_count_equal=n_det_same, extra_equal=n_extra_same, words=n_words,
                scored_same=n_same_scored, scored_both=n_both, iou_equal_3dp=n_exact,
                mean_abs_iou_diff_gen=mean_or_nan(diffs["gen"]), mean_abs_iou_diff_real=mean_or_nan(diffs["real"]),
                max_abs_iou_diff=max([x[0] for x in worst], default=float("nan")),
                worst=[dict(index=i, half=h, word=t, diffscope=cv, daam=dv) for d, i, h, t, cv, dv in worst[:5]])


# ---- main ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    ap.add_argument("--n", type=int, default=50, help="held-out prompts (scenes), >= 1 (default 50, as testbed eval)")
    ap.add_argument("--seed", type=int, default=0, help="generation seed of prompt i is SEED + i (default 0)")
    ap.add_argument("--first", type=int, default=0, help="start at held-out scene K (default 0)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=None,
                    help="default: the model's recommendation (model_index.json _diffscope_guidance_scale), else 7.5,"
                         " as diffscope testbed eval")
    ap.add_argument("--strength", type=float, default=0.5)
    ap.add_argument("--tau", type=float, default=0.4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--per-word", action="store_true", help="WORD=RATE detection-rate lines")
    ap.add_argument("--quiet", action="store_true", help="only --per-word lines and the summary line")
    ap.add_argument("--json", default=None, help="write every per-image, per-word number here")
    ap.add_argument("--check", type=int, default=0, metavar="K",
                    help="consistency: run `diffscope heatmap` on the first K scenes (needs --diffscope)")
    ap.add_argument("--diffscope", default=None, help="the diffscope binary for --check")
    ap.add_argument("--compare", default=None, metavar="LOG",
                    help="stdout of `diffscope testbed eval` (not --quiet) on the same scenes: compare per word")
    a = ap.parse_args()
    if a.guidance is None:
        try:
            with open(os.path.join(a.model, "model_index.json")) as f:
                a.guidance = float(json.load(f).get("_diffscope_guidance_scale", 7.5))
        except (OSError, ValueError):
            a.guidance = 7.5
    if a.n < 1:
        log("testbed_daam: --n must be a positive number of prompts (got %d)" % a.n)
        return 2
    if a.check and not a.diffscope:
        log("testbed_daam: --check needs --diffscope BIN")
        return 2
    if a.first < 0:
        log("testbed_daam: --first must be >= 0")
        return 2

    import numpy as np
    import torch
    import diffusers
    import transformers
    import daam
    from diffusers import StableDiffusionPipeline, StableDiffusionImg2ImgPipeline
    from PIL import Image

    import scenes
    import train_detect as D

    torch.set_num_threads(a.threads)
    transformers.logging.set_verbosity_error()
    diffusers.logging.set_verbosity_error()
    try:
        diffusers.utils.logging.disable_progress_bar()
    except Exception:
        pass

    t0 = time.perf_counter()
    # the tokenizers library prints "Ignored unknown kwarg option __type" on the process's stdout while loading
    # a tokenizer_config.json written by newer transformers: send fd 1 to stderr meanwhile (stdout = results only)
    sys.stdout.flush()
    saved_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        pipe = StableDiffusionPipeline.from_pretrained(a.model, torch_dtype=torch.float32, safety_checker=None,
                                                       requires_safety_checker=False)
    finally:
        sys.stdout.flush()
        os.dup2(saved_fd, 1)
        os.close(saved_fd)
    pipe.set_progress_bar_config(disable=True)
    i2i = StableDiffusionImg2ImgPipeline(**pipe.components)  # the same modules (and the same UNet daam hooks)
    i2i.set_progress_bar_config(disable=True)
    tok = pipe.tokenizer
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    t_load = time.perf_counter() - t0
    if not a.quiet:
        log("testbed(daam): daam %s, diffusers %s, transformers %s, torch %s; %s, %d threads" % (
            daam.__version__, diffusers.__version__, transformers.__version__, torch.__version__,
            type(pipe.scheduler).__name__, a.threads))
        log("testbed(daam): held-out scenes %d..%d (training used seeds 0..%d), generation seeds %d.., %d steps, "
            "guidance %g, real images at strength %g, tau %g" % (SEED0 + a.first, SEED0 + a.first + a.n - 1,
                                                                  TRAIN_SEEDS - 1, a.seed, a.steps, a.guidance,
                                                                  a.strength, a.tau))

    tot = Totals(len(scenes.COLORS), len(scenes.SHAPES))
    images, checks, factors_seen = [], [], []
    t_ds_check = 0.0
    tmp = tempfile.mkdtemp(prefix="testbed_daam_") if a.check else None
    t_eval0 = time.perf_counter()
    for i in range(a.n):
        scene_seed = SEED0 + a.first + i
        seed = a.seed + i
        sc = scenes.sample_scene(scene_seed, size)
        caption = scenes.caption(sc)
        objs = scenes.parse_caption(caption)[0]  # = the scene's objects (ds_scene_parse_caption)
        keep = i < a.check

        # generated image
        g_maps = {} if keep else None
        image, gm = run_traced(pipe, factors_seen, prompt=caption, height=size, width=size,
                               num_inference_steps=a.steps, guidance_scale=a.guidance,
                               generator=torch.Generator("cpu").manual_seed(seed))
        img = np.array(image.convert("RGB"))
        gwords = collect_words(objs)
        comps = D.analyze(img)
        res, used = D.match(comps, objs)
        found = [int(r["found"]) for r in res]
        masks = [r["mask"] if r["found"] else np.zeros(img.shape[:2], bool) for r in res]
        score_words(gm, tok, caption, image, objs, masks, found, gwords, a.tau, g_maps)
        g = dict(objects=objs, found=found, extra=sum(1 for u in used if not u), words=gwords)
        tot.add(g, 0)

        # real image: the scene itself through image-to-image
        rgb, exact = scenes.render(sc)
        init = Image.fromarray(rgb)
        r_maps = {} if keep else None
        r_image, r_gm = run_traced(i2i, factors_seen, prompt=caption, image=init, strength=a.strength,
                                   num_inference_steps=a.steps, guidance_scale=a.guidance,
                                   generator=torch.Generator("cpu").manual_seed(seed))
        rwords = collect_words(objs)
        score_words(r_gm, tok, caption, r_image, objs, list(exact), [1] * len(objs), rwords, a.tau, r_maps)
        r = dict(objects=objs, found=[1] * len(objs), extra=0, words=rwords)
        tot.add(r, 1)

        rec = dict(index=a.first + i, scene=scene_seed, seed=seed, caption=caption, gen=g, real=r)
        images.append(rec)
        if not a.quiet:
            print("[%d/%d] scene=%d seed=%d detect=%d/%d extra=%d gen:%s real:%s \"%s\"" % (
                i + 1, a.n, scene_seed, seed, sum(found), len(objs), g["extra"], words_line(gwords),
                words_line(rwords), caption), flush=True)

        if keep:  # consistency with diffscope on the same scene
            tc0 = time.perf_counter()
            wl = [w["text"] for w in gwords]
            d = os.path.join(tmp, "gen%d" % i)
            ds_img, ds_maps, _ = diffscope_heatmap(a.diffscope, a.model, caption, seed, wl, a, d)
            cg = consistency_one("gen", ds_img, ds_maps, img, g_maps, objs, a.tau)
            cg["daam_detect"] = found
            scene_png = os.path.join(tmp, "scene%d.png" % i)
            init.save(scene_png)
            d = os.path.join(tmp, "real%d" % i)
            ds_img, ds_maps, _ = diffscope_heatmap(a.diffscope, a.model, caption, seed, wl, a, d, scene_png)
            cr = consistency_one("real", ds_img, ds_maps, np.array(r_image.convert("RGB")), r_maps, objs, a.tau)
            checks.append(dict(index=a.first + i, scene=scene_seed, caption=caption, gen=cg, real=cr))
            t_ds_check += time.perf_counter() - tc0
    t_eval = time.perf_counter() - t_eval0 - t_ds_check

    # ---- summary (cmd_testbed.c) ----
    if not a.quiet:
        print("colour words: miou_gen=%s miou_real=%s (%d and %d words scored)" % (
            fmt(tot.miou(0, COLOR)), fmt(tot.miou(1, COLOR)), len(tot.iou[0][COLOR]), len(tot.iou[1][COLOR])))
        print("shape words: %d and %d scored, %d generated-image words not scored (object not detected)" % (
            len(tot.iou[0][SHAPE]), len(tot.iou[1][SHAPE]), tot.unscored[0][SHAPE]))
        print("miou by shape word (gen/real):" + "".join(
            " %s=%s/%s" % (s, fmt(mean_or_nan(tot.word_iou[0][SHAPE][k])), fmt(mean_or_nan(tot.word_iou[1][SHAPE][k])))
            for k, s in enumerate(scenes.SHAPES)))
        fs = sorted({f for fl in factors_seen for f in fl})
        log("testbed(daam): %d prompts in %.1f s (+ model load %.1f s; daam factors used %s)" % (
            a.n, t_eval, t_load, fs))

    summary = dict(detect=tot.detect(), miou_gen=tot.miou(0, SHAPE), miou_real=tot.miou(1, SHAPE),
                   miou_gen_color=tot.miou(0, COLOR), miou_real_color=tot.miou(1, COLOR),
                   shape_words_scored=[len(tot.iou[0][SHAPE]), len(tot.iou[1][SHAPE])],
                   shape_words_unscored_gen=tot.unscored[0][SHAPE], seconds_eval=t_eval, seconds_load=t_load)

    consistency = None
    if checks:
        cons = dict(scenes=len(checks), per_scene=checks)
        for half in ("gen", "real"):
            recs = [c[half] for c in checks]
            ws = [w for c in recs for w in c["words"].values() if "pearson" in w]
            cons[half] = dict(img_max_abs=max(c["img_max_abs"] for c in recs),
                              img_mean_abs=mean_or_nan([c["img_mean_abs"] for c in recs]),
                              img_px_differ=mean_or_nan([c["img_px_differ"] for c in recs]),
                              words=len(ws), pearson_min=min((w["pearson"] for w in ws), default=float("nan")),
                              max_rel_max=max((w["max_rel"] for w in ws), default=float("nan")),
                              mask_iou_min=min((w["mask_iou"] for w in ws if not math.isnan(w["mask_iou"])),
                                               default=float("nan")),
                              mask_px_differ_max=max((w["mask_px_differ"] for w in ws), default=0))
        cons["detector_c_vs_py_same_image"] = None  # filled by --compare (C detect counts on the same pixels)
        consistency = cons
        for half, what in (("gen", "generated"), ("real", "real (img2img)")):
            c = cons[half]
            print("consistency %s, %d scenes: image |diffscope - diffusers| max %d, mean %.4f, %.1f%% px differ; "
                  "word maps (%d) Pearson min %.6f, max rel diff %.1e; tau masks IoU min %.3f (max %d px differ)" % (
                      what, len(checks), c["img_max_abs"], c["img_mean_abs"], 100 * c["img_px_differ"], c["words"],
                      c["pearson_min"], c["max_rel_max"], c["mask_iou_min"], c["mask_px_differ_max"]))
        same = sum(c["gen"]["py_detect_on_diffscope_image"] == c["gen"]["py_detect_on_diffusers_image"]
                   for c in checks)
        print("consistency detection: Python detector finds the same objects on diffscope's and diffusers' image "
              "in %d/%d scenes" % (same, len(checks)))

    comparison = None
    if a.compare:
        c_rows = parse_c_log(a.compare)
        comparison = compare_with_c(c_rows, images)
        if checks:  # the C detector (testbed log) vs the Python detector on diffscope's own image
            agree = 0
            for c in checks:
                row = c_rows.get(c["scene"])
                if row is not None:
                    agree += (row["found"] == sum(c["gen"]["py_detect_on_diffscope_image"])
                              and row["extra"] == c["gen"]["py_extra_on_diffscope_image"])
            consistency["detector_c_vs_py_same_image"] = "%d/%d" % (agree, len(checks))
            print("consistency detector: C (testbed) and Python (train_detect.py) counts agree on diffscope's image "
                  "in %d/%d scenes" % (agree, len(checks)))
        cmpd = comparison
        print("compare with diffscope testbed: %d images, detect count equal %d, extra equal %d; %d words, scored "
              "alike %d; IoU equal to 3 decimals in %d of the %d scored by both; mean |dIoU| gen %s real %s, max %s" % (
                  cmpd["images"], cmpd["detect_count_equal"], cmpd["extra_equal"], cmpd["words"], cmpd["scored_same"],
                  cmpd["iou_equal_3dp"], cmpd["scored_both"], fmt(cmpd["mean_abs_iou_diff_gen"]),
                  fmt(cmpd["mean_abs_iou_diff_real"]),
                  fmt(cmpd["max_abs_iou_diff"])))

    if a.per_word:
        for kind, names in ((COLOR, scenes.COLORS), (SHAPE, scenes.SHAPES)):
            for k, name in enumerate(names):
                n = tot.word_named[kind][k]
                print("%s=%s" % (name, fmt(tot.word_found[kind][k] / n if n else float("nan"))))

    if a.json:
        def clean(o):
            if isinstance(o, float) and math.isnan(o):
                return None
            if isinstance(o, dict):
                return {k: clean(v) for k, v in o.items()}
            if isinstance(o, (list, tuple)):
                return [clean(v) for v in o]
            if isinstance(o, (np.integer,)):
                return int(o)
            if isinstance(o, (np.floating,)):
                return float(o)
            return o

        doc = dict(tool="tools/testbed_daam.py", model=a.model,
                   versions=dict(daam=daam.__version__, diffusers=diffusers.__version__,
                                 transformers=transformers.__version__, torch=torch.__version__),
                   params=dict(n=a.n, seed=a.seed, first=a.first, steps=a.steps, guidance=a.guidance,
                               strength=a.strength, tau=a.tau, scheduler=type(pipe.scheduler).__name__,
                               size=size, threads=a.threads),
                   summary=summary, images=images, consistency=consistency, compare_with_diffscope=comparison)
        with open(a.json, "w") as f:
            json.dump(clean(doc), f, indent=1)

    print("testbed(daam): detect=%s miou_gen=%s miou_real=%s" % (fmt(summary["detect"]), fmt(summary["miou_gen"]),
                                                                  fmt(summary["miou_real"])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
