"""The straightforward training loop that the fast trainer is checked against.

One-hot inputs, `x @ W` matmuls, autograd, `torch.optim.AdamW`: what one would write by hand,
fed the same initialisation and the same batches as `hooked_mlp.training` for a seed. Slow on
purpose; tests and `bench/` use it to show the fast path computes the same thing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hooked_mlp.config import MLPConfig, TrainConfig
from hooked_mlp.data import STREAM_SHUFFLE, dataset, permutations, split_mask
from hooked_mlp.params import init_params


def reference_train(
    cfg: MLPConfig, tcfg: TrainConfig, epochs: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """Train with autograd for `epochs` (default `tcfg.epochs`); returns the parameters.

    `dtype=torch.float64` runs the same steps in double precision (from the same float32
    initialisation): a yardstick for how far any float32 implementation drifts from the exact
    steps, since Adam magnifies last-bit differences in gradients that are near zero.
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    p = cfg.p
    params = {k: v.to(dtype).clone().requires_grad_(True)
              for k, v in init_params(cfg, tcfg.seed).items()}
    opt = torch.optim.AdamW(list(params.values()), lr=tcfg.lr, weight_decay=tcfg.weight_decay,
                            betas=(tcfg.beta1, tcfg.beta2), eps=tcfg.eps)
    pairs, labels = dataset(cfg)
    train_idx = split_mask(p, tcfg.train_frac, tcfg.effective_split_seed).nonzero().flatten()
    for epoch in range(tcfg.epochs if epochs is None else epochs):
        perm = permutations(torch.tensor([tcfg.seed]), STREAM_SHUFFLE, epoch, len(train_idx))[0]
        order = train_idx[perm]
        for lo in range(0, len(order), tcfg.batch_size):
            idx = order[lo : lo + tcfg.batch_size]
            x = torch.cat([F.one_hot(pairs[idx, 0], p), F.one_hot(pairs[idx, 1], p)], 1).to(dtype)
            hidden = torch.relu(x @ params["W_in"] + params["b_in"])
            loss = F.cross_entropy(hidden @ params["W_out"] + params["b_out"], labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {k: v.detach() for k, v in params.items()}
