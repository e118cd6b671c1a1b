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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import epoch_runner, interleaved, machine, median


def runner(n_seeds: int, epochs: int, seeds: list[int] | None = None,
           threads: int | None = None, backend: str = "auto"):
    return epoch_runner(list(range(n_seeds)) if seeds is None else seeds, epochs, threads,
                        backend)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8, 16])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--backend", default="auto", choices=("auto", "c", "torch"))
    args = ap.parse_args()
    print(f"machine: {machine()}")
    epochs = 2 * args.repeats + 10
    runs = {f"{s} seeds": runner(s, epochs, backend=args.backend) for s in args.sizes}
    runs = {"1 seed": runner(1, epochs, backend=args.backend),
            "1 seed, 1 thread": runner(1, epochs, threads=1, backend=args.backend), **runs}
    for _, epoch, _ in runs.values():
        epoch()
    times = interleaved({k: epoch for k, (_, epoch, _) in runs.items()}, args.repeats)
    base = 1 / median(times["1 seed"])
    base1 = 1 / median(times["1 seed, 1 thread"])
    print(f"backend: {runs['1 seed'][0].backend}")
    for key, (trainer, _, threads) in runs.items():
        rate = trainer.S / median(times[key])
        print(f"{key:17s} {threads} thread(s): {1000 * median(times[key]):7.1f} ms/epoch, "
              f"{rate:6.1f} seed-epochs/s, {rate / base:4.2f}x one seed (default threads), "
              f"{rate / base1:4.2f}x one seed on one thread")
    # each batched seed against the same seed trained alone, same number of epochs
    biggest = f"{max(args.sizes)} seeds"
    batched = runs[biggest][0]
    done = batched.epoch
    worst = 0.0
    for s in (0, batched.S - 1):
        alone, epoch, _ = runner(1, done, [s], backend=args.backend)
        for _ in range(done):
            epoch()
        for name, value in alone.params_of(0).items():
            worst = max(worst, float((batched.params_of(s)[name] - value).abs().max()))
        alone.close()
    for trainer, _, _ in runs.values():
        trainer.close()
    print(f"batched ({biggest}) vs the same seeds alone after {done} epochs: "
          f"max |diff| = {worst:.2e}")


if __name__ == "__main__":
    main()
