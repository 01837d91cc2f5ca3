#!/usr/bin/env python3
"""Where does the testbed model read a word from? A position-swap probe with diffusers (docs/verification.md).

For prompts "a {A} {shape} on a {bg} background" (or "a {colour} {A} ..." for a shape word A) the conditioning
of the prompt naming A is patched with the text-encoder outputs of the same prompt naming B instead, at
  * the word's own position only,
  * every position after it (the next words, EOS, the padding),
  * both,
and the generated images are scored with the scene-world detector (tools/train_detect.py): how often the object
comes out as A, and as B. If the word's own position carries it, patching that position turns A into B; if the
causal text encoder has copied it into the later positions and the UNet reads it there, only patching the later
positions does. UCE's default key is the word's own position, so this decides whether that key can erase it.

With --prior WORD (a colour or a shape): the floor of any erasure that makes the model forget the word. For
prompts naming an object with WORD, the same prompt (same seed) is generated with WORD deleted, and with WORD
replaced by its kind ("color" / "shape"), and the detector asks how often the object still comes out as WORD says:
what the model draws when the word is not there.

    python tools/probe_positions.py [--model models/default] [--n 32] [--steps 20] [--prior red|circle|...]

Needs torch and diffusers (CPU is fine: 64-px images); not needed to build, run or test diffscope.
"""

import argparse
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import scenes  # noqa: E402
import train_detect  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(os.path.dirname(HERE), "models", "default"))
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prior", metavar="WORD", help="the model's prior for an object without WORD (see above)")
    args = ap.parse_args()
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float32, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    tok, te = pipe.tokenizer, pipe.text_encoder
    C, S, B = scenes.COLORS, scenes.SHAPES, scenes.BACKGROUNDS

    def enc(prompts):
        ids = tok(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
        with torch.no_grad():
            return te(ids)[0], ids

    def phrase(c, s):
        return ("an " if C[c][0] in "aeiou" else "a ") + C[c] + " " + S[s]

    rng = np.random.default_rng(args.seed)
    if args.prior:
        prior(pipe, rng, args)
        return
    for kind, a, b in (("colour", "red", "blue"), ("shape", "circle", "square")):
        rows = []
        for _ in range(args.n):
            bg = int(rng.integers(3))
            if kind == "colour":
                other = int(rng.integers(5))
                pa, pb = phrase(C.index(a), other), phrase(C.index(b), other)
                objs_a, objs_b = [(C.index(a), other)], [(C.index(b), other)]
            else:
                other = int(rng.integers(6))
                pa, pb = phrase(other, S.index(a)), phrase(other, S.index(b))
                objs_a, objs_b = [(other, S.index(a))], [(other, S.index(b))]
            rows.append((pa + " on a %s background" % B[bg], pb + " on a %s background" % B[bg], objs_a, objs_b, bg))
        Ea, ids = enc([r[0] for r in rows])
        Eb, ids_b = enc([r[1] for r in rows])
        word = tok(a, add_special_tokens=False).input_ids
        assert len(word) == 1 and len(tok(b, add_special_tokens=False).input_ids) == 1
        pos = [int((ids[k] == word[0]).nonzero()[0]) for k in range(len(rows))]
        assert all((ids[k] == ids_b[k]).sum() == 76 for k in range(len(rows))), "prompts must differ in one token"

        def patched(which):
            E = Ea.clone()
            for k, p in enumerate(pos):
                lo, hi = {"own": (p, p + 1), "after": (p + 1, 77), "both": (p, 77), "none": (0, 0)}[which]
                E[k, lo:hi] = Eb[k, lo:hi]
            return E

        neg, _ = enc([""] * len(rows))
        print("%s word '%s' patched with '%s' (%d prompts):" % (kind, a, b, len(rows)))
        for which in ("none", "own", "after", "both"):
            g = torch.Generator("cpu").manual_seed(args.seed)
            with torch.no_grad():
                ims = pipe(prompt_embeds=patched(which), negative_prompt_embeds=neg, num_inference_steps=args.steps,
                           guidance_scale=args.guidance, generator=g, output_type="np").images
            na = nb = 0
            for (pa, pb, oa, ob, bg), im in zip(rows, ims):
                img = (np.clip(im, 0, 1) * 255).round().astype(np.uint8)
                na += train_detect.detect(img, oa, bg)[0]["found"]
                nb += train_detect.detect(img, ob, bg)[0]["found"]
            label = {"none": "nothing patched", "own": "its own position", "after": "the positions after it",
                     "both": "its position and after"}[which]
            print("  %-26s object found as '%s' %.2f, as '%s' %.2f" % (label, a, na / len(rows), b, nb / len(rows)))


def prior(pipe, rng, args):
    C, S, B = scenes.COLORS, scenes.SHAPES, scenes.BACKGROUNDS
    w = args.prior
    if w not in C and w not in S:
        sys.exit("--prior: '%s' is not a scene-world colour or shape" % w)
    kind = "color" if w in C else "shape"
    rows = []
    for _ in range(args.n):
        bg = int(rng.integers(3))
        if w in C:
            c, sh = C.index(w), int(rng.integers(5))
        else:
            c, sh = int(rng.integers(6)), S.index(w)
        art = "an" if C[c][0] in "aeiou" else "a"
        rows.append(("%s %s %s on a %s background" % (art, C[c], S[sh], B[bg]), c, sh, bg))
    print("objects named %s (%d prompts, %d steps, guidance %g):" % (w, len(rows), args.steps, args.guidance))
    for label, word in (("named", w), ("word deleted", ""), ("'%s' instead" % kind, kind)):
        prompts = []
        for p, c, sh, bg in rows:
            q = p.replace(" %s " % w, " %s " % word if word else " ", 1)
            if word != w and w in C:  # "an orange star" without "orange" is "a star"
                q = ("a " + q[3:]) if q.startswith("an ") and not q[3] in "aeiou" else q
            prompts.append(q)
        g = torch.Generator("cpu").manual_seed(args.seed)
        with torch.no_grad():
            ims = pipe(prompts, num_inference_steps=args.steps, guidance_scale=args.guidance, generator=g,
                       output_type="np").images
        found = 0
        for (p, c, sh, bg), im in zip(rows, ims):
            img = (np.clip(im, 0, 1) * 255).round().astype(np.uint8)
            found += train_detect.detect(img, [(c, sh)], bg)[0]["found"]
        print("  %-22s found as %s: %.2f   e.g. '%s'" % (label, w, found / len(rows), prompts[0]))


if __name__ == "__main__":
    main()
