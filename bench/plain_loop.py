"""The baseline: a plain PyTorch loop, the way the source study trains.

One-hot inputs, the member as `nn.Sequential(Linear, act, ..., Linear)` (for the study:
`Linear(2p, h), ReLU(), Linear(h, p)`), a `DataLoader` that shuffles, `CrossEntropyLoss`,
`torch.optim.AdamW`; torch's default thread count.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hooked_mlp import MLPConfig
from hooked_mlp.data import dataset
from hooked_mlp.functional import init_params
from hooked_mlp.reference import one_hot_input, sequential


class PlainLoop:
    def __init__(self, cfg: MLPConfig | None = None, batch_size: int = 128, seed: int = 0):
        cfg = MLPConfig() if cfg is None else cfg
        torch.manual_seed(seed)
        tokens, y = dataset(cfg)
        x = one_hot_input(tokens, cfg)
        perm = torch.randperm(len(tokens))
        n_train = int(0.8 * len(tokens))
        self.train = TensorDataset(x[perm[:n_train]], y[perm[:n_train]])
        self.val = (x[perm[n_train:]], y[perm[n_train:]])
        self.loader = DataLoader(self.train, batch_size=batch_size, shuffle=True)
        self.model = sequential(cfg, init_params(cfg, seed))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=3e-3, weight_decay=0.5)
        self.loss_fn = nn.CrossEntropyLoss()

    def epoch(self) -> tuple[float, float]:
        """One epoch of training, then the validation accuracy (as such loops report)."""
        total = 0.0
        for xb, yb in self.loader:
            loss = self.loss_fn(self.model(xb), yb)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            total += loss.item()
        with torch.no_grad():
            acc = (self.model(self.val[0]).argmax(-1) == self.val[1]).float().mean().item()
        return total / len(self.loader), acc
