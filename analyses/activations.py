"""Per-neuron activation grids over every `(a, b)`, read through `run_with_cache`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from analyses._common import (
    Summary,
    check_all_pairs_memory,
    check_model,
    check_neurons,
    headline,
    median_or_none,
    to_jsonable,
)
from hooked_mlp.data import all_pairs

DEFAULT_HOOK = "blocks.0.mlp.hook_post"


@dataclass
class ActivationGrids:
    """`grids[i, a, b]` is neuron `neurons[i]`'s activation at hook `hook` on input `(a, b)`."""

    hook: str
    neurons: list[int]
    grids: Tensor  # [n, p, p]

    @property
    def active_fraction(self) -> Tensor:
        """Share of the pairs on which each neuron is positive: `[n]`."""
        return (self.grids > 0).float().mean(dim=(1, 2))

    def to_dict(self, include_grids: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"hook": self.hook, "neurons": self.neurons,
                               "active_fraction": self.active_fraction,
                               "max": self.grids.amax(dim=(1, 2))}
        if include_grids:
            out["grids"] = self.grids
        return to_jsonable(out)

    def summary(self) -> Summary:
        return headline({"hook": self.hook, "n_neurons": len(self.neurons),
                         "active_fraction_median": median_or_none(self.active_fraction)})


@torch.no_grad()
def activation_grids(
    model: Any, neurons: list[int] | int | None = None, hook: str = DEFAULT_HOOK
) -> ActivationGrids:
    """Every chosen unit's value at `hook` on all `p^2` pairs, as `[n, p, p]` grids (rows: `a`,
    columns: `b`), read through `run_with_cache` (hooks included).

    `hook` is any of the model's hook points (`model.hook_dict`: the hidden layers'
    `blocks.{l}.mlp.hook_pre` / `hook_post`, `hook_embed_a`, `hook_embed_b`, `hook_logits`, for
    which the units are the residues). For `div`, the pairs with `b = 0` are in the grid too (the
    model is defined there; they have no label).
    """
    check_model(model, finite=False)
    check_all_pairs_memory(model.cfg, 3 * max(model.cfg.d_hidden, model.cfg.p),
                           "activation_grids")
    if not isinstance(hook, str) or hook not in model.hook_dict:
        raise ValueError(f"hook must be one of {list(model.hook_dict)}, got {hook!r}")
    width = model.cfg.d_output if hook == "hook_logits" else model.cfg.d_hidden
    chosen = check_neurons(neurons, width)
    p = model.cfg.p
    _, cache = model.run_with_cache(all_pairs(p, model.device), names_filter=hook)
    acts = cache[hook][:, chosen].cpu()  # [p^2, n]
    return ActivationGrids(hook, chosen, acts.t().reshape(len(chosen), p, p).contiguous())
