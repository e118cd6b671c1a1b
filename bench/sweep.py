"""Issue 19's speed goals: a sweep against the loop of `train_many` per cell a user writes,
timed side by side in one run; the compute floor; the 1,024-run phase diagram.

    .venv/bin/python bench/sweep.py                     # the 32-run grid (about 2-4 minutes)
    .venv/bin/python bench/sweep.py --epochs 1000       # the same grid, shorter
    .venv/bin/python bench/sweep.py --diagram           # also the 1,024-run diagram (<= 10 min)

The grid: p = 31, 128 ReLU neurons, full batch, lr 0.01, weight decay {0.1, 0.5, 1, 2} x train
fraction {0.3, 0.4, 0.5, 0.7} x 2 seeds, 5000 epochs. The baseline is the hand loop: one
`train_many(cfg, tcfg, seeds=[0, 1])` per cell. The sweep is `hooked_mlp.sweep` on the same
spec (its page off, as the loop has none), on this machine's cores. Each is run `--repeats`
times, alternating, and the medians compared; the two tables of final accuracies are checked
equal run by run.

The compute floor counts the matrix products one run-epoch needs (`floor_seconds` says which)
and divides by the GFLOP/s this machine's torch matmul reaches on that shape with all cores;
the script says how far each timing is from it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, median

WDS = [0.1, 0.5, 1.0, 2.0]
FRACS = [0.3, 0.4, 0.5, 0.7]


def hand_loop(cfg, tcfg, seeds):
    """What a user writes today: one train_many per cell; returns {(wd, frac, seed): val_acc}."""
    from dataclasses import replace

    from hooked_mlp import train_many

    out = {}
    for wd in WDS:
        for frac in FRACS:
            t = replace(tcfg, weight_decay=wd, train_frac=frac)
            for seed, (model, _) in zip(seeds, train_many(cfg, t, seeds, progress=False),
                                              strict=True):
                out[(wd, frac, seed)] = model.train_info.metrics["val_acc"]
    return out


def with_sweep(cfg, tcfg, seeds, folder):
    from hooked_mlp import sweep

    table = sweep({"weight_decay": WDS, "train_frac": FRACS}, seeds, model=cfg, recipe=tcfg,
                  out=folder, progress=False, page=False)
    return {(r.weight_decay, r.train_frac, r.seed): r.val_acc for r in table.itertuples()}


def floor_seconds(p: int, h: int, fracs: list[float], n_seeds: int, epochs: int,
                  threads: int) -> tuple[float, float, float]:
    """(FLOPs the grid needs, this machine's GFLOP/s on its largest product, the seconds that
    makes). Per run-epoch: the output layer's three products over the training pairs (forward,
    the gradient of W_out, the gradient of the hidden layer: 6 N h p; the training accuracy
    comes from that forward pass), and its forward product over the other p^2 - N pairs for
    the validation accuracy (2 (p^2 - N) h p). The first layer of one-hot
    inputs is a gather of two columns of W_in (and its gradient a scatter of N rows): no
    products, left out, as are the elementwise steps (ReLU, softmax, AdamW), which make the
    floor a lower bound."""
    import torch

    from hooked_mlp.data import n_train_pairs

    flops = 0.0
    for frac in fracs:
        n = n_train_pairs(p * p, frac)
        flops += (6 * n * h * p + 2 * (p * p - n) * h * p) * epochs * n_seeds * len(WDS)
    torch.set_num_threads(threads)
    a, b = torch.randn(p * p, h), torch.randn(h, p)
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(100):
            a @ b
        times.append((time.perf_counter() - t0) / 100)
    gflops = 2 * p * p * h * p / median(times) / 1e9
    return flops, gflops, flops / (gflops * 1e9)


def diagram(n: int, epochs: int, folder: Path) -> None:
    import numpy as np

    from hooked_mlp import MLPConfig, TrainConfig, sweep

    grid = {"weight_decay": [float(x) for x in np.round(np.geomspace(0.01, 10, n), 4)],
            "train_frac": [float(x) for x in np.round(np.linspace(0.2, 0.8, n), 4)]}
    t0 = time.perf_counter()
    table = sweep(grid, [0], model=MLPConfig(p=23, d_hidden=48),
                  recipe=TrainConfig(epochs=epochs, batch_size=4096, lr=0.01), out=folder,
                  progress=False, page=True)
    dt = time.perf_counter() - t0
    counts = table["phase"].value_counts().to_dict()
    print(f"diagram: {len(table)} runs (p=23, 48 neurons, {epochs} epochs, {n}x{n} weight decay "
          f"x train fraction, 1 seed) in {dt:.1f} s with the page "
          f"({(folder / 'sweep.html').stat().st_size / 1e6:.2f} MB); phases {counts}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--diagram", action="store_true", help="also the 1,024-run diagram")
    ap.add_argument("--diagram-size", type=int, default=32)
    ap.add_argument("--diagram-epochs", type=int, default=2000)
    args = ap.parse_args()
    from hooked_mlp import MLPConfig, TrainConfig

    print(f"machine: {machine()}; load {os.getloadavg()[0]:.2f}")
    cfg = MLPConfig(p=31, d_hidden=128)
    tcfg = TrainConfig(epochs=args.epochs, batch_size=4096, lr=0.01)
    seeds = [0, 1]
    times: dict[str, list[float]] = {"loop": [], "sweep": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            t0 = time.perf_counter()
            a = hand_loop(cfg, tcfg, seeds)
            times["loop"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            b = with_sweep(cfg, tcfg, seeds, Path(tmp) / f"S{k}")
            times["sweep"].append(time.perf_counter() - t0)
        worst = max(abs(a[key] - b[key]) for key in a)
        loop, sw = median(times["loop"]), median(times["sweep"])
        print(f"32-run grid (p=31, 128 neurons, full batch, {args.epochs} epochs): loop of "
              f"train_many {loop:.1f} s, sweep {sw:.1f} s: {loop / sw:.2f}x "
              f"(medians of {args.repeats}; largest val_acc difference {worst:.1e})")
        flops, gflops, floor = floor_seconds(31, 128, FRACS, len(seeds), args.epochs,
                                             os.cpu_count() or 1)
        print(f"compute floor: {flops / 1e9:.0f} GFLOP of products in all; this machine's "
              f"matmul does {gflops:.1f} GFLOP/s on [p^2, h] x [h, p], so {floor:.1f} s; the "
              f"sweep takes {sw / floor:.1f}x the floor, the loop {loop / floor:.1f}x; "
              f"load {os.getloadavg()[0]:.2f}")
        if args.diagram:
            diagram(args.diagram_size, args.diagram_epochs, Path(tmp) / "D")


if __name__ == "__main__":
    main()
