"""Issue 11: what each neuron computes. Speed of the form comparison (goal: all neurons of a
shipped model in <= 2 s) and of discovery (goal: one neuron in <= 30 s with a budget), and what
they find: planted neurons, the shipped models, trained quad models beside the construction.

    .venv/bin/python bench/forms_speed.py [--budget 30] [--planted-budget 5] [--neurons 5]

The baseline of the comparison is the same fits called one row at a time (what one writes
first: a loop over neurons), so the ratio shows what vectorising over neurons buys. The last
part times the report's section on the shipped models, and its replacement experiment against
the plain one (every form's full curve, every update from the original model), in CPU seconds
(wall time on a shared machine says more about the neighbours than about the code).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, median, timed


def planted(p: int) -> dict[str, tuple[int, torch.Tensor]]:
    x = torch.arange(p, dtype=torch.float64)

    def th(k: int, phi: float) -> torch.Tensor:
        return 2 * math.pi * k * x / p + phi

    return {
        "cosine": (17, 0.7 * torch.cos(th(17, 1.0)) + 0.1),
        "square": (23, 0.5 * torch.sign(torch.cos(th(23, -0.7))) - 0.05),
        "clipped": (9, 0.8 * torch.clamp(torch.cos(th(9, 2.0)), -0.4, 0.5) + 0.02),
        "two_freq": (5, 0.6 * torch.cos(th(5, 0.3)) + 0.4 * torch.cos(th(40, -2.0)) + 0.3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=30.0, help="discovery budget, one neuron")
    ap.add_argument("--planted-budget", type=float, default=5.0)
    ap.add_argument("--neurons", type=int, default=5, help="shipped neurons to discover")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}")

    from analyses.discovery import discover
    from analyses.experiments.construction import compare_quad, quad_curve
    from analyses.forms import FORMS, compare_forms, fit_form, fit_forms
    from analyses.fourier import neuron_signals
    from analyses.synthetic import quad_construction
    from hooked_mlp import MLPConfig, TrainConfig, load_pretrained, pretrained_seeds
    from hooked_mlp.training import train_many

    # ------------------------------------------------------------- the comparison's speed
    seeds = pretrained_seeds()
    models = [load_pretrained(s) for s in seeds]
    compare_forms(models[0])  # warm-up (the square-wave patterns are cached per p)
    times = [timed(lambda m=m: compare_forms(m)) for _ in range(args.repeats) for m in models]
    t = median(times)
    print(f"\ncompare_forms, all {models[0].cfg.d_hidden} neurons x 3 weight vectors, "
          f"p={models[0].cfg.p}: median {t:.3f} s over {len(times)} runs "
          f"(min {min(times):.3f}, max {max(times):.3f}); goal 2 s: {2 / t:.1f}x inside it")
    sig = neuron_signals(models[0])
    for form in FORMS:
        tf = median([timed(lambda f=form: [fit_form(sig[s], f) for s in sig])
                     for _ in range(args.repeats)])
        print(f"  {form:10s} {1000 * tf:7.1f} ms for the 300 vectors")
    loop = timed(lambda: [fit_forms(sig[s][i:i + 1]) for s in sig for i in range(len(sig[s]))])
    print(f"  one row at a time: {loop:.2f} s, {loop / t:.1f}x the vectorised comparison")

    # ------------------------------------------------------------- what the comparison finds
    print("\nwinning form (BIC) over the shipped models, share of neurons:")
    comparisons = [compare_forms(m) for m in models]
    for s in ("a", "b", "out"):
        total = Counter()
        for c in comparisons:
            total.update(c.win_counts()[s])
        n = sum(total.values())
        print(f"  {s:3s} " + "  ".join(f"{f} {100 * total[f] / n:5.1f} %" for f in FORMS))

    # ------------------------------------------------------------- discovery: speed
    w = sig["a"][0]
    t0 = time.perf_counter()
    found = discover(w, budget_s=args.budget)
    wall = time.perf_counter() - t0
    print(f"\ndiscover(one neuron, budget_s={args.budget:g}): {wall:.1f} s wall "
          f"(goal 30 s); {found.method}: {found.expression} (R² {found.r2:.3f})")

    # ------------------------------------------------------------- discovery: planted
    p = 113
    print(f"\nplanted neurons, p={p}, noise sd 0.05, 3 seeds, symbolic budget "
          f"{args.planted_budget:g} s:")
    hits: Counter = Counter()
    for name, (k, clean) in planted(p).items():
        for seed in range(3):
            gen = torch.Generator().manual_seed(seed)
            noisy = clean + 0.05 * torch.randn(p, generator=gen, dtype=torch.float64)
            d = discover(noisy, budget_s=args.planted_budget, seed=seed)
            for c in d.candidates:
                ok = c["form"] == name and c["frequency"] == k
                hits[(c["method"], name)] += ok
                print(f"  {name:9s} seed {seed} {c['method']:8s} -> {c['form']:9s} "
                      f"k={c['frequency']:3d} R² {c['r2']:.3f} {'ok ' if ok else 'MISS'} "
                      f"{c['expression'][:90]}")
            hits[("chosen", name)] += d.form == name and d.frequency == k
    for name in planted(p):
        print(f"  recovered {name:9s}: library {hits[('library', name)]}/3, symbolic "
              f"{hits[('symbolic', name)]}/3, chosen {hits[('chosen', name)]}/3")

    # ------------------------------------------------------------- discovery: shipped
    print(f"\nshipped model seed {seeds[0]}: {args.neurons} neurons (evenly spaced), a and out, "
          f"budget {args.planted_budget:g} s")
    kinds: Counter = Counter()
    for n in range(0, models[0].cfg.d_hidden, max(1, models[0].cfg.d_hidden // args.neurons)):
        for s in ("a", "out"):
            d = discover(sig[s][n], budget_s=args.planted_budget, seed=n)
            sym = next(c for c in d.candidates if c["method"] == "symbolic")
            kinds[(s, "symbolic", sym["form"])] += 1
            kinds[(s, "chosen", d.method)] += 1
            print(f"  neuron {n:3d} {s:3s} chosen {d.method:8s} ({d.form}, R² {d.r2:.3f}); "
                  f"symbolic R² {sym['r2']:.3f} nearest {sym['form']}: {sym['expression'][:80]}")
    print("  " + ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())))

    # ------------------------------------------------------------- quad: construction vs trained
    t0 = time.perf_counter()
    curve = quad_curve(p=113)
    d = curve.to_dict()
    print(f"\nquad construction, p=113 (predicted 100 % at N={curve.predicted}), "
          f"{time.perf_counter() - t0:.1f} s:")
    for n, ex, rp in zip(curve.ns, d["exact_mean"], d["random_phases_mean"], strict=True):
        print(f"  N={n:4d}  exact lattice {100 * ex:6.2f} %   random phases {100 * rp:6.2f} %")
    print("\ntrained quad models (p=31, 64 neurons, 300 epochs) against the construction:")
    cfg = MLPConfig(p=31, d_hidden=64, activation="quad", bias=False)
    rows = [("construction N=12", compare_quad(quad_construction(12, 31, 0)))]
    for i, (m, _) in enumerate(train_many(cfg, TrainConfig(epochs=300, batch_size=64),
                                          seeds=[0, 1, 2], progress=False, threads=1)):
        rows.append((f"trained seed {i}", compare_quad(m)))
    for label, r in rows:
        print(f"  {label:18s} acc {100 * r['accuracy']:6.2f} %  freqs {r['n_frequencies']:2d} "
              f"(median {r['neurons_per_frequency_median']:.0f} neurons each)  k shared "
              f"{r['frac_k_shared']:.2f}  |φ_out-φ_a-φ_b| {r['phase_error_abs_median']:.3f}  "
              f"scale in {r['scale_in_median']:.2f} out {r['scale_out_median']:.2f}  "
              f"phase sums {' '.join(f'{v:.2f}' for v in r['phase_sum_mean'])} "
              f"(random ~{r['phase_sum_random_level_mean']:.2f})")

    # ------------------------------------------------------------- the report's section
    from analyses.experiments.forms import compare_neuron_forms
    from analyses.forms import REPLACEMENT_FORMS, form_replacement, form_weights
    from analyses.pages.forms import forms_html
    from analyses.replacement import accuracy_along_orders

    labels = [f"seed {s}" for s in seeds]
    c0, w0 = time.process_time(), time.perf_counter()
    forms_html(compare_neuron_forms(models, labels))
    print(f"\nreport section 'What each neuron computes', {len(models)} shipped models: "
          f"{time.process_time() - c0:.1f} s CPU ({time.perf_counter() - w0:.1f} s wall)")
    fracs = [i / 10 for i in range(11)]

    def plain() -> None:  # every form's full curve, forward from the original model
        for i, (m, c) in enumerate(zip(models, comparisons, strict=True)):
            gen = torch.Generator().manual_seed(i)
            orders = [torch.randperm(m.cfg.d_hidden, generator=gen).tolist() for _ in range(3)]
            for f in REPLACEMENT_FORMS:
                accuracy_along_orders(m, form_weights(c, f), "both", orders, fracs)

    def section() -> None:  # what the section runs: the table's two fractions, three curves
        for i, (m, c) in enumerate(zip(models, comparisons, strict=True)):
            form_replacement(m, c, fractions=[0.9, 1.0], n_orders=3, seed=i)
            form_replacement(m, c, forms=("cosine", "harmonics", "best"), n_orders=3, seed=i)

    cpu = {}
    for name, fn in (("plain", plain), ("section", section)):
        c0 = time.process_time()
        fn()
        cpu[name] = time.process_time() - c0
    print(f"  replacement by form: {cpu['section']:.1f} s CPU as the section runs it, "
          f"{cpu['plain']:.1f} s every curve forward: {cpu['plain'] / cpu['section']:.2f}x")


if __name__ == "__main__":
    main()
