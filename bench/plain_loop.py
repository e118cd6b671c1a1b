"""The baseline: a plain PyTorch loop, the way the source study trains.

One-hot inputs, `nn.Sequential(Linear(2p, h), ReLU(), Linear(h, p))`, a `DataLoader` that
shuffles, `CrossEntropyLoss`, `torch.optim.AdamW`; torch's default thread count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class PlainLoop:
    def __init__(self, p: int = 113, d_hidden: int = 100, batch_size: int = 128, seed: int = 0):
        torch.manual_seed(seed)
        a = torch.arange(p).repeat_interleave(p)
        b = torch.arange(p).repeat(p)
        x = torch.cat([F.one_hot(a, p), F.one_hot(b, p)], dim=1).float()
        y = (a + b) % p
        perm = torch.randperm(p * p)
        n_train = int(0.8 * p * p)
        self.train = TensorDataset(x[perm[:n_train]], y[perm[:n_train]])
        self.val = (x[perm[n_train:]], y[perm[n_train:]])
        self.loader = DataLoader(self.train, batch_size=batch_size, shuffle=True)
        self.model = nn.Sequential(nn.Linear(2 * p, d_hidden), nn.ReLU(), nn.Linear(d_hidden, p))
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
