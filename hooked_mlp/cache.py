"""`MLPActivationCache`: TransformerLens's `ActivationCache` for a `HookedMLP`, and its file.

    logits, cache = model.run_with_cache(tokens)        # an MLPActivationCache
    cache["post", 0]                                    # [batch, d_hidden]: blocks.0.mlp.hook_post
    cache.save("clean.safetensors")                     # entries, tokens, the model's fingerprint
    cache = MLPActivationCache.load("clean.safetensors", model)   # refused for another model

Everything of TL's cache that makes sense for an MLP works as in TL: lookups by full name or by
`(name, layer)` (`cache["post", 0]`, `cache["post_grad", 0]`), `stack_activation`, `to`,
`keys`/`values`/`items`, `remove_batch_dim`, `apply_slice_to_batch_dim` (which returns an
`MLPActivationCache`). Three helpers are given their MLP meaning:

- `get_neuron_results(layer)`: each neuron's contribution to what its layer writes, `post_n *
  W_n` (`[batch, neurons, p]` for the last hidden layer, whose neurons write the logits; `[batch,
  neurons, d_hidden]` for an earlier one, whose neurons write the next layer's pre-activation);
- `stack_neuron_results()`: the last layer's contributions stacked `[neurons, batch, p]`
  (with labels): the logits are their sum plus `b_out`;
- `logit_attrs(stack, tokens, incorrect_tokens, batch_slice=...)`: each component's logit for a
  residue (minus another's): the logit attribution to a residue direction.

Neurons and batch elements are chosen as TL chooses them: None, an int, a list, a tuple (TL's
`Slice` syntax), a Python slice, an int tensor or array, or a `transformer_lens.utilities.Slice`;
each is checked against the axis it selects. The helpers that assume a transformer (the residual
stream, attention heads, layer norm, state space layers) raise a `ValueError` that says what this
model has instead. A name that is not in the cache raises a `KeyError` that lists the names that
are (and says so when the name is a transformer's).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from transformer_lens import ActivationCache
from transformer_lens.utilities import Slice

from hooked_mlp.functional import RENAMED_HOOKS, hook_widths
from hooked_mlp.shapes import Attributions, Labels, LogitStack, NeuronResults, NeuronStack, Residue
from hooked_mlp.text import short

CACHE_KIND = "activation-cache"  # the `kind` of a cache file (hooked_mlp.files.format)
CACHE_VERSION = 1
_GRAD = "_grad"
# parts of TransformerLens hook names that belong to a transformer (no such hook here)
_TRANSFORMER_PARTS = ("resid", "attn", "hook_mlp_out", "hook_mlp_in", "ln", "hook_embed",
                      "hook_pos_embed", "hook_scale", "hook_z", "hook_q", "hook_k", "hook_v")


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


def selection(which: Any, size: int, name: str) -> tuple[Tensor, bool]:
    """A choice of elements along an axis of `size`, as TransformerLens takes one (None, an
    int, a list, a tuple in TL's `Slice` syntax, a slice, an int tensor or array, or a `Slice`):
    `(int64 indices, whether an int chose one element)`, each index checked to lie in the axis
    (negative ones counting from its end)."""
    try:
        chosen = which if isinstance(which, Slice) else Slice(which)
    except (ValueError, TypeError):
        raise ValueError(f"{name} must be None, an int, a list or tensor of ints, a slice or a "
                         f"transformer_lens Slice, got {short(which)}") from None
    if chosen.mode == "array":
        array = chosen.slice
        if array.dtype.kind not in "iu" and array.size:
            raise ValueError(f"{name} must hold integers, got {short(which)}")
        index = torch.as_tensor(array.astype("int64", copy=False).reshape(-1))
    elif chosen.mode == "int":
        index = torch.tensor([int(chosen.slice)])
    else:
        index = torch.arange(size)[chosen.slice]
    if index.numel() and not (-size <= int(index.min()) and int(index.max()) < size):
        bad = int(index.max()) if int(index.max()) >= size else int(index.min())
        raise ValueError(f"{name} selects {bad}, outside an axis of {size} (0 .. {size - 1}, "
                         f"or negative from the end)")
    return index % max(size, 1), chosen.mode == "int"


class MLPActivationCache(ActivationCache):
    """An `ActivationCache` of a `HookedMLP` (see the module docstring).

    `MLPActivationCache(cache_dict, model, has_batch_dim=True, *, tokens=None,
    fingerprint=None, hooks=())`: `cache_dict` maps hook names (`model.hook_dict`'s, and
    `<name>_grad` for gradients) to tensors `[batch, width]` (`[width]` without a batch axis);
    `model` is the `HookedMLP` they came from; `tokens` the int64 `[batch, 2]` inputs they were
    computed on (`[2]` without a batch axis); `fingerprint` the model's fingerprint when they
    were computed (default: `model.fingerprint()` now); `hooks` the hook points that carried
    hooks of the user's own meanwhile (the activations are those of the hooked model).
    `model.run_with_cache` fills all of these in.
    """

    def __init__(self, cache_dict: dict[str, Tensor], model: Any, has_batch_dim: bool = True,
                 *, tokens: Tensor | None = None, fingerprint: str | None = None,
                 hooks: Sequence[str] = ()) -> None:
        super().__init__(cache_dict, model, has_batch_dim=has_batch_dim)
        self.tokens = tokens
        if fingerprint is None and callable(getattr(model, "fingerprint", None)):
            fingerprint = model.fingerprint()
        self.fingerprint = fingerprint
        self.hooks = tuple(hooks)

    # ------------------------------------------------------------------------------ lookups
    def __getitem__(self, key: Any) -> Tensor:
        """A cached tensor by full name or TL shorthand (`"post", 0` and, for gradients,
        `"post_grad", 0` for `blocks.0.mlp.hook_post_grad`)."""
        if isinstance(key, tuple) and key and isinstance(key[0], str) and key[0].endswith(
                _GRAD) and key not in self.cache_dict:
            from transformer_lens.utilities import get_act_name

            base = list(key)
            base[0] = key[0][: -len(_GRAD)]
            if base[1:2] and isinstance(base[1], int) and base[1] < 0:
                base[1] += self.model.cfg.n_layers
            key = get_act_name(*base) + _GRAD
        try:
            return super().__getitem__(key)
        except KeyError:
            raise KeyError(f"{key!r} is not in this cache{_hint(key)}; it holds "
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

    @property
    def batch_size(self) -> int:
        """How many inputs the cache holds (1 without a batch axis)."""
        if not self.has_batch_dim:
            return 1
        if self.tokens is not None:
            return int(self.tokens.shape[0])
        return int(next(iter(self.cache_dict.values())).shape[0]) if self.cache_dict else 0

    # ------------------------------------------------------------------------------ batch
    def apply_slice_to_batch_dim(self, batch_slice: Any) -> MLPActivationCache:
        """A new cache holding the chosen inputs (see `selection`; an int removes the batch
        axis, as in TL), their tokens with them."""
        if not self.has_batch_dim:
            if batch_slice is None or (isinstance(batch_slice, Slice)
                                       and batch_slice.mode == "identity"):
                return self
            raise ValueError("this cache has no batch axis (remove_batch_dim was applied): "
                             "there is nothing to slice")
        index, collapse = selection(batch_slice, self.batch_size, "batch_slice")
        pick = index[0] if collapse else index

        def take(t: Tensor) -> Tensor:
            return t[pick.to(t.device)]

        return MLPActivationCache(
            {name: take(t) for name, t in self.cache_dict.items()}, self.model,
            has_batch_dim=not collapse,
            tokens=None if self.tokens is None else take(self.tokens),
            fingerprint=self.fingerprint, hooks=self.hooks)

    def remove_batch_dim(self, batch_size: int | None = None) -> MLPActivationCache:
        """Remove the batch axis of a cache of one input (TL's; the tokens lose it too)."""
        if self.has_batch_dim and self.batch_size != 1:
            raise ValueError(f"remove_batch_dim needs a cache of one input, this one holds "
                             f"{self.batch_size}: use cache.apply_slice_to_batch_dim(i) to "
                             "take one")
        if self.has_batch_dim and self.tokens is not None:
            self.tokens = self.tokens[0]
        super().remove_batch_dim(1 if self.has_batch_dim else batch_size)
        return self

    # ------------------------------------------------------------------------------ neurons
    def get_neuron_results(
        self, layer: int, neuron_slice: Any = None, pos_slice: Any = None,
        project_output_onto: Tensor | None = None,
    ) -> NeuronResults:
        """Each neuron's contribution `post_n * W_n` to what hidden layer `layer` writes:
        `[batch, neurons, out]` (`out` = p for the last layer, d_hidden before it); projected
        onto `project_output_onto` (`[out]`: `[batch, neurons]`, or `[out, k]`: `[batch,
        neurons, k]`) when given. `neuron_slice` chooses neurons (see `selection`; an int
        keeps the neuron axis, of length 1). There are no positions: `pos_slice` is refused."""
        if pos_slice is not None:
            raise ValueError("pos_slice does not apply to a HookedMLP: its activations are "
                             "[batch, neurons], with no position axis")
        layer = self._layer(layer)
        acts = self["post", layer]  # [batch, H]
        W = self._writes(layer)  # [H, out]
        if neuron_slice is not None:
            index, _ = selection(neuron_slice, W.shape[0], "neuron_slice")
            acts, W = acts[..., index.to(acts.device)], W[index.to(W.device)]
        if project_output_onto is None:
            return acts[..., None] * W
        onto = project_output_onto
        if not isinstance(onto, Tensor) or onto.ndim not in (1, 2) or onto.shape[0] != W.shape[1]:
            raise ValueError(f"project_output_onto must be a tensor [{W.shape[1]}] or "
                             f"[{W.shape[1]}, k] (layer {layer} writes {W.shape[1]} numbers), "
                             f"got {list(getattr(onto, 'shape', []))}")
        projected = W @ onto.to(W.dtype)
        return acts * projected if onto.ndim == 1 else acts[..., None] * projected

    def stack_neuron_results(
        self, layer: int | None = None, pos_slice: Any = None, neuron_slice: Any = None,
        return_labels: bool = False, incl_remainder: bool = False, apply_ln: bool = False,
        project_output_onto: Tensor | None = None, mlp_input: bool = False,
    ) -> NeuronStack | tuple[NeuronStack, list[str]]:
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
        H = self.model.cfg.d_hidden
        neurons = (range(H) if neuron_slice is None else
                   selection(neuron_slice, H, "neuron_slice")[0].tolist())
        return stack, [f"L{L - 1}N{n}" for n in neurons]

    def logit_attrs(
        self, residual_stack: LogitStack,
        tokens: int | Residue | Labels,
        incorrect_tokens: int | Residue | Labels | None = None,
        pos_slice: Any = None, batch_slice: Any = None, has_batch_dim: bool = True,
    ) -> Attributions:
        """Each component's logit for the residue `tokens` (minus its logit for
        `incorrect_tokens`): `[components, batch]` from a stack `[components, batch, p]` in
        logit space (e.g. `stack_neuron_results()`). As in TL, `batch_slice` takes those inputs
        of the stack (an int removes the batch axis), and `tokens` is a residue (int) or one per
        input it keeps, e.g. the labels; `has_batch_dim=False` takes a stack `[components, p]`.
        There is no layer norm to apply, so the slice changes no number. There are no
        positions: `pos_slice` is refused."""
        if pos_slice is not None:
            raise ValueError("logit_attrs of a HookedMLP takes no pos_slice: its activations "
                             "have no position axis")
        p = self.model.cfg.p
        want = 3 if has_batch_dim else 2
        if not isinstance(residual_stack, Tensor) or residual_stack.ndim != want or \
                residual_stack.shape[-1] != p:
            shape = "[components, batch, p]" if has_batch_dim else "[components, p]"
            raise ValueError(f"residual_stack must be a stack {shape} in logit space (p={p}), "
                             f"got {list(getattr(residual_stack, 'shape', []))}")
        if has_batch_dim and batch_slice is not None:
            index, collapse = selection(batch_slice, residual_stack.shape[1], "batch_slice")
            index = index.to(residual_stack.device)
            residual_stack = residual_stack[:, index[0]] if collapse else residual_stack[:, index]
        elif batch_slice is not None:
            raise ValueError("batch_slice needs a stack with a batch axis (has_batch_dim=True)")
        attrs = _pick(residual_stack, tokens, "tokens", p)
        if incorrect_tokens is not None:
            attrs = attrs - _pick(residual_stack, incorrect_tokens, "incorrect_tokens", p)
        return attrs

    # ------------------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the cache to `path`: one safetensors file, written atomically through
        `hooked_mlp.files.format` (checksummed), holding every entry (gradients included), the
        tokens, and the model's config and fingerprint, so that `MLPActivationCache.load(path,
        model)` gives it back with that model only. Entries must be hook points of the model
        (or their `_grad`s) and finite."""
        from hooked_mlp.files.format import write_safetensors

        if self.fingerprint is None:
            raise ValueError("this cache does not know its model's fingerprint (its model is "
                             "not a HookedMLP), so it cannot be saved for checking on load")
        widths = hook_widths(self.model.cfg)
        for name in self.cache_dict:
            if name.removesuffix(_GRAD) not in widths:
                raise ValueError(f"cache entry {short(name)} is not a hook point of the model "
                                 f"(nor its gradient), so it could not be checked on load: "
                                 f"the hook points are {list(widths)}")
        tensors, seen = {}, set()
        for name, t in self.cache_dict.items():
            t = t.detach()
            storage = t.untyped_storage()
            # safetensors refuses tensors that share memory: backward hands one gradient to
            # both terms of a sum (hook_embed_a/b_grad and hook_pre_grad), and
            # remove_batch_dim leaves views
            if storage.data_ptr() in seen or storage.nbytes() != t.numel() * t.element_size():
                t = t.clone()
            seen.add(t.untyped_storage().data_ptr())
            tensors[f"cache.{name}"] = t
        if self.tokens is not None:
            tensors["tokens"] = self.tokens.to(torch.int64)
        meta = {"kind": CACHE_KIND, "cache_version": CACHE_VERSION,
                "config": self.model.cfg.to_dict(), "model_fingerprint": self.fingerprint,
                "has_batch_dim": bool(self.has_batch_dim), "batch": self.batch_size,
                "entries": list(self.cache_dict), "tokens": self.tokens is not None,
                "hooks": list(self.hooks)}
        write_safetensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Any) -> MLPActivationCache:
        """The cache saved at `path` (`save`), for `model`, on the model's device. Refused with
        a `CheckpointError` (a ValueError naming the file) when the file is damaged, is not a
        cache, or was computed on another model (another config, or other weights: the
        fingerprints differ)."""
        from hooked_mlp.files.format import CheckpointError, read_safetensors

        if not callable(getattr(model, "fingerprint", None)):
            raise TypeError(f"model must be a HookedMLP, got {type(model).__name__}")
        name, mine = os.fspath(path), model.fingerprint()

        def expected(doc: dict[str, Any], table: dict[str, Any]) -> dict[str, Any]:
            return _expected_tensors(name, doc, table, model.cfg, mine)

        doc, tensors = read_safetensors(path, CACHE_KIND, expected)
        device = model.device
        entries = {entry: tensors[f"cache.{entry}"].to(device) for entry in doc["entries"]}
        tokens = tensors.get("tokens")
        if tokens is not None and tokens.numel() and not (
                int(tokens.min()) >= 0 and int(tokens.max()) < model.cfg.p):
            raise CheckpointError(name, f"its tokens lie outside [0, {model.cfg.p - 1}]")
        return cls(entries, model, has_batch_dim=doc["has_batch_dim"],
                   tokens=None if tokens is None else tokens.to(device),
                   fingerprint=doc["model_fingerprint"], hooks=doc["hooks"])

    # ------------------------------------------------------------------------------ refused
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


def _hint(key: Any) -> str:
    """Why a name is not in the cache, where something can be said."""
    if key in RENAMED_HOOKS:
        return f" ({key!r} is now {RENAMED_HOOKS[key]!r})"
    if isinstance(key, str) and any(part in key for part in _TRANSFORMER_PARTS):
        return (" (a HookedMLP has no residual stream, attention, layer norm or position "
                "embedding, so this TransformerLens hook does not exist here; the MLP's layers "
                "are blocks.{l}.mlp.hook_pre/hook_post)")
    return ""


def _pick(stack: Tensor, which: Any, name: str, p: int) -> Tensor:
    """`stack[..., which]` with `which` a residue or one residue per input (`[batch]`)."""
    index = torch.as_tensor(which, device=stack.device)
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool or \
            index.ndim > 1 or (index.numel() and not (int(index.min()) >= 0
                                                      and int(index.max()) < p)):
        raise ValueError(f"{name} must be a residue in [0, {p - 1}] or one per batch element, "
                         f"got {short(which)}")
    batch = stack.shape[1] if stack.ndim == 3 else None
    if index.ndim == 1 and index.shape[0] != batch:
        want = ("one residue" if batch is None
                else f"one residue, or one per batch element ({batch})")
        raise ValueError(f"{name} must be {want}, got {index.shape[0]} of them")
    shape = stack.shape[:-1]
    index = index.to(torch.int64).expand(shape)
    return stack.gather(-1, index.unsqueeze(-1)).squeeze(-1)


def _expected_tensors(name: str, doc: dict[str, Any], table: dict[str, Any], cfg: Any,
                      fingerprint: str) -> dict[str, Any]:
    """The tensors a cache file of this model must hold (checked before its body is read)."""
    from hooked_mlp.files.format import CheckpointError

    if doc.get("model_fingerprint") != fingerprint:
        raise CheckpointError(
            name, f"holds the activations of another model (fingerprint "
            f"{short(doc.get('model_fingerprint'))}, config {short(doc.get('config'), 200)}); "
            f"this model's fingerprint is {fingerprint!r}: load it with the model it was "
            "computed on")
    version, entries = doc.get("cache_version"), doc.get("entries")
    has_batch, batch = doc.get("has_batch_dim"), doc.get("batch")
    if version != CACHE_VERSION:
        raise CheckpointError(name, f"is a cache file of version {short(version)}; this "
                              f"hooked-mlp reads version {CACHE_VERSION}")
    if not (isinstance(entries, list) and all(isinstance(e, str) for e in entries)
            and isinstance(has_batch, bool) and isinstance(batch, int)
            and not isinstance(batch, bool) and batch >= 0
            and isinstance(doc.get("tokens"), bool) and isinstance(doc.get("hooks"), list)):
        raise CheckpointError(name, "corrupt metadata: not a valid cache description")
    widths = hook_widths(cfg)
    lead = (batch,) if has_batch else ()
    want: dict[str, Any] = {}
    for entry in entries:
        width = widths.get(entry.removesuffix(_GRAD))
        if width is None:
            raise CheckpointError(name, f"entry {short(entry)} is not a hook point of the model")
        dtype = table.get(f"cache.{entry}", {}).get("dtype")
        want[f"cache.{entry}"] = (dtype if dtype in ("F32", "F64", "F16", "BF16") else "F32",
                                  (*lead, width))
    if doc["tokens"]:
        want["tokens"] = ("I64", (*lead, 2))
    return want
