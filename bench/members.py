"""The model family's general training path against the plain loop, at the study's shape.

    .venv/bin/python bench/members.py [--repeats 9] [--members relu gelu quad tied nobias deep2]

For each member (the study's shape, p = 113, 100 neurons, batch 128, one seed) the trainer on the
general path (`backend="torch"`: `hooked_mlp.functional`'s forward pass with the hand-derived
gradients of `hooked_mlp.gradients`; its default threads: one, with the validation pass on a
helper thread) is timed epoch by epoch, interleaved with the same trainer taking its gradients
from autograd (what the general path did before `hooked_mlp.gradients`, and still does for
first layers that are not one-hot) and with the plain loop (`bench/plain_loop.py`: one-hot
`nn.Sequential` of the same member, a `DataLoader`, `torch.optim.AdamW`, torch's default
threads), so that the machine's load hits all three alike.
Each epoch includes its validation pass (the trainer's waits for the helper thread). Medians
and the plain loop's time over each are printed; the goal is >= 3x for every member.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import epoch_runner, interleaved, machine, median
from bench.plain_loop import PlainLoop
from hooked_mlp import MLPConfig

MEMBERS = {
    "relu": MLPConfig(),
    "gelu": MLPConfig(activation="gelu"),
    "silu": MLPConfig(activation="silu"),
    "quad": MLPConfig(activation="quad"),
    "identity": MLPConfig(activation="identity"),
    "tied": MLPConfig(tied_inputs=True),
    "nobias": MLPConfig(bias=False),
    "tied-nobias-quad": MLPConfig(tied_inputs=True, bias=False, activation="quad"),
    "sub": MLPConfig(operation="sub"),
    "mul": MLPConfig(operation="mul"),
    "deep2": MLPConfig(n_layers=2),
    "deep3": MLPConfig(n_layers=3),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--members", nargs="+", default=list(MEMBERS), choices=list(MEMBERS))
    args = ap.parse_args()
    print(f"machine: {machine()}")
    default = torch.get_num_threads()
    print(f"{'member':18s} {'plain loop':>12s} {'autograd':>10s} {'general path':>14s}  "
          f"{'ratio':>6s} {'(autograd)':>10s}")
    for name in args.members:
        cfg = MEMBERS[name]
        plain = PlainLoop(cfg)
        epochs = 2 * args.repeats + 10
        trainer, epoch, threads = epoch_runner([0], epochs, backend="torch", cfg=cfg)
        slow, slow_epoch, _ = epoch_runner([0], epochs, backend="torch", cfg=cfg)
        slow.impl.by_hand = False
        times = interleaved({"plain": plain.epoch, "autograd": slow_epoch, "general": epoch},
                            args.repeats)
        trainer.close()
        slow.close()
        p, a, g = (median(times[k]) for k in ("plain", "autograd", "general"))
        how = "1 thread + helper" if trainer.overlap else f"{threads} threads"
        print(f"{name:18s} {1000 * p:9.1f} ms {1000 * a:7.1f} ms {1000 * g:11.1f} ms  "
              f"{p / g:5.2f}x {p / a:9.2f}x   ({how}; plain loop on torch's default {default} "
              "threads)", flush=True)
    print(f"(medians of {args.repeats} epochs each, interleaved in blocks of 3)")


if __name__ == "__main__":
    main()
