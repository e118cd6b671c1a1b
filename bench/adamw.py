"""Which door to torch's fused AdamW kernel the general path takes: measured, side by side.

    .venv/bin/python bench/adamw.py [--repeats 15]

Three ways to run the same kernel (`_fused_adamw_`, the one `torch.optim.AdamW(fused=True)`
runs) on the study's flat buffer (one seed, p = 113, 100 neurons: 34,176 floats), one thread:
the optimizer class (`AdamW(...).step()`), the public functional form
(`torch.optim.adamw.adamw(..., fused=True)`) and the kernel called directly (what
`hooked_mlp.training.backends.fused_adamw` does); first one step alone, then the general path's
whole epoch (80 steps, its validation on the helper thread, as in a run) with each, interleaved.
All three give the same bits (checked here, and in tests/test_stack.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.optim.adamw import adamw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import epoch_runner, interleaved, machine, median
from hooked_mlp.training import backends

RECIPE = {"lr": 3e-3, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.5, "eps": 1e-8}


def one_step(n: int, repeats: int) -> None:
    gen = torch.Generator().manual_seed(0)
    start, grad = torch.randn(n, generator=gen), torch.randn(n, generator=gen) * 1e-3
    bufs = {k: (start.clone(), torch.zeros(n), torch.zeros(n), torch.zeros(()))
            for k in ("class", "functional", "direct")}
    p_class = bufs["class"][0]
    p_class.grad = grad
    opt = torch.optim.AdamW([p_class], lr=RECIPE["lr"], betas=(RECIPE["beta1"], RECIPE["beta2"]),
                            weight_decay=RECIPE["weight_decay"], eps=RECIPE["eps"], fused=True)
    opt.state[p_class] = {"step": bufs["class"][3], "exp_avg": bufs["class"][1],
                          "exp_avg_sq": bufs["class"][2]}

    def functional() -> None:
        p, m, v, st = bufs["functional"]
        adamw([p], [grad], [m], [v], [], [st], fused=True, amsgrad=False, maximize=False,
              **RECIPE)

    def direct() -> None:
        p, m, v, st = bufs["direct"]
        backends.fused_adamw([p], [grad], [m], [v], [st], **RECIPE)

    steps = {"class": opt.step, "functional": functional, "direct": direct}
    for _ in range(3):
        for fn in steps.values():
            fn()
    same = all(torch.equal(bufs[k][0], bufs["class"][0]) for k in bufs)
    times = {}
    for name, fn in steps.items():
        t0 = time.perf_counter()
        for _ in range(repeats * 200):
            fn()
        times[name] = (time.perf_counter() - t0) / (repeats * 200)
    print(f"one step on {n} floats: " + ", ".join(f"{k} {1e6 * v:.1f} us"
                                                  for k, v in times.items())
          + f"; same bits: {same}")


def whole_epochs(repeats: int) -> None:
    runs = {}
    for name in ("functional", "direct"):
        trainer, epoch, _ = epoch_runner([0], 2 * repeats + 10, backend="torch")
        if name == "functional":
            def public(impl=trainer.impl) -> None:
                for params, grads, m, v, steps, recipe in impl._adamw:
                    adamw(params, grads, m, v, [], steps, fused=True, amsgrad=False,
                          maximize=False, **dict(zip(RECIPE, recipe, strict=True)))
            trainer.impl.adamw = public
        runs[name] = (trainer, epoch)
    times = interleaved({k: fn for k, (_, fn) in runs.items()}, repeats)
    same = torch.equal(runs["functional"][0].flat, runs["direct"][0].flat)
    for trainer, _ in runs.values():
        trainer.close()
    f, d = median(times["functional"]), median(times["direct"])
    print(f"general path, one epoch: functional {1000 * f:.1f} ms, direct {1000 * d:.1f} ms "
          f"({f / d:.3f}x); same bits after {len(times['direct']) + 3} epochs: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine()}")
    one_step(34_176, args.repeats)
    whole_epochs(args.repeats)


if __name__ == "__main__":
    main()
