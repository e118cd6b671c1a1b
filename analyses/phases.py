"""Where training changes regime: the ends of memorisation, circuit formation and clean-up,
placed from a run's per-epoch curves and the progress measures at its snapshots (`Phases`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from analyses._common import Summary, headline, to_jsonable

__all__ = ["Phases", "find_phases"]


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

    def summary(self) -> Summary:
        return headline({k: v for k, v in self.__dict__.items() if k != "how"})


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

