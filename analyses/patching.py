"""Ablation and activation patching over neurons, attribution patching, path patching.

    from analyses.patching import ablate, neuron_patching, attribution_patching
    with ablate(model, [3, 17], how="mean"):        # a hook on blocks.0.mlp.hook_post
        acc = accuracy(model)                       # every forward sees the ablation
    result = neuron_patching(model, clean, corrupt, metric)   # result.values [n_layers, d_hidden]
    approx = attribution_patching(model, clean, corrupt, metric)
    result.agreement(approx)                        # {"pearson": ..., "max_abs_diff": ...}

- `ablate` replaces chosen neurons' `hook_post` by 0 (`"zero"`), by their mean over a reference
  set of pairs (`"mean"`; default every pair of the dataset), or by their value on another pair
  (`"resample"`: the pair `i = a p + b` gets the activations of reference row `src[i]`, `src`
  a seeded permutation of the reference rows, repeated up to `p^2` entries), so a pair's
  ablated value never depends on which other pairs share its batch. The hook is TL's (the
  model's `hooks()` context), so every analysis that runs the model sees it, and it is
  removed on exit, also after an exception; analyses that compute from the weights refuse a
  hooked model (`analyses._common.check_no_hooks`).
- `neuron_patching`: the metric of the corrupted run with one neuron's clean `hook_post` patched
  in, for every neuron of every layer. All neurons of a layer run in one batched forward of
  the model (its own `forward`, its hooks included): the corrupted batch repeated once per
  neuron, each copy with its own neuron patched, in chunks of at most `max_rows` rows.
- `attribution_patching` (Nanda's linear approximation): `metric(corrupt) + sum_b (clean -
  corrupt)[b, n] * d metric / d post[b, n]` at the corrupted run, from one forward and one
  backward. It equals `neuron_patching` exactly where the metric is linear in the patched
  activation (the last layer's `hook_post` with a metric linear in the logits).
- `path_patching`: neuron to neuron between adjacent hidden layers of a deeper model: the
  metric of the corrupted run when only the edge `sender n -> receiver m` carries the clean
  value, `pre_{l+1}[m] += (clean - corrupt) post_l[n] * W_hidden[l][n, m]`, everything else
  corrupted (the receiver's change then flows to the logits through the rest of the model).
  An MLP has no residual stream, so every path from layer `l` to a later layer passes through
  layer `l + 1`: these edges are all the paths there are.

The metric is a function of the logits `[batch, p]` returning a scalar (a tensor or a float),
e.g. `lambda logits: logits.gather(1, labels[:, None]).mean()`.

TransformerLens's own `transformer_lens.patching`: its `generic_activation_patch` runs on a
`HookedMLP` with an index over layers and neurons and a setter for `[batch, d_hidden]`
activations, both given here (`tl_index_df`, `layer_neuron_patch_setter`,
`layer_patch_setter`):

    from transformer_lens.patching import generic_activation_patch
    _, clean_cache = model.run_with_cache(clean)
    out = generic_activation_patch(model, corrupt, clean_cache, metric,
                                   layer_neuron_patch_setter, "post", index_df=tl_index_df(model))
    # out [n_layers * d_hidden] == neuron_patching(...).values.flatten(), one run per neuron

Its `get_act_patch_*` functions patch transformer components (`resid_pre`, `resid_mid`,
`attn_out`, `mlp_out`, attention heads' `z`, `q`, `k`, `v`, patterns; `..._block_every`,
`..._direct_path`): an MLP has none of those hook points, and their "pos" axis is dimension 1,
which here is the neuron axis, so they cannot apply (see the notes of issue 21 for the list).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from analyses._common import (
    check_all_pairs_memory,
    check_count,
    check_model,
    check_neurons,
    check_seed,
    headline,
    to_jsonable,
)

__all__ = ["HOW", "PatchingResult", "PathPatchingResult", "ablate", "attribution_patching",
           "layer_neuron_patch_setter", "layer_patch_setter", "neuron_patching", "path_patching",
           "tl_index_df"]

HOW = ("zero", "mean", "resample")
MAX_ROWS = 1 << 16  # rows of one batched forward in the patching sweeps
Metric = Callable[[Tensor], Any]


# ----------------------------------------------------------------------------- checks
def _check_layer(model: Any, layer: Any, name: str = "layer") -> int:
    L = model.cfg.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not -L <= layer < L:
        raise ValueError(f"{name} must be an integer in [{-L}, {L - 1}] (the model has {L} "
                         f"hidden layer{'s' if L > 1 else ''}), got {layer!r}")
    return layer % L


def _check_metric(metric: Any) -> None:
    if not callable(metric):
        raise TypeError(f"metric must be a function of the logits [batch, p] returning a "
                        f"scalar, got {type(metric).__name__}")


def _scalar(value: Any) -> float:
    """The metric's answer as a float (a 0-d or one-element tensor, or a number)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"metric must return a scalar, got a tensor of shape "
                             f"{list(value.shape)}")
        return float(value.detach())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metric must return a scalar, got {type(value).__name__}") from None


def _check_pair(model: Any, clean: Any, corrupt: Any) -> tuple[Tensor, Tensor]:
    clean = model.check_tokens(clean)
    corrupt = model.check_tokens(corrupt)
    if clean.shape != corrupt.shape:
        raise ValueError(f"clean_tokens and corrupt_tokens must have the same shape (one "
                         f"corrupted input per clean one), got {list(clean.shape)} and "
                         f"{list(corrupt.shape)}")
    if not clean.shape[0]:
        raise ValueError("clean_tokens and corrupt_tokens must hold at least one pair")
    return clean, corrupt


def _posts(model: Any, tokens: Tensor, layers: Sequence[int]) -> dict[int, Tensor]:
    """`{layer: hook_post [batch, d_hidden]}` on `tokens`, through the model's forward."""
    names = [f"blocks.{layer}.mlp.hook_post" for layer in layers]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names, return_cache_object=False)
    return {layer: cache[name] for layer, name in zip(layers, names, strict=True)}


# ----------------------------------------------------------------------------- ablation
@contextmanager
def ablate(model: Any, neurons: Sequence[int] | Tensor, how: str = "zero", layer: int = 0, *,
           reference: Tensor | None = None, seed: int = 0) -> Iterator[Any]:
    """Within the `with` block, the model's `neurons` of hidden layer `layer` are ablated
    (see the module's docstring): `how` is "zero", "mean" or "resample"; `reference` the pairs
    (int64 `[n, 2]`) whose activations give the mean or the resampled values (default: every
    pair of the dataset); `seed` draws the resampling. The values are computed on entry, from
    the model as it is then (its other hooks included). Yields the model."""
    check_model(model)
    layer = _check_layer(model, layer)
    chosen = check_neurons(neurons, model.cfg.d_hidden)
    if how not in HOW:
        raise ValueError(f"how must be one of {list(HOW)}, got {how!r}")
    check_seed(seed)
    cfg, device = model.cfg, model.device
    keep = torch.ones(cfg.d_hidden, device=device)
    keep[chosen] = 0.0
    name = f"blocks.{layer}.mlp.hook_post"
    tokens_seen: list[Tensor] = []
    handle = None
    if how == "zero":
        def hook(post: Tensor, hook: Any) -> Tensor:
            return post * keep
    else:
        if reference is None:
            from hooked_mlp.data import dataset

            check_all_pairs_memory(cfg, 3 * max(cfg.d_hidden, cfg.p), f"ablate(how={how!r})")
            reference = dataset(cfg, device)[0]
        reference = model.check_tokens(reference)
        if not reference.shape[0]:
            raise ValueError("reference must hold at least one pair")
        table = _posts(model, reference, [layer])[layer] * (1.0 - keep)  # [n, H], chosen only
        if how == "mean":
            mean = table.mean(dim=0)

            def hook(post: Tensor, hook: Any) -> Tensor:
                return post * keep + mean
        else:
            n = table.shape[0]
            g = torch.Generator().manual_seed(seed)
            src = torch.randperm(n, generator=g).repeat(math.ceil(cfg.p ** 2 / n))[: cfg.p ** 2]
            src = src.to(device)

            def record(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                tokens_seen[:] = [args[0] if args else kwargs["tokens"]]

            def hook(post: Tensor, hook: Any) -> Tensor:
                tokens = tokens_seen[0].to(torch.int64)
                pair = tokens[:, 0] * cfg.p + tokens[:, 1]
                return post * keep + table[src[pair]]

            handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with model.hooks(fwd_hooks=[(name, hook)]):
            yield model
    finally:
        if handle is not None:
            handle.remove()


# ----------------------------------------------------------------------------- TL's patching
def tl_index_df(model: Any, layers: Sequence[int] | None = None,
                neurons: Sequence[int] | None = None) -> Any:
    """The `index_df` (a pandas DataFrame with columns `layer`, `neuron`: every neuron of every
    layer of `layers`, default all) that `transformer_lens.patching.generic_activation_patch`
    takes for a `HookedMLP` with `layer_neuron_patch_setter` (its own default index reads
    attention heads and positions, which an MLP has not)."""
    import pandas as pd

    check_model(model)
    chosen = _layers(model, layers)
    cols = check_neurons(neurons, model.cfg.d_hidden)
    return pd.DataFrame([(layer, n) for layer in chosen for n in cols],
                        columns=["layer", "neuron"])


def layer_neuron_patch_setter(corrupted: Tensor, index: Sequence[int], clean: Tensor) -> Tensor:
    """TL's patch setter for one neuron of a `[batch, d_hidden]` activation: `index` is
    `(layer, neuron)` (a row of `tl_index_df`)."""
    _, neuron = index
    corrupted[:, neuron] = clean[:, neuron]
    return corrupted


def layer_patch_setter(corrupted: Tensor, index: Sequence[int], clean: Tensor) -> Tensor:
    """TL's patch setter for a whole layer's `[batch, d_hidden]` activation (`index` =
    `(layer,)`: `tl_index_df`'s layers, e.g. `make_df_from_ranges([n_layers], ["layer"])`)."""
    return clean.clone()


# ----------------------------------------------------------------------------- results
@dataclass
class PatchingResult:
    """A patching sweep: `values[l, n]` `[n_layers, d_hidden]` is the metric of the corrupted
    run with neuron `n` of layer `l` patched (NaN where not measured); `clean` and `corrupt`
    the metric of the two runs unpatched; `method` "activation" or "attribution"."""

    values: Tensor
    clean: float
    corrupt: float
    method: str
    n_pairs: int
    layers: list[int] = field(default_factory=list)

    @property
    def effect(self) -> Tensor:
        """`values - corrupt`: what patching each neuron changes."""
        return self.values - self.corrupt

    @property
    def recovered(self) -> Tensor:
        """`(values - corrupt) / (clean - corrupt)`: the share of the clean-corrupt gap each
        neuron restores (NaN when the gap is 0)."""
        gap = self.clean - self.corrupt
        return self.effect / gap if gap != 0 else torch.full_like(self.values, float("nan"))

    def top(self, k: int = 10) -> list[tuple[int, int, float]]:
        """The `k` neurons with the largest |effect|: `(layer, neuron, effect)`."""
        check_count("k", k)
        eff = torch.nan_to_num(self.effect, nan=0.0)
        order = eff.abs().flatten().argsort(descending=True)[:k]
        H = eff.shape[1]
        return [(int(i) // H, int(i) % H, float(eff.flatten()[i])) for i in order]

    def agreement(self, other: PatchingResult) -> dict[str, float]:
        """How two sweeps of the same neurons agree (e.g. activation vs attribution patching):
        the Pearson correlation of their effects, the largest absolute difference, the median
        |effect| of this one for scale, and the overlap of their 10 strongest neurons."""
        if not isinstance(other, PatchingResult) or other.values.shape != self.values.shape:
            raise ValueError("other must be a PatchingResult of the same shape")
        both = self.values.isfinite() & other.values.isfinite()
        a, b = self.effect[both].double(), other.effect[both].double()
        r = float(torch.corrcoef(torch.stack([a, b]))[0, 1]) if a.numel() > 1 else float("nan")
        k = min(10, a.numel())
        top_a = set(a.abs().argsort(descending=True)[:k].tolist())
        top_b = set(b.abs().argsort(descending=True)[:k].tolist())
        return {"pearson": r, "max_abs_diff": float((a - b).abs().max()),
                "median_abs_effect": float(a.abs().median()),
                "top10_overlap": len(top_a & top_b) / max(k, 1)}

    def summary(self) -> dict[str, Any]:
        """The method, how many neurons on how many pairs, the two unpatched metrics and the
        strongest neuron (its layer, index and effect)."""
        (l0, n0, e0), = self.top(1)
        return headline({"method": self.method, "n_neurons": int(self.values.isfinite().sum()),
                         "n_pairs": self.n_pairs, "clean": self.clean, "corrupt": self.corrupt,
                         "strongest": {"layer": l0, "neuron": n0, "effect": e0}})

    def describe(self) -> str:
        (l0, n0, e0), = self.top(1)
        return (f"{self.method} patching of {int(self.values.isfinite().sum())} neurons on "
                f"{self.n_pairs} pairs: metric clean {self.clean:.4g}, corrupted "
                f"{self.corrupt:.4g}; the strongest neuron is L{l0}N{n0} (effect {e0:+.4g})")

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"method": self.method, "values": self.values, "clean": self.clean,
                            "corrupt": self.corrupt, "n_pairs": self.n_pairs,
                            "layers": self.layers, "top": self.top(10)})

    def figures(self) -> dict[str, Any]:
        """`{"patching": Figure}`: the effect of each neuron (bars for one layer, a heatmap
        layer x neuron for more)."""
        from analyses.views import new_figure

        eff = self.effect.detach().cpu()
        fig, axes = new_figure(8, 2.6 if eff.shape[0] == 1 else 1.2 + 0.5 * eff.shape[0])
        ax = axes[0, 0]
        if eff.shape[0] == 1:
            ax.bar(range(eff.shape[1]), eff[0].numpy(), width=0.9, color="#1f77b4")
            ax.set_ylabel("metric change")
        else:
            lim = float(torch.nan_to_num(eff, nan=0.0).abs().max()) or 1.0
            im = ax.imshow(eff.numpy(), aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                           interpolation="nearest")
            ax.set_ylabel("layer")
            fig.colorbar(im, ax=ax, label="metric change")
        ax.set_xlabel("neuron")
        ax.set_title(f"{self.method} patching: metric change per patched neuron")
        return {"patching": fig}


@dataclass
class PathPatchingResult:
    """Path patching from layer `sender_layer` to `sender_layer + 1`: `values[n, m]` `[d_hidden,
    d_hidden]` is the metric of the corrupted run with only the edge n -> m clean."""

    values: Tensor
    clean: float
    corrupt: float
    sender_layer: int
    n_pairs: int

    @property
    def effect(self) -> Tensor:
        return self.values - self.corrupt

    def _strongest(self) -> tuple[int, int, float]:
        """The edge with the largest |effect|: (sender neuron, receiver neuron, effect)."""
        eff = self.effect
        n, m = divmod(int(eff.abs().flatten().argmax()), eff.shape[1])
        return n, m, float(eff[n, m])

    def summary(self) -> dict[str, Any]:
        """The layers, the pairs, the two unpatched metrics and the strongest edge."""
        n, m, e = self._strongest()
        return headline({"sender_layer": self.sender_layer, "n_pairs": self.n_pairs,
                         "clean": self.clean, "corrupt": self.corrupt,
                         "strongest": {"sender": n, "receiver": m, "effect": e}})

    def describe(self) -> str:
        n, m, e = self._strongest()
        return (f"path patching L{self.sender_layer} -> L{self.sender_layer + 1} on "
                f"{self.n_pairs} pairs: metric clean {self.clean:.4g}, corrupted "
                f"{self.corrupt:.4g}; the strongest edge is L{self.sender_layer}N{n} -> "
                f"L{self.sender_layer + 1}N{m} (effect {e:+.4g})")

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"values": self.values, "clean": self.clean, "corrupt": self.corrupt,
                            "sender_layer": self.sender_layer, "n_pairs": self.n_pairs})

    def figures(self) -> dict[str, Any]:
        from analyses.views import new_figure

        eff = self.effect.detach().cpu()
        fig, axes = new_figure(6, 5)
        lim = float(eff.abs().max()) or 1.0
        im = axes[0, 0].imshow(eff.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim,
                               interpolation="nearest")
        axes[0, 0].set_xlabel(f"receiver (layer {self.sender_layer + 1})")
        axes[0, 0].set_ylabel(f"sender (layer {self.sender_layer})")
        fig.colorbar(im, ax=axes[0, 0], label="metric change")
        return {"path_patching": fig}


# ----------------------------------------------------------------------------- sweeps
def _layers(model: Any, layers: Sequence[int] | None) -> list[int]:
    if layers is None:
        return list(range(model.cfg.n_layers))
    if isinstance(layers, int):
        layers = [layers]
    return sorted({_check_layer(model, layer, "layers") for layer in layers})


def _baselines(model: Any, clean: Tensor, corrupt: Tensor, metric: Metric) -> tuple[float, float]:
    with torch.no_grad():
        return _scalar(metric(model(clean))), _scalar(metric(model(corrupt)))


def _metrics(metric: Metric, logits: Tensor) -> Tensor:
    """`metric` of each copy `logits[j]` (`[c, B, p]`): float64 `[c]`, in one vectorised call
    (`torch.vmap`) where the metric allows it, else one call per copy (the same numbers)."""
    try:
        values = torch.vmap(metric)(logits)
        if isinstance(values, Tensor) and values.shape == logits.shape[:1]:
            return values.detach().double().cpu()
    except Exception:
        pass
    return torch.tensor([_scalar(metric(copy)) for copy in logits], dtype=torch.float64)


def _sweep(model: Any, corrupt: Tensor, name: str, n_items: int, max_rows: int,
           edit: Callable[[Tensor, Tensor], None], metric: Metric) -> Tensor:
    """The metric of `n_items` patched copies of the corrupted run, float64 `[n_items]`. Each
    chunk of copies is one forward of the corrupted batch whose value at hook `name` (`[B,
    d]`) is repeated into `c` copies (`[c, B, d]`, flattened to `[c * B, d]` for the rest of
    the model): `edit(copies, items)` patches copy `j` in place for item `items[j]`. What lies
    before the hook is computed once."""
    B = corrupt.shape[0]
    per = max(1, max_rows // B)
    out = torch.empty(n_items, dtype=torch.float64)
    for start in range(0, n_items, per):
        items = torch.arange(start, min(start + per, n_items))

        def hook(value: Tensor, hook: Any, items: Tensor = items) -> Tensor:
            copies = value.unsqueeze(0).repeat(len(items), 1, 1)
            edit(copies, items.to(value.device))
            return copies.reshape(len(items) * B, -1)

        with torch.no_grad():
            logits = model.run_with_hooks(corrupt, fwd_hooks=[(name, hook)])
        out[items] = _metrics(metric, logits.view(len(items), B, -1))
    return out


def _hooked(model: Any, name: str) -> bool:
    point = model.hook_dict[name]
    return bool(point._forward_hooks or point._forward_pre_hooks)


def _last_layer_sweep(model: Any, corrupt: Tensor, src: Tensor, max_rows: int,
                      metric: Metric) -> Tensor:
    """`neuron_patching` of the last hidden layer, whose neurons write the logits linearly
    (`logits = post @ W_out + b_out`): patching neuron `n` adds `(clean - corrupt)[:, n] *
    W_out[n]` to the corrupted logits, a rank-one update in place of a forward (equal to the
    forward up to rounding; used only when nothing hooks `hook_logits`)."""
    name = f"blocks.{model.cfg.n_layers - 1}.mlp.hook_post"
    with torch.no_grad():
        logits, cache = model.run_with_cache(corrupt, names_filter=[name],
                                             return_cache_object=False)
        delta = (src - cache[name]).T  # [H, B]
        W = model.W_out.detach()  # [H, p]
        H, B = delta.shape
        per = max(1, max_rows // B)
        out = torch.empty(H, dtype=torch.float64)
        for start in range(0, H, per):
            n = slice(start, min(start + per, H))
            out[n] = _metrics(metric, torch.addcmul(logits, delta[n, :, None], W[n, None, :]))
    return out


def neuron_patching(model: Any, clean_tokens: Tensor, corrupt_tokens: Tensor, metric: Metric,
                    *, layers: Sequence[int] | None = None,
                    max_rows: int = MAX_ROWS) -> PatchingResult:
    """Activation patching of every neuron: `values[l, n]` is `metric` on the corrupted run
    with neuron `n`'s `blocks.{l}.mlp.hook_post` taken from the clean run (pair by pair), for
    each layer of `layers` (default all; others NaN). Batched (see the module's docstring),
    at most `max_rows` rows at once: equal to a loop of `run_with_hooks`, one per neuron."""
    check_model(model)
    _check_metric(metric)
    check_count("max_rows", max_rows)
    clean, corrupt = _check_pair(model, clean_tokens, corrupt_tokens)
    chosen = _layers(model, layers)
    H = model.cfg.d_hidden
    clean_post = _posts(model, clean, chosen)
    values = torch.full((model.cfg.n_layers, H), float("nan"), dtype=torch.float64)
    for layer in chosen:
        src = clean_post[layer]  # [B, H]
        if layer == model.cfg.n_layers - 1 and not _hooked(model, "hook_logits"):
            values[layer] = _last_layer_sweep(model, corrupt, src, max_rows, metric)
            continue

        def edit(post: Tensor, neurons: Tensor, src: Tensor = src) -> None:
            post[torch.arange(len(neurons), device=post.device), :, neurons] = src[:, neurons].T

        values[layer] = _sweep(model, corrupt, f"blocks.{layer}.mlp.hook_post", H, max_rows,
                               edit, metric)
    c, k = _baselines(model, clean, corrupt, metric)
    return PatchingResult(values, c, k, "activation", int(clean.shape[0]), chosen)


def attribution_patching(model: Any, clean_tokens: Tensor, corrupt_tokens: Tensor,
                         metric: Metric, *, layers: Sequence[int] | None = None
                         ) -> PatchingResult:
    """Attribution patching: `values[l, n] = metric(corrupt) + sum_b (clean - corrupt)[b, n] *
    d metric / d post_l[b, n]` at the corrupted run (one forward and one backward; the
    parameters' `.grad` are left alone). The first-order estimate of `neuron_patching`."""
    check_model(model)
    _check_metric(metric)
    clean, corrupt = _check_pair(model, clean_tokens, corrupt_tokens)
    chosen = _layers(model, layers)
    clean_post = _posts(model, clean, chosen)
    seen: dict[int, Tensor] = {}

    def keep(layer: int) -> Callable[[Tensor, Any], Tensor]:
        def hook(post: Tensor, hook: Any) -> Tensor:
            if not post.requires_grad:  # nothing before it needs a gradient (frozen weights)
                post = post.detach().requires_grad_()
            seen[layer] = post
            return post
        return hook

    hooks = [(f"blocks.{layer}.mlp.hook_post", keep(layer)) for layer in chosen]
    with torch.enable_grad():
        logits = model.run_with_hooks(corrupt, fwd_hooks=hooks)
        out = metric(logits)
        if not isinstance(out, Tensor) or out.numel() != 1 or not out.requires_grad:
            raise ValueError("attribution_patching needs a metric that returns a scalar tensor "
                             "differentiable in the logits (it takes the metric's gradient)")
        grads = torch.autograd.grad(out.reshape(()), [seen[layer] for layer in chosen],
                                    allow_unused=True)
    corrupt_value = float(out.detach())
    values = torch.full((model.cfg.n_layers, model.cfg.d_hidden), float("nan"),
                        dtype=torch.float64)
    for layer, grad in zip(chosen, grads, strict=True):
        diff = (clean_post[layer] - seen[layer].detach()).double()
        g = torch.zeros_like(diff) if grad is None else grad.double()
        values[layer] = corrupt_value + (diff * g).sum(dim=0).cpu()
    clean_value = _baselines(model, clean, corrupt, metric)[0]
    return PatchingResult(values, clean_value, corrupt_value, "attribution",
                          int(clean.shape[0]), chosen)


def path_patching(model: Any, clean_tokens: Tensor, corrupt_tokens: Tensor, metric: Metric,
                  sender_layer: int = 0, *, max_rows: int = MAX_ROWS) -> PathPatchingResult:
    """Path patching neuron to neuron from hidden layer `sender_layer` to the next (see the
    module's docstring): `values[n, m]` `[d_hidden, d_hidden]`. Needs a model of two or more
    hidden layers; batched as `neuron_patching` (one copy of the corrupted batch per edge)."""
    check_model(model)
    _check_metric(metric)
    check_count("max_rows", max_rows)
    L, H = model.cfg.n_layers, model.cfg.d_hidden
    if L < 2:
        raise ValueError("path_patching follows edges between two hidden layers; this model has "
                         "one (its neurons write the logits: neuron_patching measures them)")
    sender = _check_layer(model, sender_layer, "sender_layer")
    if sender == L - 1:
        raise ValueError(f"sender_layer must be in [0, {L - 2}]: layer {L - 1} writes the "
                         "logits, not another layer")
    clean, corrupt = _check_pair(model, clean_tokens, corrupt_tokens)
    posts = {**{("clean", k): v for k, v in _posts(model, clean, [sender]).items()},
             **{("corrupt", k): v for k, v in _posts(model, corrupt, [sender]).items()}}
    delta = posts[("clean", sender)] - posts[("corrupt", sender)]  # [B, H]
    W = model.W_hidden[sender].detach()  # [H (sender), H (receiver)]

    def edit(pre: Tensor, edges: Tensor) -> None:
        n, m = edges // H, edges % H
        pre[torch.arange(len(edges), device=pre.device), :, m] += (delta[:, n] * W[n, m]).T

    flat = _sweep(model, corrupt, f"blocks.{sender + 1}.mlp.hook_pre", H * H, max_rows, edit,
                  metric)
    c, k = _baselines(model, clean, corrupt, metric)
    return PathPatchingResult(flat.view(H, H), c, k, sender, int(clean.shape[0]))
