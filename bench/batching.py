"""How to batch seeds on the general path: stacked parameters vs `torch.func.vmap` vs a loop.

    .venv/bin/python bench/batching.py [--seeds 1 4 16] [--repeats 5]

Three ways to get every seed's gradient from the one definition (`hooked_mlp.functional`), at
the study's shape (p = 113, 100 neurons, batch 128), one CPU thread, timed per epoch (80 steps
of forward, backward and fused AdamW on the flat buffer; no validation), interleaved:

- `stacked`: the trainer's way: parameters stacked along a leading seed dimension, the forward
  run once for all seeds with batched matrix products, one `backward()`;
- `vmap`: `torch.func.vmap(torch.func.grad(loss))` over the stacked parameters, the forward
  written for one seed;
- `loop`: one forward and one `backward()` per seed, on that seed's slice of the parameters.

The numbers are the same up to float rounding (checked below); the trainer uses the fastest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import interleaved, machine, median
from hooked_mlp import MLPConfig, TrainConfig, functional
from hooked_mlp.training.trainer import BatchedTrainer


def strategies(n_seeds: int):
    cfg = MLPConfig()
    out = {}
    for name in ("stacked", "vmap", "loop"):
        t = BatchedTrainer(cfg, TrainConfig(epochs=10_000), list(range(n_seeds)),
                           backend="torch")
        schedule = t.impl.schedule(0)
        leaves = t.impl.leaves
        names = t.names

        def one_seed_loss(params, rows, labels):
            logits = functional.forward_rows(cfg, params, rows)
            return F.cross_entropy(logits, labels)

        vgrad = torch.func.vmap(torch.func.grad(one_seed_loss))
        grads = {n: t.block(t.grad, n) for n in names}

        def epoch(name=name, t=t, schedule=schedule, leaves=leaves, vgrad=vgrad, grads=grads,
                  names=names):
            for rows, labels, _, _ in schedule:
                if name == "stacked":
                    t.grad.zero_()
                    logits = functional.forward_rows(cfg, leaves, rows)
                    per = F.cross_entropy(logits.view(-1, cfg.p), labels.view(-1),
                                          reduction="none")
                    per.sum().div(rows.shape[1]).backward()
                elif name == "vmap":
                    with torch.no_grad():
                        # per-seed rows: vmap hands each seed its own W_in, so drop the offsets
                        local = rows - (torch.arange(t.S) * cfg.d_input).view(-1, 1, 1)
                        params = {n: leaves[n].detach() for n in names}
                    g = vgrad(params, local, labels)
                    with torch.no_grad():
                        torch._foreach_copy_([grads[n] for n in names], [g[n] for n in names])
                else:
                    t.grad.zero_()
                    for s in range(t.S):
                        params = {n: leaves[n][s] for n in names}
                        local = rows[s] - s * cfg.d_input
                        F.cross_entropy(functional.forward_rows(cfg, params, local),
                                        labels[s]).backward()
                with torch.no_grad():
                    t.adamw()

        out[name] = (t, epoch)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine()}; one thread")
    for n in args.seeds:
        runs = strategies(n)
        times = interleaved({k: fn for k, (_, fn) in runs.items()}, args.repeats)
        base = median(times["stacked"])
        line = ", ".join(f"{k} {1000 * median(v):7.1f} ms ({median(v) / base:4.2f}x stacked)"
                         for k, v in times.items())
        print(f"{n:3d} seed(s): {line}  [ms per epoch of all seeds]", flush=True)
        flats = {k: t.flat for k, (t, _) in runs.items()}
        worst = max(float((flats[k] - flats["stacked"]).abs().max()) for k in flats)
        print(f"     weights after {2 * args.repeats * 2} epochs: max |difference| between "
              f"strategies {worst:.1e}")


if __name__ == "__main__":
    main()
