"""The gradients of the training loss, derived by hand: an accelerator of autograd for the trainer.

The loss is the mean cross-entropy of `hooked_mlp.functional.forward_rows` (the one definition of
the model; its forward pass is called here, with a hook that keeps the intermediate values).
Its gradient with respect to every parameter is written out layer by layer:

    d_logits = (softmax(logits) - onehot(y)) / batch
    dW_out   = post_L^T d_logits          db_out = sum over the batch of d_logits
    d_post_L = d_logits W_out^T
    d_pre_l  = act'(pre_l) * d_post_l     (the activation's own backward kernel, below)
    dW_hidden[l-1] = post_{l-1}^T d_pre_l, d_post_{l-1} = d_pre_l W_hidden[l-1]^T, ...
    dT[a] += d_pre_1, dT[off + b] += d_pre_1, db_in = sum over the batch of d_pre_1
    dW_in    = E^T dT                     (the input table T = E @ W_in; E = I for one-hot)

For `S` seeds at once (parameters `[S, ...]`, rows `[S, batch, 2]`), each seed's gradient is that
of its own mean loss. Fewer operations than autograd's through the same forward pass, and no
graph: the trainer's general path takes its gradients from here (`bench/members.py` measures
both). The activations' derivatives use torch's own backward kernels; an activation
that has none listed in `ACTIVATION_BACKWARD` is differentiated by autograd (so a new activation
of `hooked_mlp.family` needs nothing here). Tests hold `loss_and_grads` equal to autograd through
`functional.forward_rows` for every member of the family.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from hooked_mlp import functional
from hooked_mlp.config import MLPConfig
from hooked_mlp.family import ACTIVATIONS


def _relu_backward(grad: Tensor, pre: Tensor) -> Tensor:
    return torch.ops.aten.threshold_backward(grad, pre, 0)


def _gelu_backward(grad: Tensor, pre: Tensor) -> Tensor:
    return torch.ops.aten.gelu_backward(grad, pre)


def _silu_backward(grad: Tensor, pre: Tensor) -> Tensor:
    return torch.ops.aten.silu_backward(grad, pre)


def _quad_backward(grad: Tensor, pre: Tensor) -> Tensor:
    gx = grad * pre  # autograd's x * x: grad * x from each factor, added
    return gx + gx


def _identity_backward(grad: Tensor, pre: Tensor) -> Tensor:
    return grad


# `d_pre` from `d_post` and `pre`, per activation of `hooked_mlp.family.ACTIVATIONS`
ACTIVATION_BACKWARD: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "relu": _relu_backward,
    "gelu": _gelu_backward,
    "silu": _silu_backward,
    "quad": _quad_backward,
    "identity": _identity_backward,
}


def _activation_backward(cfg: MLPConfig) -> Callable[[Tensor, Tensor], Tensor]:
    known = ACTIVATION_BACKWARD.get(cfg.activation)
    if known is not None:
        return known
    fn = ACTIVATIONS[cfg.activation].fn

    def by_autograd(grad: Tensor, pre: Tensor) -> Tensor:
        with torch.enable_grad():
            leaf = pre.detach().requires_grad_()
            return torch.autograd.grad(fn(leaf), leaf, grad)[0]

    return by_autograd


def _tn(x: Tensor) -> Tensor:
    """The transpose of the last two dimensions."""
    return x.transpose(-1, -2)


@torch.no_grad()
def loss_and_grads(
    cfg: MLPConfig, params: Mapping[str, Tensor], rows: Tensor, labels: Tensor,
    grads: Mapping[str, Tensor],
) -> tuple[Tensor, Tensor]:
    """One training step's loss and gradients, for `S` seeds at once.

    `params` and `grads` map every name of `functional.param_shapes(cfg)` to `[S, *shape]`
    tensors (the gradients are written into `grads`, overwriting them); `rows` are the input rows
    `[S, B, 2]` (`functional.input_rows`) and `labels` int64 `[S, B]`. Returns the per-sample
    losses `[S, B]` and the logits `[S, B, p]`; the gradient of seed `s` is that of the mean
    of its `B` losses.
    """
    saved: dict[str, Tensor] = {}

    def keep(name: str, value: Tensor) -> Tensor:
        saved[name] = value
        return value

    logits = functional.forward_rows(cfg, params, rows, keep)  # [S, B, p]
    B = rows.shape[-2]
    logp = logits.log_softmax(-1)
    y = labels.unsqueeze(-1)
    per_sample = logp.gather(-1, y).squeeze(-1).neg_()  # [S, B]
    d = logp.exp_()  # softmax, in place of logp (no longer needed)
    d.scatter_add_(-1, y, torch.full_like(y, -1, dtype=d.dtype)).div_(B)  # [S, B, p]

    act_backward = _activation_backward(cfg)
    L = cfg.n_layers
    post = saved[f"blocks.{L - 1}.mlp.hook_post"]  # [S, B, H]
    torch.bmm(_tn(post), d, out=grads["W_out"])
    if cfg.bias:
        torch.sum(d, 1, out=grads["b_out"])
    d_post = torch.bmm(d, _tn(params["W_out"]))  # [S, B, H]
    for layer in range(L - 1, -1, -1):
        d_pre = act_backward(d_post, saved[f"blocks.{layer}.mlp.hook_pre"])
        if layer:
            below = saved[f"blocks.{layer - 1}.mlp.hook_post"]
            torch.bmm(_tn(below), d_pre, out=grads["W_hidden"][:, layer - 1])
            if cfg.bias:
                torch.sum(d_pre, 1, out=grads["b_hidden"][:, layer - 1])
            d_post = torch.bmm(d_pre, _tn(params["W_hidden"][:, layer - 1]))
    if cfg.bias:
        torch.sum(d_pre, 1, out=grads["b_in"])
    # the first layer is a lookup of rows a and off + b of the input table T = E @ W_in
    # (flattened over seeds; T = W_in for one-hot inputs): its gradient adds each sample's d_pre
    # into both rows, samples in order; then dW_in = E^T dT
    # (`grads` may be views with a stride of their own between seeds, as the trainer's rows of
    # one flat buffer are: the lookup's gradient is then gathered in a table of its own, which
    # changes no value, only where it is added up)
    g_in = grads["W_in"]
    one_hot = cfg.input_encoding == "one_hot"
    g_table = g_in if one_hot and g_in.is_contiguous() else g_in.new_empty(
        (*g_in.shape[:-2], functional.table_rows(cfg), g_in.shape[-1]))
    g_flat = g_table.view(-1, g_table.shape[-1])  # [S * table_rows, H]
    g_flat.zero_()
    src = d_pre.reshape(-1, d_pre.shape[-1])  # [S * B, H]
    g_flat.index_add_(0, rows[..., 0].reshape(-1), src)
    g_flat.index_add_(0, rows[..., 1].reshape(-1), src)
    if not one_hot:
        E = functional.encoding_matrix(cfg, g_in.device, g_in.dtype)  # [table_rows, d_input]
        g_in.copy_(torch.matmul(_tn(E), g_table))
    elif g_table is not g_in:
        g_in.copy_(g_table)
    return per_sample, logits
