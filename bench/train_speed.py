"""Goal 1: one seed of the seed recipe on CPU, against the plain loop, side by side.

    .venv/bin/python bench/train_speed.py            # per-epoch medians (about 1 minute)
    .venv/bin/python bench/train_speed.py --full     # also the whole 2000-epoch run through
                                                     # `hooked-mlp train`, and the fast path
                                                     # against the autograd reference

Per-epoch times alternate between the plain loop (the way the source study trains: one-hot
inputs, nn.Sequential, DataLoader, torch's default threads) and the trainer with each backend
at its default threads (one thread for the seed, its validation pass on a helper thread, as in
a run), so that the machine's load hits them alike; medians are printed with their ratios.
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

from bench._common import epoch_runner, interleaved, machine, median
from bench.plain_loop import PlainLoop
from hooked_mlp import MLPConfig, TrainConfig
from hooked_mlp.training.trainer import BatchedTrainer, default_threads, torch_threads


def per_epoch(repeats: int) -> None:
    default = torch.get_num_threads()
    plain = PlainLoop()
    runs = {b: epoch_runner([0], 2 * repeats + 10, backend=b) for b in ("c", "torch")}
    candidates = {"plain": plain.epoch, **{b: r[1] for b, r in runs.items()}}
    for fn in candidates.values():
        fn()
    times = interleaved(candidates, repeats)
    for trainer, _, _ in runs.values():
        trainer.close()
    p = median(times["plain"])
    print(f"plain loop         {1000 * p:7.1f} ms/epoch  (torch default threads: {default}; "
          f"2000 epochs ~ {2000 * p:.0f} s)")
    for b, label in (("c", "C accelerator"), ("torch", "general path")):
        f = median(times[b])
        how = "1 thread + helper thread" if runs[b][0].overlap else f"{runs[b][2]} threads"
        print(f"{label:18s} {1000 * f:7.1f} ms/epoch  ({how}; 2000 epochs ~ {2000 * f:.0f} s)  "
              f"{p / f:5.1f}x the plain loop")
    print(f"(medians of {repeats} epochs each, interleaved in blocks of 3)")


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
    """Both backends and the float32 autograd reference, each against the same steps run in
    float64 (the reference with dtype=float64): how far each float32 implementation drifts."""
    from analyses._common import accuracy
    from hooked_mlp import HookedMLP
    from hooked_mlp.reference import reference_train
    from hooked_mlp.train_info import TrainInfo

    cfg, tcfg = MLPConfig(), TrainConfig(epochs=epochs)
    t0 = time.perf_counter()
    results = {"reference, float32": reference_train(cfg, tcfg)}
    t_ref = time.perf_counter() - t0
    exact = reference_train(cfg, tcfg, dtype=torch.float64)
    for backend in ("c", "torch"):
        trainer = BatchedTrainer(cfg, tcfg, [0], backend=backend)
        torch_n = trainer.use_threads(default_threads(1, backend=backend))
        with torch_threads(torch_n):
            for _ in range(epochs):
                trainer.run_epoch()
        trainer.close()
        results[{"c": "C accelerator", "torch": "general path"}[backend]] = trainer.params_of(0)
    print(f"after {epochs} epoch(s) from the same start and batches (reference: {t_ref:.1f} s), "
          f"against the float64 reference:")
    info = TrainInfo(tcfg, trainer.masks[0].clone())
    for label, params in results.items():
        diff = torch.cat([(params[k].double() - exact[k]).flatten() for k in exact])
        m = HookedMLP.from_params(cfg, params, train_info=info)
        print(f"  {label:18s} max |diff| {float(diff.abs().max()):.2e}, rms "
              f"{float(diff.pow(2).mean().sqrt()):.2e}; train acc {accuracy(m, 'train'):.4%}, "
              f"val acc {accuracy(m, 'val'):.4%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--reference-only", action="store_true",
                    help="only compare with the autograd reference (--reference-epochs)")
    ap.add_argument("--reference-epochs", type=int, default=1)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    if args.reference_only:
        against_reference(args.reference_epochs)
        return
    per_epoch(args.repeats)
    against_reference(args.reference_epochs)
    against_reference(3)
    if args.full:
        full_run()


if __name__ == "__main__":
    main()
