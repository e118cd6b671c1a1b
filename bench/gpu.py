"""Goal 3: the same trainer on CUDA (run where a GPU is lent).

    python bench/gpu.py                 # one seed, 2000 epochs; 1,024 seeds for a few epochs
    python bench/gpu.py --quick         # 200 epochs for the single seed
    python bench/gpu.py --sweep-runs 4096   # also a 64 x 64 sweep (p = 23, 1 seed) on the GPU

Prints the single-seed wall time for the whole recipe and the seed-epochs per second of a
batched run, beside the plain loop on the same GPU for scale.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hooked_mlp import MLPConfig, TrainConfig
from hooked_mlp.training.trainer import BatchedTrainer


def timed_epochs(trainer: BatchedTrainer, epochs: int) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(epochs):
        trainer.run_epoch()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=1024)
    ap.add_argument("--batched-epochs", type=int, default=5)
    ap.add_argument("--sweep-runs", type=int, default=4096,
                    help="runs of the sweep (a square grid of weight decay x train fraction); "
                    "0: no sweep")
    ap.add_argument("--sweep-epochs", type=int, default=200)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py: no CUDA device here")
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}")
    epochs = 200 if args.quick else 2000
    one = BatchedTrainer(MLPConfig(), TrainConfig(epochs=epochs + 1), [0], device="cuda")
    timed_epochs(one, 1)
    t = timed_epochs(one, epochs)
    print(f"one seed: {epochs} epochs in {t:.1f} s ({1000 * t / epochs:.2f} ms/epoch); "
          f"val acc {float(one.history[one.epoch - 1, 0, 3]):.4f}")
    many = BatchedTrainer(MLPConfig(), TrainConfig(epochs=args.batched_epochs + 1),
                          list(range(args.seeds)), device="cuda")
    timed_epochs(many, 1)
    t = timed_epochs(many, args.batched_epochs)
    rate = args.seeds * args.batched_epochs / t
    print(f"{args.seeds} seeds: {1000 * t / args.batched_epochs:.1f} ms/epoch, "
          f"{rate:,.0f} seed-epochs/s")
    if args.sweep_runs:
        gpu_sweep(args.sweep_runs, args.sweep_epochs)


def gpu_sweep(n_runs: int, epochs: int) -> None:
    """A phase-diagram sweep on the GPU: runs per second over the whole sweep (stacked groups
    of up to 4,096 runs, results and weights written as on the CPU)."""
    import tempfile

    import numpy as np

    from hooked_mlp import sweep

    side = max(1, round(n_runs ** 0.5))
    grid = {"weight_decay": [float(x) for x in np.geomspace(0.01, 10, side)],
            "train_frac": [float(x) for x in np.linspace(0.2, 0.8, side)]}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        table = sweep(grid, [0], model=MLPConfig(p=23, d_hidden=48),
                      recipe=TrainConfig(epochs=epochs, batch_size=4096, lr=0.01),
                      out=Path(tmp) / "S", device="cuda", group_size=4096, progress=False,
                      page=False)
        dt = time.perf_counter() - t0
    print(f"sweep: {len(table)} runs x {epochs} epochs (p=23, 48 neurons) in {dt:.1f} s: "
          f"{len(table) / dt:,.1f} runs/s, {len(table) * epochs / dt:,.0f} run-epochs/s")


if __name__ == "__main__":
    main()
