"""Goal 2: many seeds in one batched run, against one seed, on CPU.

    .venv/bin/python bench/multi_seed.py [--sizes 4 8 16] [--repeats 7]

Seed-epochs per second for one seed and for batched runs of several seeds, each with the
trainer's default thread choice, timed epoch by epoch and interleaved; plus each batched seed's
weights against the same seed trained alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import interleaved, machine, median
from hooked_mlp import MLPConfig, TrainConfig
from hooked_mlp.training import BatchedTrainer, default_threads, torch_threads


def runner(n_seeds: int, epochs: int, seeds: list[int] | None = None):
    seeds = list(range(n_seeds)) if seeds is None else seeds
    trainer = BatchedTrainer(MLPConfig(), TrainConfig(epochs=epochs), seeds)
    threads = default_threads(len(seeds))
    trainer.overlap = threads == 1

    def epoch() -> None:
        with torch_threads(threads):
            trainer.run_epoch()
            trainer.sync()

    return trainer, epoch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    sizes = [1, *args.sizes]
    runs = {s: runner(s, 2 * args.repeats + 10) for s in sizes}
    for _, epoch in runs.values():
        epoch()
    times = interleaved({s: epoch for s, (_, epoch) in runs.items()}, args.repeats)
    base = 1 / median(times[1])
    for s in sizes:
        rate = s / median(times[s])
        print(f"{s:3d} seed(s), {default_threads(s)} thread(s): {1000 * median(times[s]):7.1f} "
              f"ms/epoch, {rate:6.1f} seed-epochs/s, {rate / base:4.2f}x one seed")
    # each batched seed against the same seed trained alone, same number of epochs
    biggest = max(sizes)
    batched = runs[biggest][0]
    done = batched.epoch
    worst = 0.0
    for s in (0, biggest - 1):
        alone, epoch = runner(1, done, [s])
        for _ in range(done):
            epoch()
        for name, value in alone.params_of(0).items():
            worst = max(worst, float((batched.params_of(s)[name] - value).abs().max()))
        alone.close()
    for trainer, _ in runs.values():
        trainer.close()
    print(f"batched ({biggest} seeds) vs the same seeds alone after {done} epochs: "
          f"max |diff| = {worst:.2e}")
    torch.set_num_threads(torch.get_num_threads())


if __name__ == "__main__":
    main()
