"""The model family's mathematics, written once: parameter shapes, initialisation, forward pass.

    pre_0  = T[a] + T[off + b] (+ b_in)                 off = p, or 0 with tied inputs
           T = E @ W_in                                 the input table [2p (or p), d_hidden]
    post_l = act(pre_l)                                 l = 0 .. n_layers - 1
    pre_l  = post_{l-1} @ W_hidden[l-1] (+ b_hidden[l-1])
    logits = post_{n_layers-1} @ W_out (+ b_out)

(The one-hot matmul of the first layer is a row lookup: `[e_a; e_b] @ W_in = W_in[a] +
W_in[p + b]`, and `(e_a + e_b) @ W_in = W_in[a] + W_in[b]` with tied inputs: `E` is the identity
and `T = W_in`. Any other input encoding (`hooked_mlp.family.INPUT_ENCODINGS`) has `E` `[2p,
d_input]` block-diagonal, row `x` holding `[enc(x); 0]` and row `p + x` `[0; enc(x)]`, so
`T[a] + T[p + b] = [enc(a); enc(b)] @ W_in`: the dense first layer, still one lookup per
operand, and `hook_embed_a` / `hook_embed_b` still see each operand's part.) Every parameter may
carry a leading seed dimension `[S, ...]`, with tokens `[S, batch, 2]`: the trainer runs `S`
models in one pass with batched matrix products (its gradients: `hooked_mlp.gradients`, held
equal to autograd through this function). `HookedMLP.forward` calls it with hook points.
Activations and operations come from `hooked_mlp.family`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from hooked_mlp.config import MLPConfig
from hooked_mlp.family import ACTIVATIONS, INPUT_ENCODINGS
from hooked_mlp.shapes import (
    EncodingMatrix,
    SeedHidden,
    SeedInputTable,
    SeedInputWeights,
    SeedLogits,
    SeedRows,
    SeedTokens,
)

Hook = Callable[[str, Tensor], Tensor]


# hook names of hooked-mlp 0.1 and what they are called now (to say so when one is used)
RENAMED_HOOKS = {"hook_pre": "blocks.0.mlp.hook_pre", "hook_post": "blocks.0.mlp.hook_post"}


def hook_widths(cfg: MLPConfig) -> dict[str, int]:
    """Every hook point of a model with configuration `cfg`, in the order the forward meets
    them (TransformerLens's `blocks.{layer}.mlp.hook_*` scheme for the hidden layers), with the
    width of the activation it sees, `[batch, width]`: `d_hidden` for the operands' rows of the
    input table and the hidden layers, `p` for the logits."""
    widths = {"hook_embed_a": cfg.d_hidden, "hook_embed_b": cfg.d_hidden}
    for layer in range(cfg.n_layers):
        widths[f"blocks.{layer}.mlp.hook_pre"] = cfg.d_hidden
        widths[f"blocks.{layer}.mlp.hook_post"] = cfg.d_hidden
    widths["hook_logits"] = cfg.d_output
    return widths


def hook_names(cfg: MLPConfig) -> list[str]:
    """Every hook point of a model with configuration `cfg`, in the order the forward meets
    them (see `hook_widths`)."""
    return list(hook_widths(cfg))


def param_shapes(cfg: MLPConfig) -> dict[str, tuple[int, ...]]:
    """Name and shape of each parameter, in initialisation order.

    `W_in` `[d_input, d_hidden]` (`d_input` = twice the encoding's width, 2p for one-hot, or
    once with tied inputs: `MLPConfig.d_input`), `b_in` `[d_hidden]`,
    `W_hidden` `[n_layers - 1, d_hidden, d_hidden]` and `b_hidden` `[n_layers - 1, d_hidden]`
    (deeper models only), `W_out` `[d_hidden, p]`, `b_out` `[p]`; no biases with `bias=False`.
    """
    H, L = cfg.d_hidden, cfg.n_layers
    shapes: dict[str, tuple[int, ...]] = {"W_in": (cfg.d_input, H)}
    if cfg.bias:
        shapes["b_in"] = (H,)
    if L > 1:
        shapes["W_hidden"] = (L - 1, H, H)
        if cfg.bias:
            shapes["b_hidden"] = (L - 1, H)
    shapes["W_out"] = (H, cfg.d_output)
    if cfg.bias:
        shapes["b_out"] = (cfg.d_output,)
    return shapes


def fan_in(cfg: MLPConfig, name: str) -> int:
    """The inputs feeding the layer that parameter `name` belongs to."""
    return cfg.d_input if name in ("W_in", "b_in") else cfg.d_hidden


def init_params(cfg: MLPConfig, seed: int) -> dict[str, Tensor]:
    """The initial parameters for `seed`: `init_scale * U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.

    `nn.Linear`'s default (with `init_scale = 1`), drawn on the CPU from a generator seeded with
    `seed`, one parameter after another in the order of `param_shapes`, so that a seed gives the
    same start on every device. For the study's configuration this is the order W_in, b_in,
    W_out, b_out of every model this project has trained.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in param_shapes(cfg).items():
        bound = cfg.init_scale / math.sqrt(fan_in(cfg, name))
        out[name] = torch.empty(shape).uniform_(-bound, bound, generator=gen)
    return out


def _affine(x: Tensor, W: Tensor, b: Tensor | None) -> Tensor:
    """`x @ W + b` for `x` `[B, i]`, `W` `[i, o]`, or with a seed dimension in front of each."""
    if x.ndim == 2:
        return x @ W if b is None else torch.addmm(b, x, W)
    return torch.bmm(x, W) if b is None else torch.baddbmm(b.unsqueeze(-2), x, W)


def table_rows(cfg: MLPConfig) -> int:
    """Rows of the input table `T = E @ W_in`: `2p` (one row per operand and residue), or `p`
    with tied inputs."""
    return cfg.p if cfg.tied_inputs else 2 * cfg.p


@functools.cache
def _encoding_matrix(p: int, encoding: str, tied: bool, device: torch.device,
                     dtype: torch.dtype) -> Tensor:
    x = torch.arange(p, device=device)
    enc = INPUT_ENCODINGS[encoding].features(x, p).to(dtype)  # [p, width]
    if tied:
        return enc
    zero = torch.zeros_like(enc)
    return torch.cat([torch.cat([enc, zero], 1), torch.cat([zero, enc], 1)], 0)


def encoding_matrix(cfg: MLPConfig, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> EncodingMatrix:
    """`E` `[table_rows(cfg), d_input]`: the encoded input of each operand and residue, row `x`
    `[enc(x); 0]` (operand `a`) and row `p + x` `[0; enc(x)]` (operand `b`), or `enc(x)` with
    tied inputs. The identity for one-hot inputs. (Not to be modified: it is cached.)"""
    return _encoding_matrix(cfg.p, cfg.input_encoding, cfg.tied_inputs, torch.device(device),
                            dtype)


def input_table(cfg: MLPConfig, W_in: SeedInputWeights) -> SeedInputTable:
    """`T = E @ W_in` `[..., table_rows(cfg), d_hidden]`: what each operand and residue adds to
    the first pre-activation (`W_in` itself for one-hot inputs, no copy)."""
    if cfg.input_encoding == "one_hot":
        return W_in
    return encoding_matrix(cfg, W_in.device, W_in.dtype) @ W_in


def input_rows(cfg: MLPConfig, tokens: SeedTokens) -> SeedRows:
    """The rows of the input table (`input_table`; `W_in` itself for one-hot inputs) that
    `(a, b)` select: int64 `[..., batch, 2]` (`a`, and `p + b`, or `b` with tied inputs). With a
    seed dimension (`tokens` `[S, batch, 2]`) the rows index the table flattened over seeds
    (`[S * table_rows, d_hidden]`), so one lookup serves every seed."""
    rows = tokens if cfg.tied_inputs else tokens + tokens.new_tensor([0, cfg.p])
    if tokens.ndim == 3:
        rows = rows + (torch.arange(tokens.shape[0], device=tokens.device)
                       * table_rows(cfg)).view(-1, 1, 1)
    return rows


def forward(
    cfg: MLPConfig, params: Mapping[str, Tensor], tokens: SeedTokens, hook: Hook | None = None
) -> SeedLogits:
    """Logits `[..., batch, p]` of the model `params` (see `param_shapes`) on `tokens`.

    `tokens` are int64 `[..., batch, 2]` holding `(a, b)` in `[0, p)` (not checked here: see
    `HookedMLP.check_tokens`). Each parameter may have one leading seed dimension `S`, matched
    by tokens `[S, batch, 2]`. `hook(name, value)` sees (and may replace) every intermediate
    value named in `hook_names(cfg)`.
    """
    return forward_rows(cfg, params, input_rows(cfg, tokens), hook)


def forward_rows(
    cfg: MLPConfig, params: Mapping[str, Tensor], rows: SeedRows, hook: Hook | None = None
) -> SeedLogits:
    """`forward` from the input rows (`input_rows(cfg, tokens)`), which a trainer computes once
    per epoch rather than once per step."""
    post = hidden_rows(cfg, params, rows, hook)
    logits = _affine(post, params["W_out"], params.get("b_out"))  # [..., B, p]
    return logits if hook is None else hook("hook_logits", logits)


def hidden_rows(
    cfg: MLPConfig, params: Mapping[str, Tensor], rows: SeedRows, hook: Hook | None = None,
    layers: int | None = None,
) -> SeedHidden:
    """The post-activations `[..., B, d_hidden]` of hidden layer `layers - 1` (default: the
    last), from the input rows: the model up to, not including, its readout."""
    act = ACTIVATIONS[cfg.activation].fn
    table = input_table(cfg, params["W_in"])  # [(S,) table_rows, H]
    W_flat = table.reshape(-1, table.shape[-1])  # [(S *) table_rows, H]
    if hook is None:  # one lookup of both rows; its backward adds in sample order
        pre = F.embedding(rows.flatten(-2), W_flat).unflatten(-2, (-1, 2)).sum(-2)
    else:
        pre = hook("hook_embed_a", F.embedding(rows[..., 0], W_flat)) + hook(
            "hook_embed_b", F.embedding(rows[..., 1], W_flat))
    if cfg.bias:
        pre = pre + params["b_in"].unsqueeze(-2)  # [..., B, H]
    post = pre
    for layer in range(cfg.n_layers if layers is None else layers):
        if layer:
            W = params["W_hidden"][..., layer - 1, :, :]  # [..., H, H]
            b = params["b_hidden"][..., layer - 1, :] if cfg.bias else None
            pre = _affine(post, W, b)
        if hook is not None:
            pre = hook(f"blocks.{layer}.mlp.hook_pre", pre)
        post = act(pre)  # [..., B, H]
        if hook is not None:
            post = hook(f"blocks.{layer}.mlp.hook_post", post)
    return post


def hidden_activations(
    cfg: MLPConfig, params: Mapping[str, Tensor], tokens: SeedTokens, layer: int = -1
) -> SeedHidden:
    """The post-activations `[..., batch, d_hidden]` of hidden layer `layer` (default the
    last) on `tokens`."""
    if isinstance(layer, bool) or not isinstance(layer, int) or not (
            -cfg.n_layers <= layer < cfg.n_layers):
        raise ValueError(f"layer must be an integer in [{-cfg.n_layers}, {cfg.n_layers - 1}], "
                         f"got {layer!r}")
    return hidden_rows(cfg, params, input_rows(cfg, tokens), layers=layer % cfg.n_layers + 1)
