"""Measure a shipped model's quality criteria (issue 17) and print them as model-card markdown.

Uses only the public API, the same functions the CLI commands call:

- mnist32 (`gantools eval --model mnist32 --metrics classes,fid,kid,pr --holdout 500`,
  `gantools classifier eval`): the share of generated digits the shipped classifier labels with
  confidence >= 0.9 (goal >= 90%), each class's share of samples (goal 5-15%), the classifier's
  accuracy on the 500 held-out digits, and FID/KID/precision/recall against them (classifier features);
  and a memorisation check: how close samples lie to their nearest training digit, against how close
  the held-out digits lie to theirs (pixel distance on the [0, 1] scale).
- scenes64 (`gantools segmenter eval`, `gantools eval --metrics concepts,...`, `gantools dissect`,
  `gantools ablate`): the segmenter's mIoU on unseen scenes (seed 12345; goal >= 0.97); every
  concept's pixel share in generated images against real scenes (goal within +-30% for every
  concept, N = 2,000); a dissection of every layer; in layer 3 the concepts with a unit of
  IoU >= 0.1 under the default threshold (goal >= 8) and under IQR (goal >= 10); for every concept,
  the share of its pixels removed by ablating the top 5% of layer 3's units (goal >= 70% for at
  least 7 concepts), with the units ranked by IoU, by causal effect (each unit ablated alone,
  `gantools rank --concept all`), and chosen jointly (`gantools rank --greedy`); and FID/KID on the
  segmenter's features, beside the same for --baseline (the model being replaced). Door insertion
  and tree removal on real scenes: benchmarks/edit.py; restoration: benchmarks/restoration.py.

    python benchmarks/model_card.py --model mnist32 --data ../shared/data/mnist4k
    python benchmarks/model_card.py --model scenes64 [--baseline old/model.safetensors] [--json out.json]

A quicker look at a candidate during training (a snapshot has no companions beside it):

    python benchmarks/model_card.py --model runs/scenes64/snapshots/step_007000.safetensors \
        --segmenter pretrained/scenes64/segmenter.safetensors --n 1000 --dissect-n 1000 --ablate-n 200 --rank-n 100
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import gantools

ROOT = Path(__file__).resolve().parent.parent


def mnist_card(model: str, data: str, n: int) -> dict:
    gan = gantools.load_model(model)
    res = gantools.evaluate(gan, data=data, n=n, metrics="classes,fid,kid,pr", extractor="classifier", holdout=500)
    cov = res.class_coverage
    acc = gantools.evaluate_classifier(gan.companion("classifier"), data, holdout=500)
    return {"n": n, "confident_fraction": cov.confident_fraction,
            "class_fractions": dict(zip(cov.classes, cov.fractions)),
            "min_class": min(cov.fractions), "max_class": max(cov.fractions),
            "classifier_holdout_accuracy": acc.accuracy, "classifier_holdout_n": acc.n,
            "fid": res.metrics.get("fid"), "kid": res.metrics.get("kid"),
            "precision": res.metrics.get("precision"), "recall": res.metrics.get("recall"),
            "extractor": (res.extractor or {}).get("name"), "memorisation": memorisation(gan, data)}


def memorisation(gan: gantools.GAN, data: str, n: int = 1000, holdout: int = 500) -> dict:
    """Nearest-training-digit distances of n samples (seed 0) against those of the held-out digits.

    A model that copies its training set puts many samples nearer to a training digit than almost any
    new digit lies: `share_nearer_than_holdout_5pct` is the share of samples closer than the nearest
    5% of held-out digits (5% when samples are as novel as new digits)."""
    def nearest(x: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
        return torch.cdist(x.flatten(1), train.flatten(1)).min(1).values

    size, nc = gan.config.image_size, gan.config.nc
    train = torch.stack(list(gantools.open_split(data, size, nc, holdout=holdout, part="train")))
    held = torch.stack(list(gantools.open_split(data, size, nc, holdout=holdout, part="holdout")))
    with torch.no_grad():
        samples = gantools.sample(gan, n=n, seed=0)
    train, held = train.float() / 255, held.float() / 255  # datasets hand out uint8; models work in [-1, 1]
    d_sample, d_held = nearest((samples.float().cpu() + 1) / 2, train), nearest(held, train)
    q05 = torch.quantile(d_held, 0.05)
    return {"n": n, "median_sample": float(d_sample.median()), "median_holdout": float(d_held.median()),
            "share_nearer_than_holdout_5pct": float((d_sample < q05).float().mean())}


def scenes_card(model: str, n: int, dissect_n: int, ablate_n: int, rank_n: int, out: Path | None,
                baseline: str | None, segmenter: str | None = None, greedy_pool: int = 10) -> dict:
    gan = gantools.load_model(model)
    seg = gantools.load_segmenter(segmenter, gan=gan)
    card: dict = {}
    ev = gantools.evaluate_segmenter(seg, gantools.Scenes(500, image_size=gan.config.image_size, seed=12345))
    card["segmenter_miou"] = ev.miou
    card["segmenter_iou"] = dict(zip(ev.concepts, ev.iou))

    # One feature extractor for both models: "segmenter" would mean each model's own companion.
    features = gantools.resolve_extractor(segmenter or "segmenter", gan)
    res = gantools.evaluate(gan, data="scenes", n=n, metrics="concepts,fid,kid,pr", extractor=features,
                            segmenter=seg)
    c = res.concepts
    rel = c.relative_difference(0.0)  # every concept, however rare
    card["concepts"] = {name: {"generated": g, "real": r, "relative": rel.get(name)}
                        for name, g, r in zip(c.concepts, c.generated, c.real)}
    card["concepts_within_30"] = sum(abs(v) <= 0.3 for v in rel.values())
    card["concepts_measured"] = len(rel)
    card["tv_distance"] = c.tv_distance
    card.update({k: res.metrics.get(k) for k in ("fid", "kid", "precision", "recall")})
    if baseline is not None:  # the same real scenes, features and N, for the model being replaced
        old = gantools.evaluate(gantools.load_model(baseline), data="scenes", n=n, metrics="fid,kid",
                                extractor=features, segmenter=seg)
        card["baseline"] = {"model": baseline, "fid": old.metrics.get("fid"), "kid": old.metrics.get("kid")}

    layers = [f"layer{i + 1}" for i in range(gan.config.num_layers)]
    t = time.perf_counter()
    every = gantools.dissect(gan, layers, segmenter=seg, n=dissect_n, seed=0)
    card["dissect_seconds"] = time.perf_counter() - t
    if out is not None:
        every.save(out / "dissect_all", gan=gan)
    card["layers"] = {}
    for name in layers:
        ld = every.layer(name)
        best = ld.best_iou
        labels = ld.label
        card["layers"][name] = {
            "units": ld.units, "interpretable": len(ld.interpretable),
            "concepts_iou_0.1": sorted({labels[u] for u in range(ld.units) if best[u] >= 0.1}),
            "best": max(((labels[u], float(best[u])) for u in range(ld.units)), key=lambda p: p[1])}
    iqr = gantools.dissect(gan, "layer3", segmenter=seg, n=dissect_n, seed=0, threshold="iqr")
    if out is not None:
        iqr.save(out / "dissect_iqr", gan=gan)
    ld = iqr.layer("layer3")
    card["layer3_iqr_concepts_iou_0.1"] = sorted({ld.label[u] for u in range(ld.units) if ld.best_iou[u] >= 0.1})

    l3 = every.layer("layer3")
    top = max(1, round(0.05 * l3.units))
    card["ablation_top"] = top
    card["ablation"] = _ablations(gan, every, seg, top, "iou", ablate_n)
    # The causal ranking (each unit ablated alone, `gantools rank --concept all`) on other latents (seed 0)
    # than the ablation measures (seed 7), so the choice of units is not fitted to the measurement.
    t = time.perf_counter()
    for ranking in gantools.rank_concepts(gan, "layer3", None, dissection=every, segmenter=seg, n=rank_n,
                                          seed=0).values():
        ranking.store(every)
    card["rank_seconds"] = time.perf_counter() - t
    card["rank_n"] = rank_n
    card["ablation_ace"] = _ablations(gan, every, seg, top, "ace", ablate_n)
    # Jointly: the top units chosen greedily (each round the unit that, ablated with those already
    # chosen, removes most), among each concept's `greedy_pool` best single units (0: among every unit,
    # as `gantools rank --greedy` does; slower, since each round ablates every unit once).
    t = time.perf_counter()
    card["greedy_pool"] = greedy_pool
    chosen = {c: gantools.greedy_units(gan, "layer3", c, top,
                                       units=l3.ranked_units(c, rank="ace")[:greedy_pool] if greedy_pool else None,
                                       dissection=every, segmenter=seg, n=rank_n, seed=0)
              for c in card["ablation_ace"]}
    card["greedy_seconds"] = time.perf_counter() - t
    card["ablation_greedy"] = _ablations(gan, every, seg, top, chosen, ablate_n)
    for key in ("ablation", "ablation_ace", "ablation_greedy"):
        card[f"{key}_removed_70"] = sorted(c for c, v in card[key].items() if v["removed"] >= 0.7)
    return card


def _ablations(gan, dissection, seg, top: int, rank: str | dict, n: int) -> dict:
    """For every concept drawn: its pixel share before and after ablating its `top` layer-3 units
    (ranked by `rank`, or the units given per concept), on n samples at seed 7."""
    out = {}
    for concept in dissection.layer("layer3").concepts:
        if isinstance(rank, dict) and concept not in rank:
            continue
        how = dict(units=rank[concept]) if isinstance(rank, dict) else dict(top=top, rank=rank)
        r = gantools.ablate(gan, "layer3", concept=concept, dissection=dissection, segmenter=seg,
                            n=n, seed=7, curve_points=2, grid=0, allow_weak=True, **how)
        e = r.effects[concept]
        if e.before < 0.002:  # too rare in generated images to measure
            continue
        out[concept] = {"before": e.before, "after": e.after, "removed": -e.mean / e.before,
                        "ci": [e.ci_low, e.ci_high], "units": r.units}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="scenes64")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mnist4k"), help="mnist4k folder")
    ap.add_argument("--n", type=int, default=2000, help="generated images for eval")
    ap.add_argument("--baseline", default=None, help="scenes: the model being replaced, for FID/KID side by side")
    ap.add_argument("--dissect-n", type=int, default=2000)
    ap.add_argument("--ablate-n", type=int, default=500)
    ap.add_argument("--rank-n", type=int, default=200, help="samples for the causal ranking of layer 3's units")
    ap.add_argument("--segmenter", default=None, help="scenes: a segmenter file for the concepts and the "
                    "FID features (default: the model's companion), e.g. for a training run's snapshot")
    ap.add_argument("--greedy-pool", type=int, default=10,
                    help="scenes: the joint choice looks among each concept's N best single units "
                         "(0: among every unit, as gantools rank --greedy does)")
    ap.add_argument("--out", type=Path, default=None, help="also save the dissection reports here")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.greedy_pool < 0:
        ap.error(f"--greedy-pool must be 0 (every unit) or more, got {args.greedy_pool}")
    t0 = time.perf_counter()
    gan = gantools.load_model(args.model)
    if gan.config.nc == 1:
        card = mnist_card(args.model, args.data, args.n)
        print(f"{args.model}: {100 * card['confident_fraction']:.1f}% of {args.n} generated digits classified with "
              f"confidence >= 0.9 (goal >= 90%); class shares {100 * card['min_class']:.1f}%-"
              f"{100 * card['max_class']:.1f}% (goal 5-15%); classifier accuracy on the "
              f"{card['classifier_holdout_n']} held-out digits {100 * card['classifier_holdout_accuracy']:.1f}%")
        print(f"  FID {card['fid']:.2f}, KID {card['kid']:.4f}, precision {card['precision']:.3f}, "
              f"recall {card['recall']:.3f} (classifier features, vs the 500 held-out digits)")
        memo = card["memorisation"]
        print(f"  memorisation ({memo['n']} samples): {100 * memo['share_nearer_than_holdout_5pct']:.1f}% nearer to a "
              f"training digit than the nearest 5% of held-out digits (5% expected); median distance to the "
              f"nearest training digit {memo['median_sample']:.2f} vs {memo['median_holdout']:.2f} for held-out digits")
    else:
        card = scenes_card(args.model, args.n, args.dissect_n, args.ablate_n, args.rank_n, args.out, args.baseline,
                           args.segmenter, args.greedy_pool)
        print(f"{args.model}: segmenter mIoU {card['segmenter_miou']:.3f} on unseen scenes")
        print(f"  concept frequencies within +-30%: {card['concepts_within_30']} of {card['concepts_measured']} "
              f"concepts (goal: all; TV distance {card['tv_distance']:.3f})")
        print(f"  FID {card['fid']:.2f}, KID {card['kid']:.4f} (segmenter features, N {args.n})" +
              ("" if "baseline" not in card else f"; {card['baseline']['model']}: FID {card['baseline']['fid']:.2f}, "
               f"KID {card['baseline']['kid']:.4f}"))
        for name, v in card["concepts"].items():
            rel = "" if v["relative"] is None else f"{100 * v['relative']:+.0f}%"
            print(f"    {name:9s} generated {100 * v['generated']:5.2f}%  real {100 * v['real']:5.2f}%  {rel}")
        for name, v in card["layers"].items():
            goal = " (goal >= 8)" if name == "layer3" else ""
            print(f"  {name}: {v['interpretable']}/{v['units']} interpretable units; concepts at IoU >= 0.1: "
                  f"{len(v['concepts_iou_0.1'])}{goal} {v['concepts_iou_0.1']}; best {v['best'][0]} {v['best'][1]:.3f}")
        print(f"  layer3 under IQR: {len(card['layer3_iqr_concepts_iou_0.1'])} concepts at IoU >= 0.1 (goal >= 10) "
              f"{card['layer3_iqr_concepts_iou_0.1']}")
        pool = f"the {args.greedy_pool} best single units" if args.greedy_pool else "every unit"
        for key, how in (("ablation", "by IoU"), ("ablation_ace", f"by causal effect, N {card['rank_n']}"),
                         ("ablation_greedy", f"jointly (greedy, among {pool})")):
            print(f"  ablating the top {card['ablation_top']} units of layer3 (5%), ranked {how}:")
            for name, v in card[key].items():
                print(f"    {name:9s} {100 * v['before']:5.2f}% -> {100 * v['after']:5.2f}%  removed "
                      f"{100 * v['removed']:.0f}%  units {v['units']}")
            print(f"  concepts with >= 70% removed: {len(card[key + '_removed_70'])} (goal >= 7) "
                  f"{card[key + '_removed_70']}")
    card["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"  ({card['seconds']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(card, indent=2, default=lambda o: None if isinstance(o, float) and
                                        math.isnan(o) else str(o)))


if __name__ == "__main__":
    main()
