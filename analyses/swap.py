"""He et al. 2026's analyses of a trained model (the toolkit's other readings of their paper are
the IPR and the lottery in `analyses.dynamics`):

- `activation_swap`: replace the trained activation (ReLU) by another one at test time and
  measure accuracy. Their claim: even activations (|x|, x^2, x^4, ...) keep the accuracy and
  odd ones (x, x^3) lose it. The swap is a pair of hooks on each hidden layer
  (`swapped(model, fn)`: `hook_post` is replaced by `fn(hook_pre)`), so every analysis sees it.
- `phase_moments`: the phase-symmetry moments `|<cos m phi>|`, `|<sin m phi>|`, `m = 1..8`,
  over the neurons of each frequency (`phi` the phase of a neuron's `a` input weights at its
  frequency, from the DFT), averaged over frequencies weighted by their number of neurons.
  Phases spread evenly over a frequency's neurons make the low moments vanish; `null` is what
  uniformly random phases would give on average (`1 / sqrt(pi n)` per group of n, the normal
  approximation).
- `frequency_subsets`: the loss of the model reduced to its top-k frequencies as k grows: its
  logits projected on the `a + s b` directions of those frequencies (the restricted logits of
  `analyses.frequency_losses.frequency_losses`; frequencies ranked by `analyses.frequency_losses.
  logit_frequency_power`).
- `detect_stages`: their stage detector on a training history: stage 1 (memorisation) ends at
  the first record with train accuracy >= 0.95, stage 2 at the first with test accuracy >=
  0.95 (when the first does not come before the second, it is placed at a third of the
  second, as their code does; without accuracies, losses below 0.1 stand in).
  `compare_stages` sets it beside `analyses.dynamics.find_phases`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from analyses._common import check_all_pairs_memory, check_model, headline, to_jsonable
from analyses.fourier import dft
from analyses.groups import by_frequency

# the activations of the swap, with their parity (f(-x) = f(x): even)
SWAPS: dict[str, tuple[Callable[[Tensor], Tensor], str]] = {
    "relu": (torch.relu, "neither"),
    "abs": (torch.abs, "even"),
    "quad": (torch.square, "even"),
    "quartic": (lambda x: x.pow(4), "even"),
    "softplus": (F.softplus, "neither"),
    "exp": (torch.exp, "neither"),
    "identity": (lambda x: x, "odd"),
    "cubic": (lambda x: x.pow(3), "odd"),
}
DEFAULT_SWAPS = ("relu", "abs", "quad", "quartic", "softplus", "exp", "identity", "cubic")
N_MOMENTS = 8
STAGE_ACC = 0.95
STAGE_LOSS = 0.1

__all__ = ["DEFAULT_SWAPS", "SWAPS", "PhaseMoments", "Stages", "activation_swap",
           "compare_stages", "detect_stages", "frequency_subsets", "phase_moments", "swapped"]


# ------------------------------------------------------------------------------- the swap
@contextmanager
def swapped(model: Any, activation: str | Callable[[Tensor], Tensor]) -> Iterator[Any]:
    """Within the block, every hidden layer's `hook_post` is `activation(hook_pre)` (a name of
    `SWAPS` or a function of a tensor). Hooks removed on exit, also after an exception."""
    check_model(model)
    fn = _activation(activation)
    seen: dict[int, Tensor] = {}
    hooks = []
    for layer in range(model.cfg.n_layers):
        def keep(pre: Tensor, hook: Any, layer: int = layer) -> Tensor:
            seen[layer] = pre
            return pre

        def replace(post: Tensor, hook: Any, layer: int = layer) -> Tensor:
            return fn(seen.pop(layer))

        hooks += [(f"blocks.{layer}.mlp.hook_pre", keep), (f"blocks.{layer}.mlp.hook_post",
                                                            replace)]
    with model.hooks(fwd_hooks=hooks):
        yield model


def _activation(activation: Any) -> Callable[[Tensor], Tensor]:
    if callable(activation):
        return activation
    if activation not in SWAPS:
        raise ValueError(f"activation must be one of {list(SWAPS)} or a function of a tensor, "
                         f"got {activation!r}")
    return SWAPS[activation][0]


def activation_swap(model: Any, activations: Sequence[str] = DEFAULT_SWAPS) -> dict[str, float]:
    """`{name: accuracy}` on every pair of the dataset with the model's activation replaced by
    each of `activations` (names of `SWAPS`) at test time. A swapped activation that overflows
    (exp, x^4 on large pre-activations) gives the accuracy of its logits' argmax, inf included
    (NaN logits count as wrong)."""
    from hooked_mlp.data import dataset

    check_model(model)
    if isinstance(activations, str) or not activations:
        raise ValueError(f"activations must be a non-empty list of names of {list(SWAPS)}, got "
                         f"{activations!r}")
    for name in activations:
        _activation(name)
    cfg = model.cfg
    check_all_pairs_memory(cfg, 3 * max(cfg.d_hidden, cfg.p), "activation_swap")
    tokens, labels = dataset(cfg, model.device)
    out = {}
    for name in activations:
        with swapped(model, name), torch.no_grad():
            logits = model(tokens)
        out[name] = float((logits.argmax(-1) == labels).double().mean())
    return out


# ------------------------------------------------------------------------------- phases
@dataclass
class PhaseMoments:
    """`cos[m - 1]`, `sin[m - 1]`: `|<cos m phi>|`, `|<sin m phi>|` over each frequency's
    neurons, averaged over frequencies weighted by their neurons (groups of one neuron left
    out: their moments are 1 by construction); `null[m - 1]` the same average for uniformly
    random phases; `per_frequency[k]` each group's `(cos, sin)` lists."""

    m: list[int]
    cos: list[float]
    sin: list[float]
    null: float
    n_neurons: int
    n_groups: int
    per_frequency: dict[int, tuple[list[float], list[float]]]

    def summary(self) -> dict[str, Any]:
        """The first four moments (cos and sin), random phases' value, the neurons and
        frequencies they average over."""
        return headline({"cos_1_4": self.cos[:4], "sin_1_4": self.sin[:4], "null": self.null,
                         "n_neurons": self.n_neurons, "n_groups": self.n_groups})

    def describe(self) -> str:
        low = ", ".join(f"m={m}: {c:.2f}/{s:.2f}" for m, c, s in
                        zip(self.m[:4], self.cos[:4], self.sin[:4], strict=True))
        return (f"phase moments |<cos m phi>|/|<sin m phi>| over {self.n_neurons} neurons in "
                f"{self.n_groups} frequencies: {low}; random phases would give about "
                f"{self.null:.2f}")

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dict(self.__dict__))


def phase_moments(model: Any, n_moments: int = N_MOMENTS) -> PhaseMoments:
    """The phase-symmetry moments (see the module's docstring) of the first layer."""
    check_model(model)
    if isinstance(n_moments, bool) or not isinstance(n_moments, int) or n_moments < 1:
        raise ValueError(f"n_moments must be a positive integer, got {n_moments!r}")
    groups = {k: v for k, v in by_frequency(model, alive_only=True).items() if len(v) > 1}
    if not groups:
        raise ValueError("no frequency has two or more live neurons: phase moments need groups")
    F_a = dft(model.W_a.detach().t().cpu())  # [H, K + 1]
    m = torch.arange(1, n_moments + 1, dtype=torch.float64)
    per, weights, cos_sum, sin_sum, null = {}, 0, torch.zeros(n_moments), torch.zeros(
        n_moments), 0.0
    for k, neurons in groups.items():
        phi = torch.angle(F_a[neurons, k])  # [n]
        c = torch.cos(m[:, None] * phi[None]).mean(1).abs()
        s = torch.sin(m[:, None] * phi[None]).mean(1).abs()
        per[k] = (c.tolist(), s.tolist())
        n = len(neurons)
        cos_sum += n * c
        sin_sum += n * s
        null += n / math.sqrt(math.pi * n)  # E|mean of n cos(U)| ~ 1 / sqrt(pi n)
        weights += n
    return PhaseMoments(m=m.int().tolist(), cos=(cos_sum / weights).tolist(),
                        sin=(sin_sum / weights).tolist(), null=null / weights,
                        n_neurons=weights, n_groups=len(groups), per_frequency=per)


# ------------------------------------------------------------------------------- subsets
def frequency_subsets(model: Any, ks: Sequence[int] | None = None) -> dict[str, list[Any]]:
    """`{"k": [...], "frequencies": [...], "loss": [...], "acc": [...], "model_loss": x}`: the
    loss and accuracy (every pair) of the model's logits restricted to its `k` strongest
    frequencies, for each `k` of `ks` (default 1, 2, 3, 4, 5, 6, 8, 10, 15, 20 and all)."""
    from analyses.frequency_losses import frequency_losses, logit_frequency_power

    power = logit_frequency_power(model)
    order = [int(i) + 1 for i in torch.argsort(power, descending=True)]
    K = len(order)
    if ks is None:
        ks = sorted({k for k in (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, K) if k <= K})
    ks = list(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= K
                     for k in ks):
        raise ValueError(f"ks must be a non-empty list of integers in [1, {K}], got {ks!r}")
    loss, acc, model_loss = [], [], float("nan")
    for k in ks:
        measured = frequency_losses(model, order[:k])
        loss.append(measured["restricted_loss"])
        acc.append(measured["restricted_acc"])
        model_loss = measured["loss_all"]
    return {"k": ks, "frequencies": order, "loss": loss, "acc": acc, "model_loss": model_loss}


# ------------------------------------------------------------------------------- stages
@dataclass
class Stages:
    """He et al.'s stage boundaries, as indices into the history's records (None: never):
    `stage1_end` (memorisation done), `stage2_end` (generalisation reached); `how` says
    which curves placed them."""

    stage1_end: int | None
    stage2_end: int | None
    how: str

    def summary(self) -> dict[str, Any]:
        """Both boundaries and how they were placed."""
        return self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _first_index(values: Sequence[float], ok: Callable[[float], bool]) -> int | None:
    return next((i for i, v in enumerate(values) if ok(v)), None)


def detect_stages(history: Mapping[str, Sequence[float]]) -> Stages:
    """Their detector on `history` (`train_acc` and `val_acc`, or `train_loss` and
    `val_loss`: one value per record, e.g. `TrainInfo.history`)."""
    if not isinstance(history, Mapping):
        raise TypeError(f"history must be a mapping of curves, got {type(history).__name__}")
    if history.get("train_acc") and history.get("val_acc"):
        s1 = _first_index(history["train_acc"], lambda v: v >= STAGE_ACC)
        s2 = _first_index(history["val_acc"], lambda v: v >= STAGE_ACC)
        how = "accuracy >= 0.95"
        if s1 is not None and s2 is not None and s1 >= s2:
            s1, how = s2 // 3, how + " (stage 1 placed at a third of stage 2)"
        return Stages(s1, s2, how)
    if history.get("train_loss") and history.get("val_loss"):
        return Stages(_first_index(history["train_loss"], lambda v: v < STAGE_LOSS),
                      _first_index(history["val_loss"], lambda v: v < STAGE_LOSS), "loss < 0.1")
    raise ValueError("history must hold train_acc and val_acc (or train_loss and val_loss) "
                     f"curves, got {sorted(history)}")


def compare_stages(history: Mapping[str, Sequence[float]], phases: Any) -> dict[str, Any]:
    """Their stages beside `analyses.dynamics.find_phases`'s (`phases`: a `Phases`), in epochs
    (history index `i` is epoch `i + 1`, as `find_phases` counts)."""
    stages = detect_stages(history)

    def epoch(i: int | None) -> int | None:
        return None if i is None else i + 1

    return {"he_memorisation_end": epoch(stages.stage1_end),
            "he_generalisation": epoch(stages.stage2_end), "he_how": stages.how,
            "memorisation_end": phases.memorisation_end, "jump": phases.jump,
            "val_acc_50": phases.val_acc_50, "cleanup_end": phases.cleanup_end,
            "val_loss_half": phases.val_loss_half}
