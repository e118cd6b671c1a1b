"""The frequency-ablation experiment: what the model loses when one frequency's neurons go, and
what is left when all but its top-k frequencies go.

    from analyses.experiments.ablation import frequency_ablation
    result = frequency_ablation(model)          # how="zero" | "mean" | "resample"
    print(result.describe()); result.summary(); result.figures()["ablation"]

Neurons are grouped by `analyses.groups.by_frequency` and removed with
`analyses.patching.ablate` (a hook on `blocks.0.mlp.hook_post`); loss and accuracy are measured
on every pair of the dataset. Frequencies are ranked by the loss their removal alone costs
(largest first, ties by the number of neurons, then by frequency): "top-k" keeps the neurons
of the first k frequencies of that ranking and ablates every other first-layer neuron (those
with no frequency included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from analyses._common import check_all_pairs_memory, check_model, headline, to_jsonable
from analyses.groups import by_frequency
from analyses.patching import HOW, ablate
from hooked_mlp.checks import check_finite_logits
from hooked_mlp.data import dataset


@dataclass
class FrequencyAblation:
    """One model's frequency ablation. Lists run over `frequencies` (ascending): `n_neurons`,
    `loss_without`, `acc_without` (that frequency's neurons ablated); `ranking` the
    frequencies by the loss their removal costs; `keep_k`, `loss_keep`, `acc_keep` the model
    with only the neurons of the top `k` frequencies of the ranking."""

    p: int
    how: str
    loss: float
    acc: float
    frequencies: list[int]
    n_neurons: list[int]
    loss_without: list[float]
    acc_without: list[float]
    ranking: list[int]
    keep_k: list[int]
    loss_keep: list[float]
    acc_keep: list[float]

    def k_for(self, acc: float = 0.99) -> int | None:
        """The fewest top frequencies whose neurons alone reach accuracy `acc` (None: none)."""
        return next((k for k, a in zip(self.keep_k, self.acc_keep, strict=True) if a >= acc),
                    None)

    def _worst(self) -> int:
        """The index of the frequency whose removal costs the most loss."""
        return max(range(len(self.frequencies)), key=lambda i: self.loss_without[i])

    def summary(self) -> dict[str, Any]:
        """The unablated loss and accuracy, the costliest frequency to remove, and the fewest
        top frequencies that keep 99 % accuracy (`k_99`, None: no number of them does)."""
        worst = self._worst()
        return headline({"p": self.p, "how": self.how, "loss": self.loss, "acc": self.acc,
                         "n_frequencies": len(self.frequencies),
                         "costliest_frequency": self.frequencies[worst],
                         "costliest_n_neurons": self.n_neurons[worst],
                         "loss_without_costliest": self.loss_without[worst],
                         "acc_without_costliest": self.acc_without[worst],
                         "k_99": self.k_for(0.99)})

    def describe(self) -> str:
        worst = self._worst()
        k99 = self.k_for(0.99)
        return (f"{len(self.frequencies)} frequencies among the neurons ({self.how} ablation); "
                f"unablated loss {self.loss:.3g}, accuracy {self.acc:.1%}. Removing one "
                f"frequency costs at most frequency {self.frequencies[worst]} "
                f"({self.n_neurons[worst]} neurons): loss {self.loss_without[worst]:.3g}, "
                f"accuracy {self.acc_without[worst]:.1%}. Keeping only the top "
                + (f"{k99} frequencies keeps 99% accuracy." if k99 is not None
                   else f"{self.keep_k[-1]} frequencies does not reach 99% accuracy."))

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dict(self.__dict__))

    def figures(self) -> dict[str, Any]:
        """`{"ablation": Figure}`: the loss with each frequency removed, and the accuracy with
        only the top-k kept."""
        from analyses.views import new_figure

        fig, axes = new_figure(10, 3.2, 1, 2)
        left, right = axes[0]
        left.bar(self.frequencies, self.loss_without, color="#1f77b4")
        left.axhline(self.loss, color="k", lw=0.8, ls="--", label="no ablation")
        left.set_xlabel("frequency k removed")
        left.set_ylabel("loss")
        left.set_title(f"loss without each frequency's neurons ({self.how})")
        left.legend()
        right.plot(self.keep_k, self.acc_keep, marker="o", color="#d62728")
        right.set_xlabel("top frequencies kept")
        right.set_ylabel("accuracy")
        right.set_ylim(0, 1.02)
        right.set_title("accuracy with only the top-k frequencies")
        return {"ablation": fig}


def _measure(model: Any, tokens: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Loss and accuracy on `tokens`; logits that overflowed are refused
    (`LogitsOverflowError`, as every loss and accuracy of the toolkit is)."""
    with torch.no_grad():
        logits = model(tokens)
    check_finite_logits(logits, "the frequency ablation's losses and accuracies")
    return (float(F.cross_entropy(logits.double(), labels)),
            float((logits.argmax(-1) == labels).double().mean()))


def _keep_ks(n: int, keep_k: Sequence[int] | None) -> list[int]:
    if keep_k is None:
        return sorted({k for k in (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 40, n) if k <= n})
    ks = list(keep_k)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n
                     for k in ks):
        raise ValueError(f"keep_k must be a non-empty list of integers in [1, {n}] (the model's "
                         f"neurons use {n} frequencies), got {keep_k!r}")
    return sorted(set(ks))


def frequency_ablation(model: Any, how: str = "zero", keep_k: Sequence[int] | None = None,
                       seed: int = 0) -> FrequencyAblation:
    """The experiment of the module's docstring on one model (one-hot inputs, any depth: its
    first layer). `keep_k`: the numbers of top frequencies to keep (default 1..6, 8, 10, 15,
    20, 30, 40 and all, up to how many there are); `how` and `seed` as in `ablate`."""
    check_model(model)
    if how not in HOW:
        raise ValueError(f"how must be one of {list(HOW)}, got {how!r}")
    cfg = model.cfg
    check_all_pairs_memory(cfg, 3 * max(cfg.d_hidden, cfg.p), "frequency_ablation")
    tokens, labels = dataset(cfg, model.device)
    groups = by_frequency(model)
    if not groups:
        raise ValueError("no neuron of the model's first layer has a frequency (every input "
                         "weight vector is constant): there is nothing to ablate by frequency")
    loss, acc = _measure(model, tokens, labels)
    freqs = list(groups)
    without = []
    for k in freqs:
        with ablate(model, groups[k], how=how, seed=seed):
            without.append(_measure(model, tokens, labels))
    ranking = [k for _, _, k in sorted(
        ((-without[i][0], -len(groups[k]), k) for i, k in enumerate(freqs)))]
    ks = _keep_ks(len(freqs), keep_k)
    kept = []
    for n in ks:
        keep = {neuron for k in ranking[:n] for neuron in groups[k]}
        with ablate(model, [i for i in range(cfg.d_hidden) if i not in keep], how=how,
                    seed=seed):
            kept.append(_measure(model, tokens, labels))
    return FrequencyAblation(
        p=cfg.p, how=how, loss=loss, acc=acc, frequencies=freqs,
        n_neurons=[len(groups[k]) for k in freqs], loss_without=[w[0] for w in without],
        acc_without=[w[1] for w in without], ranking=ranking, keep_k=ks,
        loss_keep=[k[0] for k in kept], acc_keep=[k[1] for k in kept])


@dataclass
class FrequencyAblations:
    """The experiment on several models (the report's shipped seeds): one `FrequencyAblation`
    each."""

    results: list[FrequencyAblation]
    labels: list[str]

    def summary(self) -> dict[str, Any]:
        """Each model's headline numbers, by label."""
        return {label: r.summary() for label, r in zip(self.labels, self.results, strict=True)}

    def describe(self) -> str:
        lines = [f"{label}: {r.describe()}" for label, r in zip(self.labels, self.results,
                                                                 strict=True)]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {label: r.to_dict() for label, r in zip(self.labels, self.results, strict=True)}

    def figures(self) -> dict[str, Any]:
        from analyses.views import SEED_COLORS, new_figure

        fig, axes = new_figure(6, 3.2)
        ax = axes[0, 0]
        for i, (label, r) in enumerate(zip(self.labels, self.results, strict=True)):
            ax.plot(r.keep_k, r.acc_keep, marker="o", ms=3, label=label,
                    color=SEED_COLORS[i % len(SEED_COLORS)])
        ax.set_xlabel("top frequencies kept (the rest ablated)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
        return {"keep_k": fig, **{f"ablation_{i}": r.figures()["ablation"]
                                  for i, r in enumerate(self.results[:1])}}


def frequency_ablation_section(ctx: Any) -> FrequencyAblations:
    """The report's section: `frequency_ablation` on each of `ctx.models` (labelled by
    `ctx.labels`), zero ablation. Seconds on the five shipped models."""
    models = list(ctx.models)
    labels = list(getattr(ctx, "labels", None) or [f"model {i}" for i in range(len(models))])
    return FrequencyAblations([frequency_ablation(m) for m in models], labels)
