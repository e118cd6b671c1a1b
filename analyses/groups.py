"""Groups of first-layer neurons: by dominant frequency, by fitted form, dead or alive.

Each grouping is a plain `{key: [neuron, ...]}` (neurons ascending, keys ascending), ready for
`analyses.patching.ablate(model, neurons)`:

    from analyses.groups import by_frequency
    from analyses.patching import ablate
    groups = by_frequency(model)            # {14: [3, 17, ...], 35: [...], ...}
    with ablate(model, groups[14]):          # every analysis sees the ablation
        print(accuracy(model))

The definitions are the toolkit's own, not new ones: a neuron's frequency is
`analyses.fourier.neuron_spectra(model).input_frequency` (the frequency with the most power in
`W_a` and `W_b` together); its form the BIC winner of `analyses.forms.compare_forms`; a dead
neuron is `analyses.cosine_fit.dead_neurons` (the same activation on every pair).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from analyses._common import check_model
from analyses.cosine_fit import dead_neurons
from analyses.fourier import SIGNALS, neuron_spectra

__all__ = ["by_form", "by_frequency", "dead_or_alive", "groups_of"]


def groups_of(labels: Tensor | list[Any], keep: Tensor | None = None) -> dict[Any, list[int]]:
    """`{label: [neurons with that label]}` from one label per neuron (`[d_hidden]`), keys
    sorted; neurons where `keep` (bool `[d_hidden]`) is False are left out."""
    values = labels.tolist() if isinstance(labels, Tensor) else list(labels)
    kept = [True] * len(values) if keep is None else [bool(k) for k in keep.tolist()]
    out: dict[Any, list[int]] = {}
    for neuron, (label, ok) in enumerate(zip(values, kept, strict=True)):
        if ok:
            out.setdefault(label, []).append(neuron)
    return dict(sorted(out.items()))


def by_frequency(model: Any, *, alive_only: bool = False) -> dict[int, list[int]]:
    """`{k: [neuron, ...]}`: the first layer's neurons grouped by their dominant input
    frequency `k` (`1..(p-1)/2`, see the module's docstring). A neuron whose input weights are
    constant has no frequency and is in no group; `alive_only=True` also leaves out the dead
    neurons (ablating them changes nothing). One-hot inputs, p >= 3; deeper models too (their
    first layer)."""
    check_model(model)
    freq = neuron_spectra(model).input_frequency  # [d_hidden], 0: no frequency
    keep = freq > 0
    if alive_only:
        keep &= ~dead_neurons(model)
    return {int(k): v for k, v in groups_of(freq, keep).items()}


def dead_or_alive(model: Any) -> dict[str, list[int]]:
    """`{"alive": [...], "dead": [...]}` for the first layer (`analyses.cosine_fit.dead_neurons`:
    a dead neuron's activation is the same on every pair; read through the model's forward,
    hooks included)."""
    check_model(model)
    dead = dead_neurons(model)
    n = torch.arange(dead.numel())
    return {"alive": n[~dead].tolist(), "dead": n[dead].tolist()}


def by_form(model: Any, signal: str = "a") -> dict[str, list[int]]:
    """`{form: [neuron, ...]}`: neurons grouped by the form (`analyses.forms.FORMS`) that
    describes their `signal` weights best (BIC; `signal` one of "a", "b", "out"); neurons whose
    weights are constant are grouped under "constant". One hidden layer, one-hot inputs."""
    from analyses.forms import compare_forms

    if signal not in SIGNALS:
        raise ValueError(f"signal must be one of {list(SIGNALS)}, got {signal!r}")
    comparison = compare_forms(model)
    defined = comparison.defined[signal].tolist()
    labels = [form if ok else "constant" for form, ok in
              zip(comparison.winners[signal], defined, strict=True)]
    return groups_of(labels)
