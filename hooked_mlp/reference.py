"""The plain one-hot `nn.Sequential` form of a model, and the training loop one would write by hand.

`sequential(cfg, params)` is the model as `nn.Sequential(Linear, act, Linear, ..., Linear)` on
the one-hot input (`one_hot_input`: `[e_a; e_b]`, or `e_a + e_b` with tied inputs), with
`nn.Linear`'s `[out, in]` weights. `reference_train` trains it with autograd and
`torch.optim.AdamW`, fed the same initialisation and the same batches as
`hooked_mlp.training.trainer`
for a seed. Slow on purpose: tests and `bench/` use it to show that the trainer computes the same
thing, and to measure how much faster it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hooked_mlp.config import MLPConfig, TrainConfig
from hooked_mlp.data import STREAM_SHUFFLE, all_pairs, apply_operation, permutations, split_mask
from hooked_mlp.family import ACTIVATIONS, INPUT_ENCODINGS
from hooked_mlp.functional import init_params


class Activation(nn.Module):
    """An activation of `hooked_mlp.family.ACTIVATIONS` as a module (for `nn.Sequential`)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.fn = ACTIVATIONS[name].fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


def one_hot_input(tokens: Tensor, cfg: MLPConfig, dtype: torch.dtype = torch.float32) -> Tensor:
    """The input vector of `tokens` `[n, 2]`: `[e_a; e_b]` `[n, 2p]`, or `e_a + e_b` `[n, p]`
    with tied inputs; for another `cfg.input_encoding`, `[enc(a); enc(b)]` `[n, d_input]` (or
    `enc(a) + enc(b)`) with `enc` from `hooked_mlp.family.INPUT_ENCODINGS`."""
    features = INPUT_ENCODINGS[cfg.input_encoding].features
    a = features(tokens[:, 0], cfg.p).to(dtype)
    b = features(tokens[:, 1], cfg.p).to(dtype)
    return a + b if cfg.tied_inputs else torch.cat([a, b], dim=1)


def linear_state_dict(cfg: MLPConfig, params: dict[str, Tensor]) -> dict[str, Tensor]:
    """`params` (`x @ W` orientation) as the state dict of `sequential(cfg)`: keys `0.weight`,
    `0.bias`, `2.weight`, ... in `nn.Linear`'s `[out, in]` orientation."""
    linears = [(params["W_in"], params.get("b_in"))]
    for layer in range(cfg.n_layers - 1):
        b = params["b_hidden"][layer] if cfg.bias else None
        linears.append((params["W_hidden"][layer], b))
    linears.append((params["W_out"], params.get("b_out")))
    out: dict[str, Tensor] = {}
    for i, (W, b) in enumerate(linears):
        out[f"{2 * i}.weight"] = W.detach().t().contiguous()
        if b is not None:
            out[f"{2 * i}.bias"] = b.detach().clone()
    return out


def linear_shapes(cfg: MLPConfig) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of `sequential(cfg)`'s state dict (`nn.Linear`'s `[out, in]`)."""
    widths = [cfg.d_input] + [cfg.d_hidden] * cfg.n_layers + [cfg.d_output]
    out: dict[str, tuple[int, ...]] = {}
    for i in range(len(widths) - 1):
        out[f"{2 * i}.weight"] = (widths[i + 1], widths[i])
        if cfg.bias:
            out[f"{2 * i}.bias"] = (widths[i + 1],)
    return out


def params_from_linear(cfg: MLPConfig, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of `linear_state_dict`."""
    L = cfg.n_layers
    out = {"W_in": state["0.weight"].t()}
    if cfg.bias:
        out["b_in"] = state["0.bias"]
    if L > 1:
        out["W_hidden"] = torch.stack([state[f"{2 * i}.weight"].t() for i in range(1, L)])
        if cfg.bias:
            out["b_hidden"] = torch.stack([state[f"{2 * i}.bias"] for i in range(1, L)])
    out["W_out"] = state[f"{2 * L}.weight"].t()
    if cfg.bias:
        out["b_out"] = state[f"{2 * L}.bias"]
    return {k: v.detach().contiguous() for k, v in out.items()}


def sequential(cfg: MLPConfig, params: dict[str, Tensor] | None = None) -> nn.Sequential:
    """The model as `nn.Sequential(Linear, act, ..., Linear)` on `one_hot_input`, holding
    `params` (default: the initialisation of seed 0)."""
    widths = [cfg.d_input] + [cfg.d_hidden] * cfg.n_layers + [cfg.d_output]
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        if i:
            layers.append(Activation(cfg.activation))
        layers.append(nn.Linear(widths[i], widths[i + 1], bias=cfg.bias))
    params = init_params(cfg, 0) if params is None else params
    W = params["W_in"]
    seq = nn.Sequential(*layers).to(device=W.device, dtype=W.dtype)
    seq.load_state_dict(linear_state_dict(cfg, params))
    return seq


def reference_train(
    cfg: MLPConfig, tcfg: TrainConfig, epochs: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """Train `sequential(cfg)` with autograd for `epochs` (default `tcfg.epochs`); returns the
    parameters in `x @ W` orientation (`functional.param_shapes` names).

    `dtype=torch.float64` runs the same steps in double precision (from the same float32
    initialisation): a yardstick for how far any float32 implementation drifts from the exact
    steps, since Adam magnifies last-bit differences in gradients that are near zero.
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    model = sequential(cfg, init_params(cfg, tcfg.seed)).to(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay,
                            betas=(tcfg.beta1, tcfg.beta2), eps=tcfg.eps)
    pairs = all_pairs(cfg.p)
    labels = apply_operation(pairs, cfg.p, cfg.operation)
    train_idx = split_mask(cfg, tcfg.train_frac, tcfg.effective_split_seed).nonzero().flatten()
    for epoch in range(tcfg.epochs if epochs is None else epochs):
        perm = permutations(torch.tensor([tcfg.seed]), STREAM_SHUFFLE, epoch, len(train_idx))[0]
        order = train_idx[perm]
        for lo in range(0, len(order), tcfg.batch_size):
            idx = order[lo : lo + tcfg.batch_size]
            loss = F.cross_entropy(model(one_hot_input(pairs[idx], cfg, dtype)), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return params_from_linear(cfg, model.state_dict())
