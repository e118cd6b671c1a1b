"""Training dynamics: what snapshots cost, how fast the progress measures are, and the grokking
preset's phases.

    .venv/bin/python bench/dynamics_speed.py            # about 3 minutes on 2 cores

1. Snapshot cost: the study's model (seed 0, the seed recipe cut to `--epochs` epochs, C
   accelerator, one thread) trained into a run folder as `hooked-mlp train` does (checkpoints
   every 50 epochs), without snapshots and with 64 (`log:63` plus epoch 0), interleaved; the
   same in memory (`train(..., snapshots=...)`).
2. All progress measures (`analyses.dynamics.dynamics`: losses on both splits, restricted and
   excluded losses, weight norms, per-neuron IPR / frequency / phase error, the lottery, the
   phases) over the 64 snapshots of the study's model, one thread. Goal: <= 10 s.
3. The grokking preset (`TrainConfig.grokking()`, p = 47, 256 neurons, 5000 epochs) with 64
   snapshots: its wall time, when train and validation accuracy cross 99 % / 50 %, and whether
   the restricted loss falls before validation accuracy jumps.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import machine, median


def _first(values, threshold):
    return next((i + 1 for i, v in enumerate(values) if v >= threshold), None)


def _time_snapshot_work() -> list[float]:
    """Wrap the snapshot code's entry points so that the time spent in them is summed."""
    from hooked_mlp import training
    from hooked_mlp.training import runs, snapshots

    spent = [0.0]

    def timed_fn(fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[0] += time.perf_counter() - t0
        return wrapper

    for cls_fn in ("capture", "flush"):
        setattr(snapshots.SnapshotRecorder, cls_fn,
                timed_fn(getattr(snapshots.SnapshotRecorder, cls_fn)))
    runs.write_run_snapshots = timed_fn(runs.write_run_snapshots)
    training.series_of = timed_fn(training.series_of)
    return spent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=500,
                    help="epochs of the study's model for parts 1-2 (default 500)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-grokking", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from analyses.dynamics import dynamics
    from hooked_mlp import MLPConfig, TrainConfig, load_snapshots, train, train_run

    print(machine())
    spent = _time_snapshot_work()
    cfg, tcfg = MLPConfig(), TrainConfig(epochs=args.epochs)
    times: dict[str, list[float]] = {"run": [], "run+snapshots": [], "train": [],
                                     "train+snapshots": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name in times:
                snaps = "log:63" if name.endswith("snapshots") else None
                t0 = time.perf_counter()
                if name.startswith("run"):
                    train_run(Path(tmp) / f"{name}-{r}", cfg, tcfg, [0], checkpoint_every=50,
                              progress=False, threads=1, snapshots=snaps)
                else:
                    train(cfg, tcfg, progress=False, threads=1, snapshots=snaps)
                times[name].append(time.perf_counter() - t0)
        print(f"\n1. snapshot cost: study's model, {args.epochs} epochs, 64 snapshots, "
              f"medians of {args.repeats}")
        for base in ("run", "train"):
            a, b = median(times[base]), median(times[base + "+snapshots"])
            print(f"   {base:6s} without {a:6.2f} s   with {b:6.2f} s   +{b - a:5.2f} s "
                  f"({(b / a - 1) * 100:+.1f} %)")
        n_runs = 2 * args.repeats
        print(f"   time inside the snapshot code itself (captures, part files, final files), "
              f"summed over the {n_runs} runs with snapshots: {spent[0]:.2f} s, "
              f"{spent[0] / n_runs:.3f} s per run")
        series = load_snapshots(Path(tmp) / "run+snapshots-0")
        size = (Path(tmp) / "run+snapshots-0" / "snapshots-seed-0.safetensors").stat().st_size
        print(f"   file: {size / 2**20:.1f} MiB for {len(series)} snapshots (float32)")

        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            d = dynamics(series)
            runs.append(time.perf_counter() - t0)
        print(f"\n2. all progress measures over {len(series)} snapshots of the study's model: "
              f"{median(runs):.2f} s (median of {args.repeats}; goal <= 10 s, "
              f"{'met' if median(runs) <= 10 else 'NOT met'})")
        print("   " + d.describe().replace("\n", "\n   "))

    if args.skip_grokking:
        return 0
    gcfg, gtcfg = MLPConfig(**TrainConfig.grokking_model()), TrainConfig.grokking()
    t0 = time.perf_counter()
    model, h = train(gcfg, gtcfg, progress=False, threads=1, snapshots="log:63")
    wall = time.perf_counter() - t0
    d = dynamics(model.train_info.snapshots)
    ph = d.phases
    print(f"\n3. grokking preset: {gtcfg.epochs} epochs of p={gcfg.p}, d_hidden={gcfg.d_hidden} "
          f"with 64 snapshots in {wall:.1f} s (one thread)")
    print(f"   train acc >= 99 % at epoch {_first(h['train_acc'], 0.99)}; validation acc "
          f">= 50 % at {_first(h['val_acc'], 0.5)}, >= 95 % at {_first(h['val_acc'], 0.95)}; "
          f"final validation acc {h['val_acc'][-1]:.4f}")
    print("   " + d.describe().replace("\n", "\n   "))
    m, ep = d.measures, d.epochs
    i = ep.index(ph.restricted_half) if ph.restricted_half is not None else None
    if i is not None:
        print(f"   at epoch {ep[i]} (restricted loss half-way down): restricted loss "
              f"{m['restricted_loss'][i]:.3f} (from {m['restricted_loss'][0]:.3f}), validation "
              f"loss {m['val_loss'][i]:.3f}, validation acc {m['val_acc'][i]:.3f}")
    verdict = ("falls before" if ph.restricted_leads_by and ph.restricted_leads_by > 0 else
               "does not fall before")
    print(f"   the restricted loss {verdict} validation accuracy jumps (jump at {ph.jump}, "
          f"50 % at {ph.val_acc_50}; validation loss half-way down at {ph.val_loss_half})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
