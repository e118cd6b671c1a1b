"""Goal 1: one seed of the seed recipe on CPU, against the plain loop, side by side.

    .venv/bin/python bench/train_speed.py            # per-epoch medians (about 1 minute)
    .venv/bin/python bench/train_speed.py --full     # also the whole 2000-epoch run through
                                                     # `hooked-mlp train`, and the fast path
                                                     # against the autograd reference

Per-epoch times alternate between the plain loop (the way the source study trains: one-hot
inputs, nn.Sequential, DataLoader, torch's default threads) and the fast path (the trainer's
defaults: one torch thread, validation on a helper thread), so that the machine's load hits both
alike; medians are printed with their ratio.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import interleaved, machine, median
from bench.plain_loop import PlainLoop
from hooked_mlp import MLPConfig, TrainConfig
from hooked_mlp.training import BatchedTrainer, default_threads, torch_threads


def per_epoch(repeats: int) -> None:
    default = torch.get_num_threads()
    plain = PlainLoop()
    fast = BatchedTrainer(MLPConfig(), TrainConfig(epochs=2 * repeats + 10), [0])
    threads = default_threads(1)
    fast.overlap = threads == 1

    def fast_epoch() -> None:
        with torch_threads(threads):
            fast.run_epoch()
            fast.sync()

    plain.epoch()
    fast_epoch()
    times = interleaved({"plain": plain.epoch, "fast": fast_epoch}, repeats)
    fast.close()
    p, f = median(times["plain"]), median(times["fast"])
    print(f"plain loop   {1000 * p:7.1f} ms/epoch  (torch default threads: {default}; "
          f"2000 epochs ~ {2000 * p:.0f} s)")
    print(f"fast path    {1000 * f:7.1f} ms/epoch  ({threads} thread + helper thread; "
          f"2000 epochs ~ {2000 * f:.0f} s)")
    print(f"ratio        {p / f:7.1f}x  (median of {repeats} epochs each, interleaved)")


def full_run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "hooked_mlp.cli", "train", "--out", f"{tmp}/run",
               "--no-progress"]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        wall = time.perf_counter() - t0
    print(f"hooked-mlp train (2000 epochs, seed 0): {wall:.1f} s wall, start-up and the "
          f"final checkpoint included\n  {out.strip()}")


def against_reference(epochs: int) -> None:
    from hooked_mlp.reference import reference_train

    cfg, tcfg = MLPConfig(), TrainConfig(epochs=epochs)
    trainer = BatchedTrainer(cfg, tcfg, [0])
    t0 = time.perf_counter()
    ref = reference_train(cfg, tcfg)
    t_ref = time.perf_counter() - t0
    with torch_threads(1):
        for _ in range(epochs):
            trainer.run_epoch()
    got = trainer.params_of(0)
    worst = max(float((got[k] - ref[k]).abs().max()) for k in ref)
    print(f"after {epochs} epochs, fast path vs autograd reference (same init and batches): "
          f"max |diff| = {worst:.2e} (reference took {t_ref:.1f} s)")
    from analyses._common import accuracy
    from hooked_mlp import HookedMLP
    from hooked_mlp.params import TrainInfo

    info = TrainInfo(tcfg, trainer.masks[0].clone())
    for label, params in (("fast path", got), ("reference", ref)):
        m = HookedMLP.from_params(cfg, params, train_info=info)
        print(f"  {label:10s} train acc {accuracy(m, 'train'):.4%}, "
              f"val acc {accuracy(m, 'val'):.4%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--reference-only", action="store_true",
                    help="only compare with the autograd reference (--reference-epochs)")
    ap.add_argument("--reference-epochs", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    if args.reference_only:
        against_reference(args.reference_epochs)
        return
    per_epoch(args.repeats)
    against_reference(args.reference_epochs)
    if args.full:
        full_run()


if __name__ == "__main__":
    main()
