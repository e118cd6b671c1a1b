"""Training speed, side by side with another tree: the C accelerator, the general path, the CLI.

    .venv/bin/python bench/train_speed.py                          # this tree: ms per epoch
    .venv/bin/python bench/train_speed.py --against /work/baseline # old and new, alternated
    .venv/bin/python bench/train_speed.py --against /work/baseline --cli   # and the CLI run
    .venv/bin/python bench/train_speed.py --reference-only         # drift from float64

Per-epoch times (one seed of the study's recipe, p = 113, 100 neurons, batch 128) alternate,
inside one process, between the plain loop (`bench/plain_loop.py`: the way the source study
trains), the C accelerator and the general path (each at its default threads: one thread for the
seed, its validation pass on a helper thread, as in a run), so that the machine's load hits them
alike; the general path is also timed on other members (`--members`). With `--against TREE`,
each such measurement runs in a subprocess importing `TREE` (an older checkout with its C
extension built), alternating with this tree round after round; `--cli` also times the whole
2000-epoch `hooked-mlp train` of each tree, alternated. Medians are printed with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

MEMBERS = {"gelu": {"activation": "gelu"}, "deep2": {"n_layers": 2},
           "tied": {"tied_inputs": True}}


def measure(repeats: int, members: list[str]) -> dict[str, float]:
    """Medians (seconds per epoch) in this process, of whichever tree is first on sys.path."""
    import torch

    from bench._common import epoch_runner, interleaved, median
    from bench.plain_loop import PlainLoop
    from hooked_mlp import MLPConfig

    plain = PlainLoop()
    runs = {b: epoch_runner([0], 2 * repeats + 10, backend=b) for b in ("c", "torch")}
    for name in members:
        runs[name] = epoch_runner([0], 2 * repeats + 10, backend="torch",
                                  cfg=MLPConfig(**MEMBERS[name]))
    candidates = {"plain": plain.epoch, **{k: r[1] for k, r in runs.items()}}
    for fn in candidates.values():
        fn()
    times = interleaved(candidates, repeats)
    for trainer, _, _ in runs.values():
        trainer.close()
    out = {k: median(v) for k, v in times.items()}
    out["torch_threads_default"] = torch.get_num_threads()
    return out


def in_tree(tree: Path, repeats: int, members: list[str]) -> dict[str, float]:
    """`measure` in a subprocess that imports `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, __file__, "--worker", "--repeats", str(repeats),
           "--members", *members]
    done = subprocess.run(cmd, env=env, cwd=tree, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def cli_seconds(tree: Path) -> float:
    """Wall time of `hooked-mlp train` (2000 epochs, seed 0) importing `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "hooked_mlp.cli", "train", "--out", f"{tmp}/run",
               "--no-progress"]
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, cwd=tree, check=True, capture_output=True, text=True)
        return time.perf_counter() - t0


def side_by_side(against: Path, rounds: int, repeats: int, members: list[str],
                 cli: bool) -> None:
    trees = {"old": against.resolve(), "new": HERE}
    got: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
    walls: dict[str, list[float]] = {k: [] for k in trees}
    for r in range(rounds):
        for label, tree in (trees.items() if r % 2 == 0 else reversed(trees.items())):
            got[label].append(in_tree(tree, repeats, members))
            if cli:
                walls[label].append(cli_seconds(tree))
        print(f"round {r + 1}/{rounds} done; load average {os.getloadavg()[0]:.2f}", flush=True)

    def med(label: str, key: str) -> float:
        return statistics.median(x[key] for x in got[label])

    print(f"\nold = {trees['old']}, new = {trees['new']}; {rounds} rounds alternating, each "
          f"the median of {repeats} epochs per candidate (interleaved in blocks of 3)")
    print(f"{'':28s} {'old':>10s} {'new':>10s} {'new/old':>8s}")
    rows = [("plain loop", "plain"), ("C accelerator", "c"), ("general path (relu)", "torch")]
    rows += [(f"general path ({m})", m) for m in members]
    for name, key in rows:
        o, n = med("old", key), med("new", key)
        print(f"{name + ' ms/epoch':28s} {1000 * o:10.2f} {1000 * n:10.2f} {n / o:8.3f}")
    for name, key in rows[1:]:
        o = statistics.median(x["plain"] / x[key] for x in got["old"])
        n = statistics.median(x["plain"] / x[key] for x in got["new"])
        print(f"{'plain / ' + name:28s} {o:9.2f}x {n:9.2f}x {n / o:8.3f}")
    if cli:
        o, n = statistics.median(walls["old"]), statistics.median(walls["new"])
        print(f"{'hooked-mlp train, 2000 ep.':28s} {o:9.1f}s {n:9.1f}s {n / o:8.3f}   "
              f"(old {', '.join(f'{w:.1f}' for w in walls['old'])}; "
              f"new {', '.join(f'{w:.1f}' for w in walls['new'])})")


def against_reference(epochs: int) -> None:
    """Both backends and the float32 autograd reference, each against the same steps run in
    float64 (the reference with dtype=float64): how far each float32 implementation drifts."""
    import torch

    from hooked_mlp import HookedMLP, MLPConfig, TrainConfig
    from hooked_mlp.helpers import accuracy
    from hooked_mlp.reference import reference_train
    from hooked_mlp.train_info import TrainInfo
    from hooked_mlp.training.trainer import BatchedTrainer, default_threads, torch_threads

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
    info = TrainInfo(tcfg, trainer.state.masks[0].clone())
    for label, params in results.items():
        diff = torch.cat([(params[k].double() - exact[k]).flatten() for k in exact])
        m = HookedMLP.from_params(cfg, params, train_info=info)
        print(f"  {label:18s} max |diff| {float(diff.abs().max()):.2e}, rms "
              f"{float(diff.pow(2).mean().sqrt()):.2e}; train acc {accuracy(m, 'train'):.4%}, "
              f"val acc {accuracy(m, 'val'):.4%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--members", nargs="*", default=[], choices=list(MEMBERS))
    ap.add_argument("--against", type=Path, help="another tree to alternate with")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cli", action="store_true", help="also time the 2000-epoch CLI run")
    ap.add_argument("--reference-only", action="store_true",
                    help="only compare with the float64 autograd reference")
    ap.add_argument("--reference-epochs", type=int, default=1)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:  # inside in_tree: the tree is first on PYTHONPATH
        sys.path.insert(0, os.environ["PYTHONPATH"])
        print(json.dumps(measure(args.repeats, args.members)))
        return
    sys.path.insert(0, str(HERE))
    from bench._common import machine

    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    if args.reference_only:
        against_reference(args.reference_epochs)
        return
    if args.against is not None:
        side_by_side(args.against, args.rounds, args.repeats, args.members, args.cli)
        return
    got = measure(args.repeats, args.members)
    p = got["plain"]
    print(f"plain loop            {1000 * p:7.1f} ms/epoch (torch default threads: "
          f"{got['torch_threads_default']}; 2000 epochs ~ {2000 * p:.0f} s)")
    for key, label in (("c", "C accelerator"), ("torch", "general path"),
                       *((m, f"general ({m})") for m in args.members)):
        f = got[key]
        print(f"{label:21s} {1000 * f:7.1f} ms/epoch (2000 epochs ~ {2000 * f:.0f} s)  "
              f"{p / f:5.1f}x the plain loop")
    print(f"(medians of {args.repeats} epochs each, interleaved in blocks of 3)")
    against_reference(args.reference_epochs)


if __name__ == "__main__":
    main()
