"""Print a seeded random sample of a dictionary's live features as unit names, for the findings' sweeps.

A feature is live when it is active (> 0) at least once in the first ``--tokens`` text positions of the corpus's
train part (the same split the dictionary was trained on); dead features are left out of the comparison with
neurons because their encoder rows never trained. Prints a comma list such as ``L3.ffn.f5,f17,...`` for each
dictionary, and the live share on stderr.

    python scripts/live_features.py artifacts/features/dict-s0 --n 128
    python scripts/live_features.py artifacts/features/dict-s0 --n 64 --layers 3,5
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from neurotext import load_model  # noqa: E402
from neurotext.corpus import open_corpus  # noqa: E402
from neurotext.engine.activations import stream_sites  # noqa: E402
from neurotext.model.dictionary import load_dictionaries  # noqa: E402


def fired_features(model, points, tokens: int) -> dict:
    """{point: (features,) bool}: which features of each dictionary point (layer, "ffn.f") are active (> 0) at
    least once in the first ``tokens`` text positions of the default corpus's train part."""
    fired = {p: torch.zeros(model.width(*p), dtype=torch.bool) for p in points}
    for b in stream_sites(model, open_corpus(None), points, part="train", max_tokens=tokens):
        for p in points:
            fired[p] |= (b.values[p] > 0).any(0)
    return fired


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dictionaries", help="a dictionary directory or a folder of them")
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=128, help="features per dictionary")
    ap.add_argument("--tokens", type=int, default=100_000, help="train-part positions read")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", default=None, help="only these layers' dictionaries, e.g. 3,5 (default: all)")
    args = ap.parse_args(argv)
    model = load_model(args.model, device="cpu")
    model.attach(load_dictionaries(args.dictionaries, model))
    keep = None if args.layers is None else {int(x) for x in args.layers.split(",")}
    points = [(layer, f"{site}.f") for layer, site in model.dictionaries if keep is None or layer in keep]
    fired = fired_features(model, points, args.tokens)
    names = []
    for (layer, site), f in sorted(fired.items()):
        live = f.nonzero().flatten()
        g = torch.Generator().manual_seed(args.seed * 1000 + layer)
        pick = live[torch.randperm(len(live), generator=g)[: args.n]].sort().values.tolist()
        print(f"L{layer}.{site[:-2]}: {len(live)} of {len(f)} features live ({100 * len(live) / len(f):.1f}%)",
              file=sys.stderr)
        names.append(f"L{layer}.{site[:-2]}.f{pick[0]}" + "".join(f",f{u}" for u in pick[1:]))
    print(",".join(names))


if __name__ == "__main__":
    main()
