"""Per-neuron activation grids over every `(a, b)`, read through `run_with_cache`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from analyses._common import check_model, check_neurons, to_jsonable
from hooked_mlp.data import all_pairs

HOOKS = ("hook_embed_a", "hook_embed_b", "hook_pre", "hook_post")


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


@torch.no_grad()
def activation_grids(
    model: Any, neurons: list[int] | int | None = None, hook: str = "hook_post"
) -> ActivationGrids:
    """Every chosen neuron's activation on all `p^2` pairs, as `[n, p, p]` grids (rows: `a`)."""
    check_model(model)
    if hook not in HOOKS:
        raise ValueError(f"hook must be one of {list(HOOKS)}, got {hook!r}")
    chosen = check_neurons(neurons, model.cfg.d_hidden)
    p = model.cfg.p
    _, cache = model.run_with_cache(all_pairs(p, model.device), names_filter=hook)
    acts = cache[hook][:, chosen].cpu()  # [p^2, n]
    return ActivationGrids(hook, chosen, acts.t().reshape(len(chosen), p, p).contiguous())
