"""How it formed: the progress measures of a model's training history, as an experiment.

`how_it_formed(models, model_paths, shipped)` finds the first model's snapshots (those it
carries, those beside its checkpoint, or for the shipped seed-0 model the shipped series of its
retrained twin), uses them only when they are that model's history
(`hooked_mlp.files.series.series_matches`: the same config and recipe, ending at its weights),
and maps the progress measures (`analyses.dynamics.dynamics`, computations) over at most
`REPORT_SNAPSHOTS` of them, or reads them from the measures cache written for that very file
(`write_measures_cache`, checked against the checksum the snapshots file records). It returns a
`Formation`; pages show it (`analyses.pages.dynamics.how_it_formed_html`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyses._common import to_jsonable
from analyses.dynamics import Dynamics, Lottery, dynamics, find_phases
from hooked_mlp.files.format import atomic_write_text
from hooked_mlp.files.layout import PRETRAINED_DIR, SHIPPED_MEASURES, SHIPPED_SERIES

# --------------------------------------------------------------------------- measures cache
CACHE_KIND = "hooked-mlp dynamics measures"
# bump when a measure's definition changes: a cache of another version is not used
CACHE_VERSION = 2
SHIPPED_CACHE = SHIPPED_MEASURES  # the shipped series' measures (hooked_mlp.files.layout)
REPORT_SNAPSHOTS = 17  # the report's section measures at most this many snapshots of a series
# the lottery's numbers that are NaN, never None (JSON writes NaN as null)
_NEVER_NONE = ("hit_rate_magnitude", "chance_magnitude", "final_rank_median")


def _checksum(path: str | os.PathLike[str]) -> str | None:
    """The SHA-256 checksum a hooked-mlp file records of its contents (checked by every read of
    the file: `hooked_mlp.files.format`)."""
    from hooked_mlp.files.format import CheckpointError, read_header

    try:
        value = read_header(path).doc.get("checksum")
    except CheckpointError:
        return None
    return value if isinstance(value, str) else None


def write_measures_cache(series_path: str | os.PathLike[str], d: Dynamics,
                         cache_path: str | os.PathLike[str]) -> None:
    """Write the scalar measures, key frequencies and lottery of `d` (the dynamics of the
    snapshots file `series_path`) to the JSON `cache_path`, atomically, with the checksum the
    file records of its contents, so that `read_measures_cache` uses it for that file only."""
    checksum = _checksum(series_path)
    if checksum is None:
        raise ValueError(f"{series_path} is not a hooked-mlp snapshots file with a checksum")
    doc = {"kind": CACHE_KIND, "version": CACHE_VERSION,
           "snapshots_checksum": checksum, "epochs": d.epochs,
           "key_frequencies": d.key_frequencies, "measures": d.measures,
           "lottery": None if d.lottery is None else d.lottery.to_dict()}
    atomic_write_text(cache_path, json.dumps(to_jsonable(doc), separators=(",", ":"),
                                             allow_nan=False))


def read_measures_cache(series: Any, series_path: str | os.PathLike[str],
                        cache_path: str | os.PathLike[str]) -> Dynamics | None:
    """The dynamics of `series` (read from `series_path`) from the cache `cache_path`: None
    when there is none, it was written for another file or another version of the measures,
    or it does not fit the series. Phases are placed afresh (`find_phases`); the per-neuron
    spectra over time are not cached (`dominant`, `power` None)."""
    try:
        doc = json.loads(Path(cache_path).read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or doc.get("kind") != CACHE_KIND or \
                doc.get("version") != CACHE_VERSION or \
                doc.get("snapshots_checksum") in (None, "") or \
                doc.get("snapshots_checksum") != _checksum(series_path) or \
                doc.get("epochs") != list(series.epochs):
            return None
        n = len(series.epochs)
        measures = {str(k): [math.nan if v is None else float(v) for v in values]
                    for k, values in doc["measures"].items()}
        if any(len(v) != n for v in measures.values()):
            return None
        keys = [int(k) for k in doc["key_frequencies"]]
        lot = None if doc["lottery"] is None else Lottery(**{
            k: math.nan if v is None and k in _NEVER_NONE else v
            for k, v in doc["lottery"].items()})
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    info = series.train_info
    history = dict(info.history) if info is not None else {}
    return Dynamics(list(series.epochs), keys, measures, history, None, None, lot,
                    find_phases(history, series.epochs, measures),
                    source=getattr(series, "source", ""))


def _fewer(series: Any, n: int) -> Any:
    """At most `n` snapshots of a `SnapshotSeries`, evenly spaced in the series (the first and
    the last kept)."""
    from hooked_mlp.files.series import SnapshotSeries

    if len(series) <= n or not isinstance(series, SnapshotSeries):
        return series
    keep = sorted({round(i * (len(series) - 1) / (n - 1)) for i in range(n)})
    return SnapshotSeries(series.cfg, [series.epochs[i] for i in keep],
                          {k: v[keep] for k, v in series.params.items()}, series.train_info,
                          source=series.source)


# --------------------------------------------------------------------------- the experiment
def series_for(model: Any, path: Any, shipped: bool) -> tuple[Any, str] | None:
    """The snapshots a model carries (`train_info.snapshots`), those beside its checkpoint (a
    run folder's `snapshots-seed-<s>`), or for the shipped seed-0 model the shipped series of
    its retrained twin."""
    from hooked_mlp.files.series import find_series, read_series

    info = model.train_info
    if info is None:
        return None
    if info.snapshots is not None:
        return info.snapshots, "the snapshots taken while it trained"
    seed = info.train_config.seed
    if path is not None:
        candidate = find_series(Path(path).parent, seed)  # by the seed the file records
        if candidate is not None:
            return read_series(candidate), f"snapshots of {Path(path).name} ({candidate.name})"
        return None
    twin = PRETRAINED_DIR / SHIPPED_SERIES
    if shipped and seed == 0 and twin.is_file():
        return read_series(twin), (
            "the shipped snapshots of seed 0 retrained with the same recipe and split "
            "(hooked_mlp/pretrained/SNAPSHOTS.md: not bit-identical to seed-0.safetensors)")
    return None


def _section_dynamics(series: Any, shipped_twin: bool) -> tuple[Dynamics, str]:
    """The dynamics the report's section shows: the shipped series' from its cache (measured
    afresh if the cache is missing or stale), any other's over at most `REPORT_SNAPSHOTS`."""
    if shipped_twin:
        d = read_measures_cache(series, PRETRAINED_DIR / SHIPPED_SERIES,
                                PRETRAINED_DIR / SHIPPED_CACHE)
        if d is not None:
            return d, f"{len(d.epochs)} snapshots (measures read from {SHIPPED_CACHE})"
    fewer = _fewer(series, REPORT_SNAPSHOTS)
    note = "" if len(fewer) == len(series) else f" (measured at {len(fewer)} of them)"
    return dynamics(fewer), f"{len(series)} snapshots{note}"


@dataclass
class Formation:
    """How one model formed: `dynamics` of its own snapshots, `source` (which snapshots) and
    `count` (how many were measured, and how); or, when the snapshots found are not its
    history, `dynamics` None and `left_out` saying which were found and why not."""

    source: str
    count: str = ""
    dynamics: Dynamics | None = None
    left_out: str | None = None

    def summary(self) -> dict[str, Any]:
        """Which snapshots, how many were measured, why they were left out (None: measured),
        and the dynamics' headline numbers (None when left out)."""
        return {"source": self.source, "count": self.count, "left_out": self.left_out,
                "dynamics": None if self.dynamics is None else self.dynamics.summary()}

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "count": self.count, "left_out": self.left_out,
                "dynamics": None if self.dynamics is None else self.dynamics.to_dict()}

    def describe(self) -> str:
        if self.dynamics is None:
            return f"Left out: {self.source} were found, but {self.left_out}."
        return f"From {self.source}: {self.count}.\n{self.dynamics.describe()}"


def how_it_formed(models: list[Any], model_paths: list[Any] | None = None,
                  shipped: bool = False) -> Formation | None:
    """"How it formed" for the first model that has snapshots (`shipped`: the models are the
    shipped ones), measured only when the snapshots are its own; None when no model has any."""
    from hooked_mlp.files.series import series_matches

    paths = list(model_paths) if model_paths else [None] * len(models)
    for model, path in zip(models, paths, strict=True):
        found = series_for(model, path, shipped)
        if found is None:
            continue
        series, what = found
        why = series_matches(series, model)
        if why is not None:
            return Formation(what, left_out=why)
        d, count = _section_dynamics(series, shipped and model.train_info.snapshots is None
                                     and path is None)
        return Formation(what, count, d)
    return None


_series_for = series_for  # the name analyses.pages.report used

__all__ = [
    "CACHE_KIND",
    "CACHE_VERSION",
    "REPORT_SNAPSHOTS",
    "SHIPPED_CACHE",
    "Formation",
    "how_it_formed",
    "read_measures_cache",
    "series_for",
    "write_measures_cache",
]
