"""`MLPActivationCache`: TransformerLens's `ActivationCache` for a `HookedMLP`.

Everything of TL's cache that makes sense for an MLP works as in TL: lookups by full name or by
`(name, layer)` (`cache["post", 0]`), `stack_activation`, `to`, `keys`/`values`/`items`,
`remove_batch_dim`. Three helpers are given their MLP meaning:

- `get_neuron_results(layer)`: each neuron's contribution to what its layer writes, `post_n *
  W_n` (`[batch, neurons, p]` for the last hidden layer, whose neurons write the logits; `[batch,
  neurons, d_hidden]` for an earlier one, whose neurons write the next layer's pre-activation);
- `stack_neuron_results()`: the last layer's contributions stacked `[neurons, batch, p]`
  (with labels): the logits are their sum plus `b_out`;
- `logit_attrs(stack, tokens, incorrect_tokens)`: each component's logit for a residue (minus
  another's): the logit attribution to a residue direction.

The helpers that assume a transformer (the residual stream, attention heads, layer norm, state
space layers) raise a `ValueError` that says what this model has instead. A name that is not in
the cache raises a `KeyError` that lists the names that are.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformer_lens import ActivationCache

from hooked_mlp.functional import RENAMED_HOOKS


def _not_for_an_mlp(name: str, what: str) -> Any:
    def refuse(self: MLPActivationCache, *args: Any, **kwargs: Any) -> Any:
        raise ValueError(
            f"ActivationCache.{name} does not apply to a HookedMLP: it has no {what}. An MLP's "
            "cache holds hook_embed_a/b, blocks.{l}.mlp.hook_pre/hook_post and hook_logits; "
            "per-neuron contributions to the logits are cache.stack_neuron_results(), and "
            "their logit for a residue cache.logit_attrs(stack, tokens)")

    refuse.__name__ = name
    refuse.__doc__ = f"Not for an MLP (it has no {what}): raises a ValueError saying so."
    return refuse


class MLPActivationCache(ActivationCache):
    """An `ActivationCache` of a `HookedMLP` (see the module docstring)."""

    def __getitem__(self, key: Any) -> Tensor:
        """A cached tensor by full name or TL shorthand (`"post", 0` and, for gradients,
        `"post_grad", 0` for `blocks.0.mlp.hook_post_grad`)."""
        if isinstance(key, tuple) and key and isinstance(key[0], str) and key[0].endswith(
                "_grad") and key not in self.cache_dict:
            from transformer_lens.utilities import get_act_name

            base = list(key)
            base[0] = key[0][: -len("_grad")]
            if base[1:2] and isinstance(base[1], int) and base[1] < 0:
                base[1] += self.model.cfg.n_layers
            key = get_act_name(*base) + "_grad"
        try:
            return super().__getitem__(key)
        except KeyError:
            hint = f" ({key!r} is now {RENAMED_HOOKS[key]!r})" if key in RENAMED_HOOKS else ""
            raise KeyError(f"{key!r} is not in this cache{hint}; it holds "
                           f"{list(self.cache_dict)}") from None

    def _layer(self, layer: Any) -> int:
        L = self.model.cfg.n_layers
        if isinstance(layer, bool) or not isinstance(layer, int) or not -L <= layer < L:
            raise ValueError(f"layer must be an integer in [{-L}, {L - 1}] (the model has {L} "
                             f"hidden layer{'s' if L > 1 else ''}), got {layer!r}")
        return layer % L

    def _writes(self, layer: int) -> Tensor:
        """The weight through which layer `layer`'s neurons write: `[d_hidden, out]`."""
        m = self.model
        return m.W_out if layer == m.cfg.n_layers - 1 else m.W_hidden[layer]

    def get_neuron_results(
        self, layer: int, neuron_slice: Any = None, pos_slice: Any = None,
        project_output_onto: Tensor | None = None,
    ) -> Tensor:
        """Each neuron's contribution `post_n * W_n` to what hidden layer `layer` writes:
        `[batch, neurons, out]` (`out` = p for the last layer, d_hidden before it); projected
        onto `project_output_onto` (`[out]` or `[out, k]`) when given. `neuron_slice` is an int,
        a list of ints or a slice. There are no positions: `pos_slice` is refused."""
        if pos_slice is not None:
            raise ValueError("pos_slice does not apply to a HookedMLP: its activations are "
                             "[batch, neurons], with no position axis")
        layer = self._layer(layer)
        acts = self["post", layer]  # [batch, H]
        W = self._writes(layer)  # [H, out]
        if neuron_slice is not None:
            index = [neuron_slice] if isinstance(neuron_slice, int) else neuron_slice
            acts, W = acts[..., index], W[index]
        if project_output_onto is None:
            return acts[..., None] * W
        projected = W @ project_output_onto.to(W.dtype)
        return acts * projected if project_output_onto.ndim == 1 else acts[..., None] * projected

    def stack_neuron_results(
        self, layer: int | None = None, pos_slice: Any = None, neuron_slice: Any = None,
        return_labels: bool = False, incl_remainder: bool = False, apply_ln: bool = False,
        project_output_onto: Tensor | None = None, mlp_input: bool = False,
    ) -> Tensor | tuple[Tensor, list[str]]:
        """The last hidden layer's neurons' contributions to the logits, stacked: `[neurons,
        batch, p]` (labels `L{layer}N{n}` with `return_labels`). Summed over neurons and added
        to `b_out` they are the logits. Only the last layer writes the logits, so `layer` may be
        None, -1 or `n_layers` (TL's "all layers up to the unembed")."""
        L = self.model.cfg.n_layers
        for flag, name in ((incl_remainder, "incl_remainder"), (apply_ln, "apply_ln"),
                           (mlp_input, "mlp_input")):
            if flag:
                raise ValueError(f"{name} does not apply to a HookedMLP: it has no residual "
                                 "stream or layer norm")
        if layer not in (None, -1, L):
            raise ValueError(f"stack_neuron_results stacks the neurons that write the logits, "
                             f"those of the last hidden layer; layer must be None, -1 or {L}, "
                             f"got {layer!r}")
        results = self.get_neuron_results(L - 1, neuron_slice, pos_slice, project_output_onto)
        stack = results.movedim(-2 if project_output_onto is None or
                                project_output_onto.ndim > 1 else -1, 0)
        if not return_labels:
            return stack
        neurons = (range(self.model.cfg.d_hidden) if neuron_slice is None else
                   [neuron_slice] if isinstance(neuron_slice, int) else
                   range(self.model.cfg.d_hidden)[neuron_slice]
                   if isinstance(neuron_slice, slice) else neuron_slice)
        return stack, [f"L{L - 1}N{n}" for n in neurons]

    def logit_attrs(
        self, residual_stack: Tensor, tokens: Any, incorrect_tokens: Any = None,
        pos_slice: Any = None, batch_slice: Any = None, has_batch_dim: bool = True,
    ) -> Tensor:
        """Each component's logit for the residue `tokens` (minus its logit for
        `incorrect_tokens`): `[components, batch]` from a stack `[components, batch, p]` in
        logit space (e.g. `stack_neuron_results()`). `tokens` is a residue (int) or one per
        batch element (int tensor `[batch]`), e.g. the labels."""
        if pos_slice is not None or batch_slice is not None or not has_batch_dim:
            raise ValueError("logit_attrs of a HookedMLP takes a stack [components, batch, p] "
                             "and no pos_slice/batch_slice: the model has no positions")
        p = self.model.cfg.p
        if residual_stack.shape[-1] != p:
            raise ValueError(f"residual_stack must be in logit space, [..., batch, p={p}], got "
                             f"{list(residual_stack.shape)}")

        def pick(which: Any, name: str) -> Tensor:
            index = torch.as_tensor(which, device=residual_stack.device)
            if index.is_floating_point() or index.is_complex() or index.ndim > 1 or (
                    index.numel() and not (int(index.min()) >= 0 and int(index.max()) < p)):
                raise ValueError(f"{name} must be a residue in [0, {p - 1}] or one per batch "
                                 f"element, got {which!r}")
            batch = residual_stack.shape[-2]
            if index.ndim == 1 and index.shape[0] != batch:
                raise ValueError(f"{name} must be one residue, or one per batch element "
                                 f"({batch}), got {index.shape[0]} of them")
            index = index.to(torch.int64).expand(batch)
            expanded = index.expand(*residual_stack.shape[:-1])
            return residual_stack.gather(-1, expanded.unsqueeze(-1)).squeeze(-1)

        attrs = pick(tokens, "tokens")
        if incorrect_tokens is not None:
            attrs = attrs - pick(incorrect_tokens, "incorrect_tokens")
        return attrs

    accumulated_resid = _not_for_an_mlp("accumulated_resid", "residual stream")
    decompose_resid = _not_for_an_mlp("decompose_resid", "residual stream")
    get_full_resid_decomposition = _not_for_an_mlp("get_full_resid_decomposition",
                                                   "residual stream")
    logit_lens = _not_for_an_mlp("logit_lens", "residual stream to read with the unembed")
    apply_ln_to_stack = _not_for_an_mlp("apply_ln_to_stack", "layer norm")
    compute_head_results = _not_for_an_mlp("compute_head_results", "attention heads")
    stack_head_results = _not_for_an_mlp("stack_head_results", "attention heads")
    compute_ssm_effective_attention = _not_for_an_mlp("compute_ssm_effective_attention",
                                                      "state space layers")
    compute_ssm_state = _not_for_an_mlp("compute_ssm_state", "state space layers")
