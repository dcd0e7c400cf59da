"""Dissect a generator layer, then ablate the units that draw one concept and measure the effect.

    python examples/train_tiny.py --out runs/tiny   # first, if no pretrained model is installed
    python examples/dissect_and_ablate.py --model runs/tiny --layer 2 --segmenter color --out dissect-example

Only the public gantools API is used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gantools


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="scenes64")
    parser.add_argument("--layer", default="3")
    parser.add_argument("--concept", default=None, help="default: the concept with the best unit")
    parser.add_argument("--segmenter", default=None, help="a segmenter file or 'color' (default: the model's own)")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--out", default="dissect-example")
    args = parser.parse_args(argv)

    model = gantools.load_model(args.model)
    result = gantools.dissect(model, layers=[args.layer], segmenter=args.segmenter, n=args.n)
    out = Path(args.out)
    result.save(out / "dissection", gan=model)
    layer_name = next(iter(result.layers))
    layer = result.layers[layer_name]
    concept = args.concept or layer.label[int(layer.best_iou.argmax())]
    units = layer.ranked_units(concept)[: args.top]
    print(f"{layer_name}: top units for {concept!r}: {units}")

    effect = gantools.ablate(model, args.layer, units, concept=concept, dissection=result,
                             segmenter=args.segmenter, n=args.n // 2)
    effect.save(out / "ablation")
    e = effect.effect
    print(f"ablating {len(units)} units changes {concept!r} pixels by {e.mean:+.4f} "
          f"(95% CI {e.ci_low:+.4f} .. {e.ci_high:+.4f}); report in {out}")
    return {"concept": concept, "units": units, "effect": e.mean}


if __name__ == "__main__":
    main()
