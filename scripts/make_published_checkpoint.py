"""Train the checkpoint in He et al.'s published layout that ships as
`hooked_mlp/pretrained/published-p23-relu.pth` (`analyses.experiments.published`).

    .venv/bin/python scripts/make_published_checkpoint.py            # writes the shipped file
    .venv/bin/python scripts/make_published_checkpoint.py --out x.pth --epochs 500

The recipe is their "grokking" run's (one-hot inputs, ReLU, random init at scale 0.1, AdamW with
betas (0.9, 0.98) and a linear warm-up over 10 steps, full batch, 75 % of the pairs for training,
the split drawn by `torch.randperm` after seeding), shortened to fit a small file: p = 23,
128 neurons instead of 512, 2,500 epochs at lr 5e-3 and weight decay 0.5 instead of 50,000 at
1e-4 and 2.0 (at p = 23 it reaches 97.7 % test accuracy; 1e-3 and 1.0 stop at 94 %).
The file is what their trainer's `post_training_save` writes: the model's state dict
(`mlp.W_in`, `mlp.W_out`, `mlp.basis`), the last losses, one train and test loss, gradient norm
and parameter norm per epoch, `epoch`, and the optimizer's and scheduler's states (166,729
bytes; the same bytes on every run here).

Deterministic: one thread, float32 on the CPU, seed 42; written atomically. The report reads the
shipped file (its numbers depend on that file only), never a run of this script.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analyses.experiments.published import PUBLISHED_CHECKPOINT, published_logits  # noqa: E402
from hooked_mlp.data import all_pairs  # noqa: E402
from hooked_mlp.files.format import atomic_write_bytes  # noqa: E402


def fourier_basis(p: int) -> torch.Tensor:
    """Their `mlp.basis` buffer `[p, p]`: the constant row, then cos k and sin k for k = 1..p//2,
    each of unit norm (p odd)."""
    x = torch.arange(p, dtype=torch.float32)
    rows = [torch.ones(p) / math.sqrt(p)]
    for k in range(1, p // 2 + 1):
        for wave in (torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)):
            rows.append(wave / wave.norm())
    return torch.stack(rows)


def train(p: int, d_mlp: int, epochs: int, lr: float, weight_decay: float, frac_train: float,
          init_scale: float, seed: int) -> dict:
    torch.manual_seed(seed)
    w_in = torch.nn.Parameter(init_scale * torch.randn(d_mlp, p) / math.sqrt(p))
    w_out = torch.nn.Parameter(init_scale * torch.randn(p, d_mlp) / math.sqrt(p))
    pairs = all_pairs(p)  # [p^2, 2], row a * p + b
    labels = (pairs[:, 0] + pairs[:, 1]) % p
    order = torch.randperm(len(pairs))
    n = int(frac_train * len(pairs))
    train_idx, test_idx = order[:n], order[n:]
    opt = torch.optim.AdamW([w_in, w_out], lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lambda step: min(step / 10, 1))
    basis = fourier_basis(p)
    curves = {k: [] for k in ("train_losses", "test_losses", "grad_norms", "param_norms",
                              "train_accs", "test_accs")}
    for _ in range(epochs):
        state = {"mlp.W_in": w_in, "mlp.W_out": w_out}
        logits = published_logits(state, pairs, "ReLU").float()
        losses = [F.cross_entropy(logits[i], labels[i]) for i in (train_idx, test_idx)]
        curves["train_losses"].append(losses[0].item())
        curves["test_losses"].append(losses[1].item())
        for key, i in (("train_accs", train_idx), ("test_accs", test_idx)):
            curves[key].append(float((logits[i].argmax(-1) == labels[i]).float().mean()))
        losses[0].backward()
        curves["grad_norms"].append(math.sqrt(sum(w.grad.norm().item() ** 2
                                                  for w in (w_in, w_out))))
        curves["param_norms"].append(math.sqrt(sum(w.norm().item() ** 2 for w in (w_in, w_out))))
        opt.step()
        sched.step()
        opt.zero_grad()
    model = {"mlp.W_in": w_in.detach().clone(), "mlp.W_out": w_out.detach().clone(),
             "mlp.basis": basis}
    accs = (curves.pop("train_accs"), curves.pop("test_accs"))
    print(f"p={p} d_mlp={d_mlp} epochs={epochs}: train loss {curves['train_losses'][-1]:.4f} "
          f"test loss {curves['test_losses'][-1]:.4f}, train acc {accs[0][-1]:.3f} test acc "
          f"{accs[1][-1]:.3f}; test acc >= 0.95 first at epoch "
          f"{next((i for i, a in enumerate(accs[1]) if a >= 0.95), None)}")
    return {"model": model, "train_loss": curves["train_losses"][-1],
            "test_loss": curves["test_losses"][-1], **curves, "epoch": epochs,
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=PUBLISHED_CHECKPOINT)
    ap.add_argument("--p", type=int, default=23)
    ap.add_argument("--d-mlp", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2500)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--weight-decay", type=float, default=0.5)
    ap.add_argument("--frac-train", type=float, default=0.75)
    ap.add_argument("--init-scale", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    torch.set_num_threads(1)
    saved = train(args.p, args.d_mlp, args.epochs, args.lr, args.weight_decay, args.frac_train,
                  args.init_scale, args.seed)
    saved["scheduler"].pop("lr_lambdas", None)  # [None]: their lambda is not picklable anyway
    buffer = io.BytesIO()  # torch.save names the archive after the file: one name, same bytes
    torch.save(saved, buffer)
    atomic_write_bytes(args.out, buffer.getvalue())
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
