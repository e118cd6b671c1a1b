"""How the circuit forms: progress measures over snapshots, the lottery over frequencies, phases.

Progress measures (Nanda et al. 2023, "Progress measures for grokking via mechanistic
interpretability"), each a plain function of one model:

- `split_measures`: loss and accuracy on the stored train and validation splits;
- `frequency_losses`: the restricted and excluded losses. Over the grid of all pairs, the logits
  of each answer `c` are a function of `(a, b)`; for the operation `a + s b` (`s = +1` for add,
  `-1` for sub) the directions `cos(w_k (a + s b))` and `sin(w_k (a + s b))`, `w_k = 2 pi k / p`,
  carry the part of that function that depends on `a + s b` through frequency `k` (the 2-D
  Fourier components `cos_k x cos_k -+ sin_k x sin_k` and `sin_k x cos_k +- cos_k x sin_k`).
  Their projection for the key frequencies is `P[a, b, c] = (2 / p^2) sum_{k in key}
  Re(G_k[c] e^{i w_k (a + s b)})` with `G_k[c] = sum_{a, b} L[a, b, c] e^{-i w_k (a + s b)}`.
  The restricted logits keep the constant term too, as the paper does (every term "besides the
  constant term and the ... terms corresponding to cos(w_k(a + b)) and sin(w_k(a + b))" set to
  0; its code adds back each answer's mean logit): `R = P + mean_{a,b} L[a, b, c]`. The
  excluded logits lose the key directions only: `L - P`. The restricted loss is measured on
  every pair (the paper's code: `mode='all'`), the excluded loss on the training pairs, as in
  the paper. An ideal circuit `L = sum_k cos(w_k (a + s b - c))` lies wholly in those
  directions: its restricted loss is its loss, its excluded loss is chance.
- `key_frequencies`: chosen from the final model, as in the paper, but by another criterion: the
  paper reads them off the sparse Fourier spectrum of the embedding (its code: the distinct
  frequencies of the neuron clusters); here they are the frequencies whose `a + s b` directions
  carry the most power in the logits, as many as reach `coverage` of that power (the
  restricted loss is about the logits). The two can differ where the model uses many
  frequencies: on the shipped snapshots' final model 34 of 56 by the logits against 26 distinct
  frequencies among the neurons one cosine explains; on the small grokking preset of the tests
  (p = 23) 10 of 11 against 9. `dynamics(series, keys=...)` takes any other choice.
- `weight_norms`: total squared weight norm, per parameter.
- `neuron_measures` (one hidden layer): per neuron the inverse participation ratio of its input
  spectrum, `IPR = sum_k |c_k|^4 / (sum_k |c_k|^2)^2` over the frequency magnitudes `|c_k|^2 =
  |F_a,k|^2 + |F_b,k|^2`, `k = 1..(p-1)/2` (He et al. 2026; the constant term is left out: IPR
  is 1 for one frequency and 1/K for a flat spectrum), its dominant frequency, its phase error
  `phi_out - (phi_a + s phi_b)` at that frequency (`- 2 phi` with tied inputs), whether one
  cosine explains its inputs (R^2 >= 0.9 for a and b; the study's ReLU outputs carry
  harmonics, so their R^2 is reported apart) and how many distinct frequencies such neurons
  use.

`dynamics(series)` maps them over a `SnapshotSeries` (`hooked_mlp.load_snapshots`); `lottery`
compares each neuron's initial spectrum with its final frequency (He et al.); `find_phases`
places the ends of memorisation, circuit formation and clean-up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from analyses._common import (
    check_fourier,
    check_model,
    check_one_hot,
    check_one_layer,
    phase_sign,
    to_jsonable,
    wrap_angle,
)
from analyses.fourier import dft, n_frequencies
from hooked_mlp._moved import renamed
from hooked_mlp.checks import check_finite_logits
from hooked_mlp.data import all_pairs, labels_of, split_indices
from hooked_mlp.helpers import split_tokens

__getattr__ = renamed(__name__)  # its old names: the rows of analyses/__init__.py

R2_EXPLAINED = 0.9
CLEAR_FREQUENCY = 0.5  # a neuron's final frequency counts in the lottery above this power share


# --------------------------------------------------------------------------- losses
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


def _sign(model: Any, what: str) -> int:
    s = phase_sign(model.cfg)
    if s is None:
        raise ValueError(f"{what} projects the logits on cos/sin of w_k(a + s b), which needs "
                         f"an operation a + s b (add or sub); this model computes "
                         f"{model.cfg.operation!r}")
    return s


@torch.no_grad()
def _logits_grid(model: Any) -> Tensor:
    """The logits of every pair, `[p*p, p]` float64 (pair index `a * p + b`), through the
    model's forward (hooks included)."""
    return model(all_pairs(model.cfg.p, model.device)).double().cpu()


def _sum_index(p: int, sign: int) -> Tensor:
    """`(a + sign * b) mod p` for every pair index `a * p + b`: int64 `[p*p]`."""
    pairs = all_pairs(p)
    return (pairs[:, 0] + sign * pairs[:, 1]) % p


def _direction_coefficients(logits: Tensor, p: int, sign: int) -> Tensor:
    """`G_k[c] = sum_{a,b} L[a,b,c] e^{-i w_k (a + s b)}` for `k = 0..p-1`: complex `[p, p]`
    (rows `k`, columns `c`), from the logits `[p*p, p]`."""
    by_sum = torch.zeros(p, p, dtype=logits.dtype).index_add_(0, _sum_index(p, sign), logits)
    return torch.fft.fft(by_sum, dim=0)  # over s: sum_s M[s, c] e^{-2 pi i k s / p}


def _restricted(logits: Tensor, p: int, sign: int, keys: Sequence[int]) -> Tensor:
    """Each answer's logits projected on `cos/sin(w_k (a + s b))` for the key frequencies
    (`P` of the module's docstring, without the constant term): `[p*p, p]`."""
    G = _direction_coefficients(logits, p, sign)
    ks = torch.tensor(list(keys), dtype=torch.int64)
    s = torch.arange(p, dtype=torch.float64)
    waves = torch.exp(2j * math.pi * s[:, None] * ks[None, :].double() / p)  # [p (s), n_keys]
    by_sum = (2.0 / p**2) * (waves @ G[ks]).real  # [p (s), p (c)]
    return by_sum[_sum_index(p, sign)]


def logit_frequency_power(model: Any) -> Tensor:
    """Power of the logits along `cos/sin(w_k (a + s b))` for `k = 1..(p-1)/2`: float64 `[K]`
    (the squared norm of each frequency's restricted logits over all pairs and answers)."""
    check_model(model)
    check_fourier(model.cfg, "logit_frequency_power")
    p = model.cfg.p
    G = _direction_coefficients(_logits_grid(model), p, _sign(model, "logit_frequency_power"))
    K = n_frequencies(p)
    return (2.0 / p**2) * G[1 : K + 1].abs().square().sum(dim=1)


def key_frequencies(model: Any, coverage: float = 0.95) -> list[int]:
    """The key frequencies of a (trained) model: the fewest frequencies, strongest first, whose
    `a + s b` directions carry `coverage` of the logits' power in all such directions.
    Ascending. (Nanda et al. read them off the embedding's spectrum; see the module's
    docstring.)"""
    if isinstance(coverage, bool) or not isinstance(coverage, (int, float)) or not (
            0 < coverage <= 1):
        raise ValueError(f"coverage must be a number in (0, 1], got {coverage!r}")
    power = logit_frequency_power(model)
    total = float(power.sum())
    if total <= 0:
        raise ValueError("the model's logits have no component along any frequency of "
                         "a + s b: it has no key frequencies")
    order = torch.argsort(power, descending=True)
    share = torch.cumsum(power[order], 0) / total
    n = int((share < coverage - 1e-12).sum()) + 1
    return sorted(int(k) + 1 for k in order[:n])


def _check_keys(keys: Any, p: int) -> list[int]:
    K = n_frequencies(p)
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence) or not keys or not all(
            isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= K for k in keys):
        raise ValueError(f"keys: the key frequencies must be a non-empty list of integers in "
                         f"[1, {K}], got {keys!r}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"key frequencies must be distinct, got {list(keys)}")
    return sorted(keys)


@torch.no_grad()
def frequency_losses(model: Any, keys: Sequence[int],
                     grid: Tensor | None = None) -> dict[str, float]:
    """Loss on every pair, restricted loss (every pair; `restricted_loss_train` on the
    training pairs) and excluded loss (training pairs; every pair for a model without a
    training record), for the key frequencies `keys` (see the module's docstring: the
    restricted logits keep the constant term, the excluded logits lose the key directions
    only). `grid`: the model's logits of every pair `[p*p, p]` float64 (`a * p + b`) when
    already computed."""
    check_model(model)
    check_fourier(model.cfg, "frequency_losses")
    p = model.cfg.p
    keys = _check_keys(keys, p)
    sign = _sign(model, "frequency_losses")
    logits = _logits_grid(model) if grid is None else grid
    labels = labels_of(all_pairs(p), model.cfg)
    check_finite_logits(logits, "the restricted and excluded losses")
    key_part = _restricted(logits, p, sign, keys)  # P: the key directions, no constant term
    restricted = key_part + logits.mean(dim=0, keepdim=True)  # R = P + each answer's mean
    info = model.train_info
    on = info.train_mask.cpu() if info is not None else torch.ones(p * p, dtype=torch.bool)
    excluded = (logits - key_part)[on]
    per_pair = F.cross_entropy(restricted, labels, reduction="none")
    return {
        "loss_all": float(F.cross_entropy(logits, labels)),
        "restricted_loss": float(per_pair.mean()),
        "restricted_loss_train": float(per_pair[on].mean()),
        "excluded_loss": float(F.cross_entropy(excluded, labels[on])),
        "restricted_acc": float((restricted.argmax(-1) == labels).double().mean()),
    }


def weight_norms(model: Any) -> dict[str, float]:
    """Squared L2 norm of each parameter (`W_in`, `b_in`, ...) and their total (`total`)."""
    check_model(model)
    out = {name: float(v.double().square().sum()) for name, v in model.state_tensors().items()}
    out["total"] = sum(out.values())
    return out


# --------------------------------------------------------------------------- neurons
@dataclass
class NeuronMeasures:
    """Per-neuron Fourier measures of one model (one hidden layer); tensors are `[d_hidden]`,
    `power` is each neuron's input power spectrum `[d_hidden, K]` (frequency `k` at column
    `k - 1`), normalised to sum 1 (0 for a constant neuron)."""

    ipr: Tensor
    ipr_out: Tensor
    dominant: Tensor  # int64, 0 for a neuron with no variance
    phase_error: Tensor | None  # None where the operation predicts no phase relation
    r2: Tensor  # the smaller of a's and b's best single-cosine share
    r2_out: Tensor  # the output weights' best single-cosine share
    power: Tensor

    @property
    def explained(self) -> Tensor:
        """Neurons whose inputs one cosine explains (R^2 >= 0.9 for a and b)."""
        return self.r2 >= R2_EXPLAINED

    def summary(self) -> dict[str, float]:
        ex = self.explained
        n_freq = int(torch.unique(self.dominant[ex]).numel()) if bool(ex.any()) else 0
        err = float("nan")
        if self.phase_error is not None:
            live = self.dominant > 0
            err = float(self.phase_error[live].abs().mean()) if bool(live.any()) else err
        return {"ipr_mean": float(self.ipr.mean()), "ipr_out_mean": float(self.ipr_out.mean()),
                "phase_error_abs_mean": err, "frac_cosine": float(ex.float().mean()),
                "frac_cosine_out": float((self.r2_out >= R2_EXPLAINED).float().mean()),
                "n_frequencies": n_freq}


def ipr(power: Tensor) -> Tensor:
    """Inverse participation ratio of spectra given as powers `|c_k|^2` `[..., K]`:
    `sum_k |c_k|^4 / (sum_k |c_k|^2)^2`, 1 for a single frequency, `1/K` for a flat spectrum
    (NaN for an all-zero spectrum)."""
    total = power.sum(dim=-1)
    return torch.where(total > 0, power.square().sum(dim=-1) / total.clamp_min(1e-300).square(),
                       torch.full_like(total, float("nan")))


def _spectra(model: Any) -> tuple[Tensor, Tensor, Tensor]:
    """The DFTs `[d_hidden, K + 1]` of every neuron's `W_a`, `W_b`, `W_out` (one layer)."""
    return (dft(model.W_a.detach().t().cpu()), dft(model.W_b.detach().t().cpu()),
            dft(model.W_out.detach().cpu()))


def neuron_measures(model: Any) -> NeuronMeasures:
    """Per-neuron IPR, dominant frequency, phase error and single-cosine R^2 (see the module's
    docstring for the definitions)."""
    check_model(model)
    check_fourier(model.cfg, "neuron_measures")
    check_one_layer(model, "neuron_measures")
    check_one_hot(model, "neuron_measures")
    Fa, Fb, Fo = _spectra(model)
    pa, pb, po = (f[:, 1:].abs().square() for f in (Fa, Fb, Fo))
    p_in = pa + pb
    total = p_in.sum(dim=1, keepdim=True)
    dominant = torch.where(total[:, 0] > 0, p_in.argmax(dim=1) + 1, 0)

    def share(pw: Tensor) -> Tensor:
        t = pw.sum(dim=1)
        return torch.where(t > 0, pw.max(dim=1).values / t.clamp_min(1e-300),
                           torch.zeros_like(t))

    r2 = torch.minimum(share(pa), share(pb))
    s = phase_sign(model.cfg)
    err = None
    if s is not None:
        k = dominant.clamp_min(1)[:, None]
        pha, phb, pho = (torch.angle(f.gather(1, k)).squeeze(1) for f in (Fa, Fb, Fo))
        err = wrap_angle(pho - (pha + s * phb)).float()
    return NeuronMeasures(ipr=ipr(p_in).float(), ipr_out=ipr(po).float(), dominant=dominant,
                          phase_error=err, r2=r2.float(), r2_out=share(po).float(),
                          power=(p_in / total.clamp_min(1e-300)).float())


# --------------------------------------------------------------------------- the lottery
@dataclass
class Lottery:
    """Whether each neuron's final frequency is the one its initial spectrum ranked first.

    Over the `n_neurons` neurons whose final input spectrum has a clear frequency (power share
    >= 0.5): `hit_rate_magnitude` (first by initial input power `|F_a,k|^2 + |F_b,k|^2`) and
    `hit_rate_alignment` (first by `sqrt(|F_a,k| |F_b,k|) |F_out,k| cos(D_k)`, `D_k = phi_out,k
    - (phi_a,k + s phi_b,k)`: the growth rate of frequency `k` in He et al.'s gradient-flow
    picture, large initial magnitudes with aligned phases). `chance` is the hit rate expected if
    the initial first choice were independent of the final frequency (the sum over `k` of the
    two frequencies' shares), `uniform` is `1/K`. `final_rank_median` is the median rank (1 =
    first) of the final frequency in the initial magnitude order.
    """

    n_neurons: int
    n_frequencies: int
    hit_rate_magnitude: float
    hit_rate_alignment: float | None
    chance_magnitude: float
    chance_alignment: float | None
    uniform: float
    final_rank_median: float
    final: list[int] = field(default_factory=list)
    initial_magnitude: list[int] = field(default_factory=list)
    initial_alignment: list[int] = field(default_factory=list)
    initial_epoch: int = 0

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self.__dict__)

    def summary(self) -> str:
        if self.n_neurons == 0:  # no hit rate to give (they are NaN): say why instead
            return (f"no neuron's final input spectrum has a clear frequency (power share >= "
                    f"0.5), so there is no hit rate to compare with chance (1/K = "
                    f"{self.uniform:.1%})")
        align = ("" if self.hit_rate_alignment is None else
                 f"; by alignment {self.hit_rate_alignment:.0%} (chance "
                 f"{self.chance_alignment:.0%})")
        return (f"{self.n_neurons} neuron{'s' * (self.n_neurons != 1)}: the final frequency was "
                f"the initial spectrum's first "
                f"by magnitude for {self.hit_rate_magnitude:.0%} (chance "
                f"{self.chance_magnitude:.0%}, 1/K = {self.uniform:.1%}){align}; median rank "
                f"of the final frequency at epoch {self.initial_epoch}: "
                f"{self.final_rank_median:g}")


def _chance(a: Tensor, b: Tensor, K: int) -> float:
    qa = torch.bincount(a - 1, minlength=K).double() / max(len(a), 1)
    qb = torch.bincount(b - 1, minlength=K).double() / max(len(b), 1)
    return float((qa * qb).sum())


def lottery(initial: Any, final: Any, initial_epoch: int = 0) -> Lottery:
    """The lottery over frequencies between two snapshots of one model (one hidden layer)."""
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, int) or initial_epoch < 0:
        raise ValueError(f"initial_epoch must be a non-negative integer (the epoch of `initial`), "
                         f"got {initial_epoch!r}")
    for name, m in (("initial", initial), ("final", final)):
        check_model(m)
        check_one_layer(m, f"lottery ({name})")
    check_fourier(final.cfg, "lottery")
    check_one_hot(final, "lottery")
    if initial.cfg != final.cfg:
        raise ValueError("initial and final must be snapshots of one model (their configs "
                         "differ)")
    K = n_frequencies(final.cfg.p)
    fin = neuron_measures(final)
    clear = fin.power.max(dim=1).values >= CLEAR_FREQUENCY
    Fa, Fb, Fo = (f[:, 1:] for f in _spectra(initial))
    mag = Fa.abs().square() + Fb.abs().square()
    first_mag = mag.argmax(dim=1) + 1
    order = torch.argsort(mag, dim=1, descending=True) + 1  # [H, K] frequencies, strongest first
    final_k = fin.dominant
    ranks = (order == final_k[:, None]).double().argmax(dim=1) + 1
    s = phase_sign(final.cfg)
    first_align = None
    if s is not None:
        D = torch.angle(Fo) - (torch.angle(Fa) + s * torch.angle(Fb))
        score = (Fa.abs() * Fb.abs()).sqrt() * Fo.abs() * torch.cos(D)
        first_align = score.argmax(dim=1) + 1
    idx = clear.nonzero().flatten()
    n = len(idx)
    nan = float("nan")

    def rate(first: Tensor | None) -> float | None:
        if first is None:
            return None
        return float((first[idx] == final_k[idx]).double().mean()) if n else nan

    return Lottery(
        n_neurons=n, n_frequencies=K,
        hit_rate_magnitude=rate(first_mag),
        hit_rate_alignment=rate(first_align),
        chance_magnitude=_chance(first_mag[idx], final_k[idx], K) if n else nan,
        chance_alignment=None if first_align is None else (
            _chance(first_align[idx], final_k[idx], K) if n else nan),
        uniform=1.0 / K,
        final_rank_median=float(ranks[idx].median()) if n else nan,
        final=final_k[idx].tolist(), initial_magnitude=first_mag[idx].tolist(),
        initial_alignment=[] if first_align is None else first_align[idx].tolist(),
        initial_epoch=initial_epoch,
    )


# --------------------------------------------------------------------------- phases
@dataclass
class Phases:
    """Where training changes regime, in epochs (None where the run never gets there).

    - `memorisation_end`: the first epoch with train accuracy >= 99 % (per-epoch curve).
    - `jump`: where validation accuracy rises fastest (the steepest point of its curve,
      smoothed over 1 % of the epochs); the circuit has formed enough to carry the held-out
      pairs. `val_acc_50` is where validation accuracy first reaches 50 %, for comparison.
    - `cleanup_end`: the first snapshot at or after the jump where validation accuracy is
      within 1 % of its final value and the total weight norm has made 90 % of its fall from
      its peak after memorisation to its final value.
    - `restricted_half`: the first snapshot where the restricted loss has made half of its fall
      from its peak to its final value; `restricted_leads_by` = `jump - restricted_half`
      (positive: the restricted loss falls before validation accuracy jumps). `val_loss_half`
      is the same for the validation loss (per-epoch curve), for comparison.
    - `excluded_low`, `excluded_peak`: the snapshots where the excluded loss is lowest (it falls
      with memorisation) and then highest after that (it rises as the circuit forms: removing
      the key frequencies hurts the training pairs more and more).
    """

    memorisation_end: int | None
    jump: int | None
    val_acc_50: int | None
    cleanup_end: int | None
    restricted_half: int | None
    restricted_leads_by: int | None
    val_loss_half: int | None
    excluded_low: int | None
    excluded_peak: int | None
    how: str = ""

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self.__dict__)


def _first(values: Sequence[float], ok: Any, start: int = 0) -> int | None:
    for i in range(start, len(values)):
        if ok(values[i]):
            return i
    return None


def _half_way(values: Sequence[float]) -> int | None:
    """The first index at or after the peak where `values` have made half of their fall from
    the peak to the last value (None when they hardly fall: by less than 10 % of the peak)."""
    if len(values) < 2:
        return None
    peak = max(range(len(values)), key=lambda i: values[i])
    if values[peak] - values[-1] < 0.1 * abs(values[peak]):
        return None
    half = (values[peak] + values[-1]) / 2
    return _first(values, lambda x: x <= half, start=peak)


def find_phases(history: dict[str, list[float]], epochs: Sequence[int],
                measures: dict[str, list[float]]) -> Phases:
    """Place the phase boundaries from the per-epoch curves (`history`: `train_acc`, `val_acc`,
    one value per epoch, epoch `i + 1` at index `i`) and the measures at the snapshot `epochs`
    (`restricted_loss`, `excluded_loss`, `weight_norm`). See `Phases`."""
    train_acc, val_acc = history.get("train_acc", []), history.get("val_acc", [])
    mem = _first(train_acc, lambda v: v >= 0.99)
    memorisation_end = None if mem is None else mem + 1
    jump = val50 = None
    if val_acc:
        v = torch.tensor(val_acc, dtype=torch.float64)
        w = max(1, len(v) // 100)
        smooth = F.avg_pool1d(F.pad(v[None, None], (w // 2, w - 1 - w // 2), mode="replicate"),
                              w, stride=1)[0, 0]
        rise = smooth[1:] - smooth[:-1]
        if len(rise) and float(v.max() - v[: max(mem or 0, 1)].min()) > 0.2:
            jump = int(rise.argmax()) + 2  # rise[i] is from epoch i + 1 to i + 2
        i50 = _first(val_acc, lambda x: x >= 0.5)
        val50 = None if i50 is None else i50 + 1
    ep = list(epochs)
    excluded_low = excluded_peak = cleanup_end = None
    i = _half_way(measures.get("restricted_loss", []))
    restricted_half = None if i is None else ep[i]
    i = _half_way(history.get("val_loss", []))
    val_loss_half = None if i is None else i + 1
    xl = measures.get("excluded_loss")
    if xl:
        low = min(range(len(xl)), key=lambda i: xl[i])
        excluded_low = ep[low]
        excluded_peak = ep[max(range(low, len(xl)), key=lambda i: xl[i])]
    wn = measures.get("weight_norm")
    if jump is not None and wn and val_acc:
        after = [i for i, e in enumerate(ep) if e >= (memorisation_end or 0)]
        top = max(wn[i] for i in after) if after else max(wn)
        final_val = val_acc[-1]
        for i, e in enumerate(ep):
            if e < jump or e < 1:
                continue
            norm_ok = top - wn[-1] <= 0 or (top - wn[i]) >= 0.9 * (top - wn[-1])
            if val_acc[e - 1] >= final_val - 0.01 and norm_ok:
                cleanup_end = e
                break
    leads = None if jump is None or restricted_half is None else jump - restricted_half
    how = ("memorisation ends at the first epoch with train accuracy >= 99 %; the jump is the "
           "steepest rise of validation accuracy (smoothed over 1 % of the epochs); clean-up "
           "ends at the first snapshot after the jump with validation accuracy within 1 % of its "
           "final value and 90 % of the weight norm's fall from its peak done; a loss 'falls' "
           "when it has made half of its descent from its peak to its final value")
    return Phases(memorisation_end, jump, val50, cleanup_end, restricted_half, leads,
                  val_loss_half, excluded_low, excluded_peak, how)


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

    def summary(self) -> str:
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
            lines.append(f"lottery: {self.lottery.summary()}")
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
    grid = None if keys is None else _logits_grid(model)
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
        keys = _check_keys(list(keys), final.cfg.p)
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
