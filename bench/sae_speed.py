"""An SAE with 400 features on the study model's hook_post (shipped seed 0), trained by
analyses.sae.fit_dictionaries, beside a plain torch loop (nn.Linear encoder and decoder, Adam,
the same TopK, batch, steps and learning rate), in one run: wall time of each and the normalised
MSE (1 - explained variance) each reaches on all pairs. The goal: <= 30 s to nmse <= 0.05.

    .venv/bin/python bench/sae_speed.py [--steps 1000] [--k 16]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

import torch

from analyses.sae import _data, fit_dictionaries
from hooked_mlp import load_pretrained

TARGET_NMSE = 0.05
HOOK = "blocks.0.mlp.hook_post"


def plain_loop(x: torch.Tensor, d_sae: int, k: int, steps: int, batch: int, lr: float
               ) -> torch.nn.Module:
    torch.manual_seed(0)
    enc, dec = torch.nn.Linear(x.shape[1], d_sae), torch.nn.Linear(d_sae, x.shape[1])
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=lr)
    var = (x - x.mean(0)).square().sum(1).mean()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,))
        xb = x[idx]
        pre = enc(xb)
        top = pre.topk(k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
        loss = (dec(f) - xb).square().sum(-1).mean() / var
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.nn.Sequential(enc, dec)


def nmse_plain(net: torch.nn.Module, x: torch.Tensor, k: int) -> float:
    with torch.no_grad():
        pre = net[0](x)
        top = pre.topk(k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
        err = (net[1](f) - x).square().sum()
        return float(err / (x - x.mean(0)).square().sum())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args()
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    model = load_pretrained(0)
    x, _ = _data(model, HOOK, HOOK)
    t = time.perf_counter()
    (sae,) = fit_dictionaries(x, None, 400, sparsity="topk", k=args.k, steps=args.steps,
                              lr=args.lr, batch_size=args.batch, resample_every=250,
                              hook_in=HOOK, hook_out=HOOK)
    ours = time.perf_counter() - t
    m = sae.metrics(model)
    t = time.perf_counter()
    net = plain_loop(x, 400, args.k, args.steps, args.batch, args.lr)
    plain = time.perf_counter() - t
    print(f"analyses.sae: {ours:.1f} s, nmse {m['nmse']:.4f}, L0 {m['l0']:.1f}, dead "
          f"{m['dead_features']}, accuracy spliced {m['accuracy_spliced']:.4f} "
          f"(clean {m['accuracy_clean']:.4f})")
    print(f"plain loop:   {plain:.1f} s, nmse {nmse_plain(net, x, args.k):.4f}")
    print(f"ratio plain/ours {plain / ours:.2f}; goal: <= 30 s to nmse <= {TARGET_NMSE}: "
          f"{'met' if ours <= 30 and m['nmse'] <= TARGET_NMSE else 'NOT met'}")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
