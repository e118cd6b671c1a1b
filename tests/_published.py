"""Checkpoints in He et al.'s published layout (Y-Agent/modular-addition-feature-learning), built
here from the facts of that codebase (key names, shapes, what each file holds), for the tests of
the importer and of the analyses that run on an imported model.

Their model (`EmbedMLP`): an embedding, then one MLP layer, no biases:
- one-hot (`embed_type='one_hot'`): the input is `e_a + e_b` (`[p]`), so `d_model = p`;
- learned (`embed_type='learned'`): `embed.W_E [d_model, p]`, the input `W_E[:, a] + W_E[:, b]`;
- `mlp.W_in [d_mlp, d_model]`, `pre = W_in @ x`, an activation (`ReLU`, `GeLU`, `Quad`, `Id`),
  `mlp.W_out [p, d_mlp]`, `logits = W_out @ post`, and a Fourier basis buffer `mlp.basis [p, p]`
  (a constant row, then cos and sin rows of each frequency, each of unit norm).

Their run folder `saved_models/<run name>/`: `<epoch>.pth` every `save_every` epochs, each
`{'model': state_dict, 'train_loss', 'test_loss', 'grad_norm', 'param_norm', 'test_accuracy',
'train_accuracy', 'epoch'}`; `final.pth` with `'epoch': num_epochs`, the loss lists and the
optimizer's and scheduler's state dicts; and the split beside them, `train_data.pth` and
`test_data.pth`, each a tuple `(pairs [n, 2] int64, labels [n] int64)`.

    from _published import PublishedRun, write_run
    run = write_run(tmp_path / "run", p=23, d_mlp=64, act="ReLU", embed="learned")
    model = import_mlp(run.final, activation="relu")        # run.final: final.pth
    series = load_snapshots(run.folder, activation="relu")
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ACTS = {"ReLU": torch.relu, "GeLU": F.gelu, "Quad": torch.square, "Id": lambda x: x}
OUR_NAMES = {"ReLU": "relu", "GeLU": "gelu", "Quad": "quad", "Id": "identity"}


def fourier_basis(p: int) -> torch.Tensor:
    """`[p, p]`: the constant row, then cos k and sin k for k = 1..p//2 (and cos p/2 for an even
    p), each normalised to unit length."""
    x = torch.arange(p, dtype=torch.float32)
    rows = [torch.ones(p) / math.sqrt(p)]
    for k in range(1, p // 2 + 1):
        for f in (torch.cos, torch.sin):
            r = f(2 * math.pi * k * x / p)
            if r.norm() > 1e-6:
                rows.append(r / r.norm())
    return torch.stack(rows[:p])


class PublishedMLP(nn.Module):
    """The published model's parameters and forward pass (their names, their orientation)."""

    def __init__(self, p: int, d_mlp: int, act: str = "ReLU", embed: str = "one_hot",
                 d_model: int | None = None, init_scale: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d = p if embed == "one_hot" else (d_model or p)
        self.p, self.act, self.embed_type = p, act, embed
        self.embed = nn.Module()
        if embed == "learned":
            self.embed.W_E = nn.Parameter(torch.randn(d, p, generator=g) / math.sqrt(d))
        self.mlp = nn.Module()
        self.mlp.W_in = nn.Parameter(init_scale * torch.randn(d_mlp, d, generator=g)
                                     / math.sqrt(d))
        self.mlp.W_out = nn.Parameter(init_scale * torch.randn(p, d_mlp, generator=g)
                                      / math.sqrt(d))
        self.mlp.register_buffer("basis", fourier_basis(p))

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:  # [batch, 2] -> [batch, p]
        a, b = pairs[:, 0], pairs[:, 1]
        if self.embed_type == "learned":
            x = self.embed.W_E[:, a].T + self.embed.W_E[:, b].T  # [batch, d_model]
        else:
            x = F.one_hot(a, self.p).float() + F.one_hot(b, self.p).float()
        return ACTS[self.act](x @ self.mlp.W_in.T) @ self.mlp.W_out.T


@dataclass
class PublishedRun:
    folder: Path
    epochs: list[int]  # the epochs of the <epoch>.pth files
    final: Path  # final.pth (records epoch = num_epochs)
    model: PublishedMLP  # the trained source model (its final weights)
    act: str  # our name for its activation


def write_run(folder: Path, p: int = 23, d_mlp: int = 64, act: str = "ReLU",
              embed: str = "one_hot", d_model: int | None = None, num_epochs: int = 1000,
              save_every: int = 200, frac_train: float = 0.6, lr: float = 1e-2,
              weight_decay: float = 1.0, seed: int = 0) -> PublishedRun:
    """Train a published-layout model full batch with AdamW for `num_epochs` steps and write its
    folder as their trainer does (a few seconds at the defaults)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = PublishedMLP(p, d_mlp, act, embed, d_model, seed=seed)
    pairs = torch.cartesian_prod(torch.arange(p), torch.arange(p))
    labels = (pairs[:, 0] + pairs[:, 1]) % p
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
    n = int(frac_train * len(pairs))
    train, test = (pairs[order[:n]], labels[order[:n]]), (pairs[order[n:]], labels[order[n:]])
    torch.save(train, folder / "train_data.pth")
    torch.save(test, folder / "test_data.pth")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                            betas=(0.9, 0.98))
    epochs, losses = [], []
    for epoch in range(num_epochs):
        loss = F.cross_entropy(model(train[0]).double(), train[1])
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
        if epoch % save_every == 0:
            torch.save({"model": model.state_dict(), "train_loss": losses[-1], "epoch": epoch},
                       folder / f"{epoch}.pth")
            epochs.append(epoch)
    torch.save({"model": model.state_dict(), "train_losses": losses, "epoch": num_epochs,
                "optimizer": opt.state_dict()}, folder / "final.pth")
    return PublishedRun(folder, epochs, folder / "final.pth", model.eval(), OUR_NAMES[act])
