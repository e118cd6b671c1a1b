"""Goal 4: the analyses. Synthetic sweep against a naive numpy version, `fit_neurons` on the
shipped model, and `run_with_cache` against the plain forward on all 12,769 pairs.

    .venv/bin/python bench/analyses_speed.py [--skip-naive]

The naive version is what one would write first: for every N and seed, build the cosine
weights, evaluate the model on all pairs with numpy (float64), take the argmax.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, median, timed

NS = (32, 64, 128, 256, 512, 1024, 2048)
SEEDS = range(5)


def naive_sweep(p: int = 113) -> list[list[float]]:
    rng = np.random.default_rng(0)
    a = np.repeat(np.arange(p), p)
    b = np.tile(np.arange(p), p)
    c = (a + b) % p
    out = []
    for n in NS:
        row = []
        for _ in SEEDS:
            k = rng.integers(1, (p - 1) // 2 + 1, n)
            phi_a, phi_b = rng.uniform(0, 2 * math.pi, n), rng.uniform(0, 2 * math.pi, n)
            x = np.arange(p)[:, None]
            w = 2 * math.pi * k / p
            W_a, W_b = np.cos(w * x + phi_a), np.cos(w * x + phi_b)
            W_out = np.cos(w * x + phi_a + phi_b).T
            logits = np.maximum(W_a[a] + W_b[b], 0) @ W_out
            row.append(float((logits.argmax(1) == c).mean()))
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}")

    from analyses.cosine_fit import fit_neurons
    from analyses.synthetic import synthetic_curve
    from hooked_mlp import load_pretrained
    from hooked_mlp.data import all_pairs

    synthetic_curve(ns=(32,), seeds=[0])  # warm up
    ours = median([timed(lambda: synthetic_curve(ns=NS, seeds=SEEDS))
                   for _ in range(args.repeats)])
    print(f"synthetic sweep, N = {NS[0]}..{NS[-1]}, {len(SEEDS)} seeds, all pairs: "
          f"{ours:.2f} s (median of {args.repeats})")
    if not args.skip_naive:
        naive = timed(naive_sweep)
        print(f"  naive numpy version: {naive:.1f} s  -> {naive / ours:.0f}x")

    model = load_pretrained()
    fit_neurons(model)
    fit = median([timed(lambda: fit_neurons(model)) for _ in range(max(7, args.repeats))])
    fit_refined = median([timed(lambda: fit_neurons(model, refine=True)) for _ in range(3)])
    print(f"fit_neurons(shipped model): {fit:.3f} s; with the free-frequency refinement "
          f"(curve_fit, 300 fits): {fit_refined:.2f} s")

    tokens = all_pairs(113)
    with torch.no_grad():
        model(tokens)
        model.run_with_cache(tokens)
        fwd, cache = [], []
        for _ in range(15):
            fwd.append(timed(lambda: model(tokens)))
            cache.append(timed(lambda: model.run_with_cache(tokens)))
    f, c = median(fwd), median(cache)
    print(f"all 12,769 pairs: forward {1000 * f:.1f} ms, run_with_cache {1000 * c:.1f} ms "
          f"-> {c / f:.2f}x the forward (median of 15, interleaved)")


if __name__ == "__main__":
    main()
