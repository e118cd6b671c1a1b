"""How the circuit forms: progress measures over snapshots, the lottery over frequencies, phases.

Progress measures (Nanda et al. 2023, "Progress measures for grokking via mechanistic
interpretability"), each a plain function of one model:

- `split_measures` (here): loss and accuracy on the stored train and validation splits;
- `frequency_losses`, `key_frequencies` (`analyses.frequency_losses`, where they are defined):
  the restricted and excluded losses for the key frequencies, chosen from the final model;
- `weight_norms` (here): total squared weight norm, per parameter;
- `neuron_measures` (`analyses.neuron_measures`, one hidden layer): per neuron the inverse
  participation ratio of its input spectrum, its dominant frequency, its phase error and
  whether one cosine explains its inputs.

`snapshot_measures` gives all of them for one model; `dynamics(series)` maps them over a
`SnapshotSeries` (`hooked_mlp.load_snapshots`); `lottery` (`analyses.neuron_measures`) compares
each neuron's initial spectrum with its final frequency (He et al.); `find_phases`
(`analyses.phases`) places the ends of memorisation, circuit formation and clean-up. Every name
of those modules that this one used to hold is still importable from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from analyses._common import Summary, check_model, headline, phase_sign, to_jsonable
from analyses.frequency_losses import (
    check_key_frequencies,
    frequency_losses,
    key_frequencies,
    logit_frequency_power,
    logits_grid,
)
from analyses.neuron_measures import (
    CLEAR_FREQUENCY,
    R2_EXPLAINED,
    Lottery,
    NeuronMeasures,
    ipr,
    lottery,
    neuron_measures,
)
from analyses.phases import Phases, find_phases
from hooked_mlp._moved import renamed
from hooked_mlp.checks import check_finite_logits
from hooked_mlp.data import split_indices
from hooked_mlp.helpers import split_tokens

__all__ = ["CLEAR_FREQUENCY", "R2_EXPLAINED", "Dynamics", "Lottery", "NeuronMeasures", "Phases",
           "dynamics", "find_phases", "frequency_losses", "ipr", "key_frequencies",
           "logit_frequency_power", "lottery", "neuron_measures", "snapshot_measures",
           "split_measures", "weight_norms"]
__getattr__ = renamed(__name__)  # its old names: the rows of analyses/__init__.py


# --------------------------------------------------------------------------- one model
@torch.no_grad()
def split_measures(model: Any, grid: Tensor | None = None) -> dict[str, float]:
    """Mean cross-entropy and accuracy on the stored splits (`train_*`, `val_*`), or on every
    pair (`all_*`) for a model without a training record. `grid`: the model's logits of every
    pair `[p*p, p]` (pair `a * p + b`) when already computed, read instead of a forward on
    each split."""
    check_model(model)
    splits = ["all"]
    info = model.train_info
    if info is not None:
        splits = ["train", "val"] if bool((~info.train_mask).any()) else ["train"]
        sides = split_indices(model.cfg, info.train_mask.cpu())
    out = {}
    for split in splits:
        try:
            tokens, labels = split_tokens(model, split)
        except ValueError:  # e.g. no validation pair left by this operation
            continue
        if grid is not None and split != "all":
            logits = grid[sides[0] if split == "train" else sides[1]].to(labels.device)
        else:
            logits = model(tokens)
        check_finite_logits(logits, f"the {split} loss and accuracy")
        out[f"{split}_loss"] = float(F.cross_entropy(logits.float(), labels))
        out[f"{split}_acc"] = float((logits.argmax(-1) == labels).float().mean())
    return out



def weight_norms(model: Any) -> dict[str, float]:
    """Squared L2 norm of each parameter (`W_in`, `b_in`, ...) and their total (`total`)."""
    check_model(model)
    out = {name: float(v.double().square().sum()) for name, v in model.state_tensors().items()}
    out["total"] = sum(out.values())
    return out



# --------------------------------------------------------------------------- over a series
@dataclass
class Dynamics:
    """The progress measures of every snapshot of a run.

    `measures[name]` holds one value per snapshot (`epochs`); `history` the run's per-epoch
    curves (empty for an imported series); `dominant` `[T, d_hidden]` and `power`
    `[T, d_hidden, K]` each neuron's frequency and normalised input spectrum over time.
    """

    epochs: list[int]
    key_frequencies: list[int]
    measures: dict[str, list[float]]
    history: dict[str, list[float]]
    dominant: Tensor | None
    power: Tensor | None
    lottery: Lottery | None
    phases: Phases
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({
            "source": self.source, "epochs": self.epochs,
            "key_frequencies": self.key_frequencies, "measures": self.measures,
            "history": self.history,
            "dominant": self.dominant, "frequency_share": self.frequency_share(),
            "lottery": None if self.lottery is None else self.lottery.to_dict(),
            "phases": self.phases.to_dict(),
        })

    def frequency_share(self) -> Tensor | None:
        """The share of neurons whose input spectrum peaks at each frequency, per snapshot:
        `[T, K]` (frequency `k` at column `k - 1`)."""
        if self.dominant is None or self.power is None:
            return None
        T, H, K = self.power.shape
        share = torch.zeros(T, K)
        for t in range(T):
            dom = self.dominant[t]
            share[t] = torch.bincount(dom[dom > 0] - 1, minlength=K).float() / H
        return share

    def clearest_neurons(self, n: int) -> list[int]:
        """Up to `n` neurons whose final input spectra are clearest (largest peak share), one
        per final dominant frequency first, then the next clearest; sorted by index. Empty when
        the spectra were not measured."""
        if self.power is None or self.dominant is None:
            return []
        final = self.power[-1]  # [H, K]
        order = torch.argsort(final.max(dim=1).values, descending=True).tolist()
        chosen: list[int] = []
        seen: set[int] = set()
        for i in order:
            k = int(self.dominant[-1, i])
            if len(chosen) < n and k not in seen:
                chosen.append(i)
                seen.add(k)
        for i in order:
            if len(chosen) < n and i not in chosen:
                chosen.append(i)
        return sorted(chosen)

    def summary(self) -> Summary:
        """The headline numbers: snapshots, key frequencies, the phases, and each measure's
        first and last value (the text of the same is `describe()`)."""
        ends = {f"{name}_{at}": values[i] for name, values in self.measures.items()
                if "." not in name for at, i in (("first", 0), ("last", -1))}
        lot = {} if self.lottery is None else {
            "lottery_hit_rate_magnitude": self.lottery.hit_rate_magnitude,
            "lottery_chance_magnitude": self.lottery.chance_magnitude}
        return headline({"n_snapshots": len(self.epochs), "epoch_first": self.epochs[0],
                         "epoch_last": self.epochs[-1],
                         "n_key_frequencies": len(self.key_frequencies),
                         **self.phases.summary(), **ends, **lot})

    def describe(self) -> str:
        """What the series shows, in a few lines: the phases, the losses, the neurons, the
        lottery."""
        ph = self.phases
        m = self.measures
        lines = [f"{len(self.epochs)} snapshots, epochs {self.epochs[0]}..{self.epochs[-1]}; "
                 f"{len(self.key_frequencies)} key frequencies {self.key_frequencies}"]
        def at(epoch: int | None, prefix: str = "") -> str:  # None: the run never got there
            return "never" if epoch is None else f"at {prefix}{epoch}"

        lines.append(f"memorisation ends {at(ph.memorisation_end, 'epoch ')}, validation "
                     f"accuracy jumps {at(ph.jump)} (50 % {at(ph.val_acc_50)}), clean-up "
                     f"ends {at(ph.cleanup_end)}")
        if ph.jump is not None and ph.memorisation_end is not None and \
                ph.jump <= ph.memorisation_end:
            lines.append("no grokking: validation accuracy rose with train accuracy, so the "
                         "phases overlap")
        if ph.restricted_half is not None:
            lines.append(f"restricted loss half-way down at epoch {ph.restricted_half} "
                         f"({_lead(ph.restricted_leads_by)}); validation loss half-way down at "
                         f"{ph.val_loss_half}")
        if "ipr_mean" in m:
            lines.append(f"mean IPR {m['ipr_mean'][0]:.3f} -> {m['ipr_mean'][-1]:.3f}; "
                         f"neurons one cosine explains {m['frac_cosine'][0]:.0%} -> "
                         f"{m['frac_cosine'][-1]:.0%}; frequencies in use "
                         f"{m['n_frequencies'][-1]:g}")
        if self.lottery is not None:
            lines.append(f"lottery: {self.lottery.describe()}")
        return "\n".join(lines)


def _lead(by: int | None) -> str:
    if by is None:
        return "no jump to compare with"
    if by > 0:
        return f"{by} epochs before the jump"
    return f"{-by} epochs after the jump" if by < 0 else "at the jump"


def snapshot_measures(model: Any, keys: Sequence[int] | None) -> tuple[dict[str, float],
                                                                        NeuronMeasures | None]:
    """Every scalar progress measure of one model, and its per-neuron measures (None for a
    deeper model or a dense first layer). `keys` None skips the restricted and excluded losses.
    One forward over every pair serves both the splits and the frequency losses."""
    grid = None if keys is None else logits_grid(model)
    out = split_measures(model, grid)
    if keys is not None:
        out.update(frequency_losses(model, keys, grid))
    norms = weight_norms(model)
    out["weight_norm"] = norms.pop("total")
    out.update({f"weight_norm.{k}": v for k, v in norms.items()})
    neurons = None
    if model.cfg.n_layers == 1 and model.cfg.input_encoding == "one_hot":
        neurons = neuron_measures(model)
        out.update(neurons.summary())
    return out, neurons


def dynamics(series: Any, keys: Sequence[int] | None = None,
             coverage: float = 0.95) -> Dynamics:
    """The progress measures of every snapshot of `series` (a `SnapshotSeries` or an imported
    series: `hooked_mlp.load_snapshots`), the lottery between its first and last snapshots, and
    the phases. The key frequencies `keys` are the last snapshot's (`key_frequencies(final,
    coverage)`) unless given."""
    epochs = getattr(series, "epochs", None)
    if epochs is None or not hasattr(series, "__len__") or len(series) != len(epochs):
        raise TypeError(f"series must be a sequence of models with .epochs (hooked_mlp."
                        f"load_snapshots), got {type(series).__name__}")
    if len(series) < 2:
        raise ValueError("dynamics needs at least two snapshots")
    final = series[-1]
    check_model(final)
    fourier = final.cfg.p >= 3 and phase_sign(final.cfg) is not None
    if keys is not None:
        keys = check_key_frequencies(list(keys), final.cfg.p)
    elif fourier:
        keys = key_frequencies(final, coverage)
    measures: dict[str, list[float]] = {}
    dominant, power = [], []
    first = None
    for i, model in enumerate(series):
        if i == 0:
            first = model
        scalars, neurons = snapshot_measures(model, keys)
        for name, value in scalars.items():
            measures.setdefault(name, []).append(value)
        if neurons is not None:
            dominant.append(neurons.dominant)
            power.append(neurons.power)
    n = len(series)
    measures = {k: v for k, v in measures.items() if len(v) == n}
    info = getattr(series, "train_info", None)
    history = dict(info.history) if info is not None else {}
    lot = None
    if final.cfg.n_layers == 1 and final.cfg.p >= 3 and final.cfg.input_encoding == "one_hot":
        lot = lottery(first, final, initial_epoch=epochs[0])
    phases = find_phases(history, epochs, measures)
    return Dynamics(list(epochs), keys or [], measures, history,
                    torch.stack(dominant) if dominant else None,
                    torch.stack(power) if power else None, lot, phases,
                    source=getattr(series, "source", ""))
