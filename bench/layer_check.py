#!/usr/bin/env python3
"""Does localize's best layer window agree with where the capture shows the concept's attention?

    bench/layer_check.py LOCALIZE_DIR [LOCALIZE_DIR ...] [--reps N]

Reads the prompts.csv of one or more `diffscope localize --parts layers --detector ...` runs (several runs of
the same model and concept are pooled: their prompts are simply more prompts) and prints:

* the best window: the highest mean detector drop over the prompts (ties by the image change: localize's own
  rank 1 for a single run);
* the max-attention layer: the attn2 layer with the highest mean attention mass on the concept's tokens;
* the verdict: "yes" when the window contains that layer; otherwise "tie" when the gap between the max layer
  and the window's most attended layer has a paired 95 % bootstrap interval containing 0, else "no";
* over N paired bootstrap resamples of the prompts (seeded; one resample re-decides both): how often the
  window stays first, the max layer falls in it, and both agree;
* for single layers (--window 1, the testbed's default): the Spearman correlation over the layers of swap drop
  and attention, and whether the two best swap layers are the two most attended layers;
* for windows of several layers, the same question window against window: is the best window the one with the
  most attention summed over its layers (yes / tie / no by the same paired bootstrap of the gap), and how often
  in the resamples;

bench/verify_edits.sh uses layer_check() for its layer row (docs/verification.md). Standard library only.
"""
import collections
import csv
import random
import sys


def load(dirs):
    """per prompt (run, index): {layer: mass}, {window: (detector drop, image change)}; the layers and windows
    in forward order"""
    mass, drop, layers, windows = collections.defaultdict(dict), collections.defaultdict(dict), [], []
    for k, d in enumerate(dirs):
        for r in csv.DictReader(open("%s/prompts.csv" % d)):
            key, lab = (k, int(r["prompt"])), r["label"]
            if r["part"] == "layer":
                mass[key][lab] = float(r["attention_mass"])
                if lab not in layers: layers.append(lab)
            elif r["part"] == "window":
                a, _, b = lab.partition(" .. ")
                if a == b: lab = a  # a one-layer window, as localize before 2026-11-25 named it ("X .. X")
                drop[key][lab] = (float(r["detector_drop"]), float(r["image_change"]))
                if lab not in windows: windows.append(lab)
    if not layers or not windows:
        sys.exit("layer_check: %s: no layer or window rows in prompts.csv (run localize with --parts layers)" % dirs)
    return mass, drop, layers, windows


def ranks(v):
    """average ranks (1 = smallest), ties shared"""
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]: j += 1
        for k in range(i, j + 1): r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    num = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    den = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return num / den if den else float("nan")


def layer_check(dirs, reps=2000, seed=2):
    mass, drop, layers, windows = load(dirs)
    P = sorted(set(mass) & set(drop))
    span = lambda w: layers[layers.index(w.split(" .. ")[0]): layers.index(w.split(" .. ")[-1]) + 1]
    def decide(idx):
        ms = {l: sum(mass[i][l] for i in idx) for l in layers}
        ds = {w: (sum(drop[i][w][0] for i in idx), sum(drop[i][w][1] for i in idx)) for w in windows}
        return ms, max(layers, key=ms.get), max(windows, key=ds.get)
    wmass = lambda ms: {w: sum(ms[l] for l in span(w)) for w in windows}  # a window's summed attention
    ms, top, best = decide(P)
    mean = {l: ms[l] / len(P) for l in layers}
    inside = span(best)
    wbest = max(inside, key=mean.get)  # the window's most attended layer
    wm = wmass(ms)
    wtop = max(windows, key=wm.get)    # the most attended window
    rng, kept, contains, agree, gap, wagree, wgap = random.Random(seed), 0, 0, 0, [], 0, []
    for _ in range(reps):
        idx = [P[rng.randrange(len(P))] for _ in P]
        m2, t, b = decide(idx)
        w2 = wmass(m2)
        kept += b == best
        contains += t in inside
        agree += t in span(b)
        wagree += b == max(windows, key=w2.get)
        gap.append((m2[top] - m2[wbest]) / len(idx))
        wgap.append((w2[wtop] - w2[best]) / len(idx))
    def ci(g):  # paired percentile 95 % interval
        g = sorted(g)
        return g[int(0.025 * reps)], g[int(0.975 * reps) - 1]
    (lo, hi), wci = ci(gap), ci(wgap)
    verdict = "yes" if top in inside else ("tie" if lo <= 0 else "no")
    wverdict = "yes" if wtop == best else ("tie" if wci[0] <= 0 else "no")
    # windows of one layer (--window 1): does the swap rank the layers as the attention does?
    # and are the two layers whose swap removes the concept most the two it attends most? (two near-equal
    # attention peaks, as red's and circle's, make the argmax alone a coin toss between them)
    rho, top2 = None, None
    if all(len(span(w)) == 1 for w in windows) and len(windows) == len(layers):
        sd = {span(w)[0]: sum(drop[i][w][0] for i in P) for w in windows}
        rho = spearman([sd[l] for l in layers], [ms[l] for l in layers])
        top2 = (sorted(layers, key=sd.get, reverse=True)[:2], sorted(layers, key=ms.get, reverse=True)[:2])
    return {"window": best, "top": top, "mass": mean[top], "wbest": wbest, "share": mean[wbest] / mean[top],
            "gap_ci": (lo, hi), "verdict": verdict, "prompts": len(P), "reps": reps,
            "drop": sum(drop[i][best][0] for i in P) / len(P),
            "kept": kept / reps, "contains": contains / reps, "agree": agree / reps, "layer_mass": mean, "rho": rho, "top2": top2,
            "wtop": wtop, "wshare": wm[best] / wm[wtop], "wgap_ci": wci, "wverdict": wverdict, "wagree": wagree / reps}


def describe(L):
    """one line for a table cell"""
    why = "" if L["verdict"] == "yes" else ": the window's %s has %.2f of that mass, paired 95%% CI of the gap %.4f to %.4f" % (
        L["wbest"], L["share"], *L["gap_ci"])
    wwhy = "" if L["wverdict"] == "yes" else " (%s; the best window has %.2f of its summed mass, paired 95%% CI of the gap %.4f to %.4f)" % (
        L["wtop"], L["wshare"], *L["wgap_ci"])
    if L["top2"]:  # single layers
        (s1, s2), (a1, a2) = L["top2"]
        extra = ("; single-layer swaps rank the layers as the attention does: Spearman %.2f; the two best swap layers "
                 "(%s, %s) are the two most attended (%s, %s): %s" % (L["rho"], s1, s2, a1, a2,
                                                                   "yes" if {s1, s2} == {a1, a2} else "no"))
    else:
        extra = "; the most attended window (summed over its layers) is the best window: %s%s, %d %% of resamples" % (
            L["wverdict"], wwhy, round(100 * L["wagree"]))
    return ("window contains it: %s%s; over %d resamples of the %d prompts: the window first %d %%, the max layer "
            "in it %d %%, both agree %d %%%s" % (L["verdict"], why, L["reps"], L["prompts"], round(100 * L["kept"]),
                                                 round(100 * L["contains"]), round(100 * L["agree"]), extra))


if __name__ == "__main__":
    args, reps = sys.argv[1:], 2000
    if "--reps" in args:
        i = args.index("--reps")
        reps = int(args[i + 1])
        del args[i:i + 2]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if args else 2)
    L = layer_check(args, reps)
    print("attention mass on the concept per layer: " + ", ".join("%s %.5f" % kv for kv in L["layer_mass"].items()))
    print("best window %s (detector drop %.3f) vs max-attention layer %s (mass %.5f)" % (
        L["window"], L["drop"], L["top"], L["mass"]))
    print(describe(L))
