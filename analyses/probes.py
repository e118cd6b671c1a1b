"""Probes as plugins: the protocol, the registry, and running one.

A probe is a function of a model that returns a result:

    def my_probe(model: HookedMLP) -> Result:       # its docstring's first line is its title
        ...

where `result.to_dict()` returns JSON-ready numbers (the only thing required), and optionally
`result.figures()` returns `{name: matplotlib.figure.Figure}`, `result.summary()` its headline
numbers (a dict, `analyses._common.Result`) and `result.describe()` a few lines of text
(`result_text` reads them: describe(), else the summary). A probe computes; it never writes
files or HTML: `hooked-mlp probe` prints what it returns and `hooked-mlp report` presents it.
`ProbeResult` is a ready-made result class.

Probes are found through Python entry points in the group `hooked_mlp.probes`, so another
installed package adds one without editing this one; in its `pyproject.toml`:

    [project.entry-points."hooked_mlp.probes"]
    my_probe = "my_package.probes:my_probe"

The built-in probes (`analyses.builtin_probes`) are registered the same way, in this project's
`pyproject.toml`. A probe that does not apply to a model raises a `ValueError` saying why.

In a report (`run_probes`) a probe cannot change what anything else measures, and cannot cost
more than its own section:
- each probe gets its own deep copy of each model, so whatever it does to it (weights, buffers,
  hooks, `requires_grad`, training mode) stays in that copy; the copy is then compared with the
  model, and a probe that changed its copy is named (`changed_model` in its rows, and on the
  page);
- any exception of the probe, of its result's `to_dict()`, `summary()` or `figures()`, is
  recorded in its row (`error`, and `failure`: "does not apply" for a `ValueError` or
  `TypeError`, else "failed" with the exception's type) and the report goes on;
- a per-probe time limit (`time_limit` seconds for one model, default `PROBE_TIME_LIMIT`;
  `hooked-mlp report --probe-time-limit SECONDS`, and `hooked-mlp probe --probe-time-limit
  SECONDS` for one probe, which has no limit by default): when it passes, the probe is
  interrupted (a SIGALRM, so in the main thread of a POSIX
  process only) and recorded as "timed out". A probe stuck inside one long C call (a huge
  matrix product) is interrupted only when that call returns; a probe that catches every
  exception itself, or blocks signals, can still hang the report: stop it with Ctrl-C, and
  uninstall or fix the plugin (`hooked-mlp probe --list` names its package).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from analyses._common import to_jsonable

ENTRY_POINT_GROUP = "hooked_mlp.probes"
PROBE_TIME_LIMIT = 300.0  # seconds one probe may take on one model in a report


def _word(value: Any) -> str:
    """One headline value in words: floats to 4 significant digits, groups as compact JSON."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(to_jsonable(value), separators=(", ", ": "))
    return str(value)


def result_text(result: Any) -> str:
    """The few lines of text of a result: its `describe()` where it has one; else its
    `summary()` when that is text (a result written before the protocol); else its headline
    numbers, one `name: value` line each; "" when it has neither."""
    describe = getattr(result, "describe", None)
    if callable(describe):
        return str(describe())
    summary = getattr(result, "summary", None)
    if not callable(summary):
        return ""
    headline = summary()
    if isinstance(headline, dict):
        return "\n".join(f"{k}: {_word(v)}" for k, v in headline.items())
    return "" if headline is None else str(headline)


@dataclass
class ProbeResult:
    """A probe's result: numbers (`data`, JSON-ready), figures and a few lines of text."""

    data: dict[str, Any]
    figure_makers: dict[str, Callable[[], Any]] = field(default_factory=dict)
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self.data)

    def figures(self) -> dict[str, Any]:
        return {name: make() for name, make in self.figure_makers.items()}

    def summary(self) -> dict[str, Any]:
        """The probe's numbers (its `data` is what a probe chose to report)."""
        return self.to_dict()

    def describe(self) -> str:
        return self.text


@dataclass
class Probe:
    """A registered probe: its name, the function, where it comes from."""

    name: str
    func: Callable[[Any], Any]
    source: str

    @property
    def title(self) -> str:
        doc = (self.func.__doc__ or "").strip()
        return doc.splitlines()[0].rstrip(".") if doc else self.name


def registered_probes() -> dict[str, Probe]:
    """Every probe installed in this environment, by name (entry points of the group
    `hooked_mlp.probes`), sorted. A probe whose entry point does not load is refused with a
    ValueError naming it and its package."""
    found: dict[str, Probe] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        source = ep.dist.name if ep.dist is not None else "?"
        try:
            func = ep.load()
        except Exception as e:
            raise ValueError(f"the probe {ep.name!r} of package {source!r} does not load "
                             f"({type(e).__name__}: {e}); entry point {ep.value!r}") from None
        if not callable(func):
            raise ValueError(f"the probe {ep.name!r} of package {source!r} is not a function "
                             f"({ep.value!r} is a {type(func).__name__})")
        if ep.name in found:
            raise ValueError(f"two installed packages register a probe named {ep.name!r}: "
                             f"{found[ep.name].source!r} and {source!r}")
        found[ep.name] = Probe(ep.name, func, source)
    return found


def get_probe(name: str) -> Probe:
    """The registered probe `name`, or a ValueError listing those there are."""
    probes = registered_probes()
    if name not in probes:
        raise ValueError(f"no probe named {name!r}; installed probes: {sorted(probes)}")
    return probes[name]


def run_probe(probe: Probe | str, model: Any) -> Any:
    """Run a probe on a model and check its result: it must have a `to_dict()` returning
    JSON-ready data."""
    probe = get_probe(probe) if isinstance(probe, str) else probe
    result = probe.func(model)
    to_dict = getattr(result, "to_dict", None)
    if not callable(to_dict):
        raise ValueError(f"the probe {probe.name!r} ({probe.source}) returned a "
                         f"{type(result).__name__}, which has no to_dict()")
    try:
        json.dumps(to_jsonable(to_dict()), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"the probe {probe.name!r} ({probe.source}) returned data that is not "
                         f"JSON ({e})") from None
    return result


class ProbeTimeoutError(TimeoutError):
    """A probe ran past its time limit."""


MAX_TIME_LIMIT = 1e7  # seconds (about 116 days): beyond it, pass None (no limit)


def check_time_limit(seconds: Any, name: str = "time_limit") -> float | None:
    """`seconds` as a float, or None (no limit); refuses anything but a number in
    (0, MAX_TIME_LIMIT], naming the argument `name`."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None (no limit), "
                        f"got {type(seconds).__name__}")
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_TIME_LIMIT):
        raise ValueError(f"{name} must be a number of seconds above 0 and at most "
                         f"{MAX_TIME_LIMIT:g}; got {seconds!r}")
    return float(seconds)


@contextlib.contextmanager
def stop_after(seconds: float | None, name: str) -> Iterator[None]:
    """Interrupt the body with `ProbeTimeoutError` (a `TimeoutError`) after `seconds`, naming
    the probe `name` (SIGALRM: main thread of a POSIX process only; elsewhere, or with None, no
    limit). `seconds` is checked by `check_time_limit`."""
    seconds = check_time_limit(seconds)
    usable = (seconds is not None and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise ProbeTimeoutError(f"the probe {name!r} ran past its time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _hook_count(module: Any) -> int:
    return sum(len(getattr(m, attr, ())) for m in module.modules()
               for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                            "_backward_pre_hooks", "_state_dict_hooks"))


def model_changes(model: Any, probed: Any) -> list[str]:
    """How `probed` (a copy of `model` that a probe had) differs from `model`: weights or
    buffers (by name), `requires_grad`, training mode, hooks; empty when it does not."""
    import torch

    changes = []
    params, probed_params = dict(model.named_parameters()), dict(probed.named_parameters())
    buffers, probed_buffers = dict(model.named_buffers()), dict(probed.named_buffers())
    for what, a, b in (("weights", params, probed_params), ("buffers", buffers, probed_buffers)):
        names = sorted(set(a) | set(b))
        differ = [n for n in names if n not in a or n not in b or a[n].shape != b[n].shape
                  or not torch.equal(a[n].detach(), b[n].detach())]
        if differ:
            changes.append(f"{what} {', '.join(differ[:6])}")
    grads = sorted(n for n in set(params) & set(probed_params)
                   if params[n].requires_grad != probed_params[n].requires_grad)
    if grads:
        changes.append(f"requires_grad of {', '.join(grads[:6])}")
    if any(m.training != p.training for m, p in zip(model.modules(), probed.modules(),
                                                    strict=False)):
        changes.append("training mode")
    if _hook_count(probed) != _hook_count(model):
        changes.append("hooks")
    return changes


@dataclass
class ProbeRuns:
    """Every registered probe run on every model: for each probe, per model either its
    numbers and text (`data`, `summary`) or why it does not apply; and the first model's
    figures."""

    probes: dict[str, Probe]
    per_model: dict[str, list[dict[str, Any]]]
    figures: dict[str, dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        """Per probe, how many models it ran on and how many rows each failure has."""
        out: dict[str, Any] = {}
        for name, rows in self.per_model.items():
            counts = {"ran": sum("failure" not in r for r in rows)}
            for r in rows:
                if "failure" in r:
                    counts[r["failure"]] = counts.get(r["failure"], 0) + 1
            out[name] = counts
        return out

    def to_dict(self) -> dict[str, Any]:
        return {name: {"title": p.title, "source": p.source, "per_model": self.per_model[name]}
                for name, p in self.probes.items()}


def _failure(e: BaseException) -> dict[str, str]:
    """A row's `failure` (does not apply, failed, timed out) and `error` (the message; for a
    failure, with the exception's type)."""
    if isinstance(e, ProbeTimeoutError):
        return {"failure": "timed out", "error": str(e)}
    if isinstance(e, (ValueError, TypeError)):
        return {"failure": "does not apply", "error": str(e)}
    return {"failure": "failed", "error": f"{type(e).__name__}: {e}"}


def run_probes(models: list[Any], labels: list[str],
               time_limit: float | None = PROBE_TIME_LIMIT) -> ProbeRuns:
    """Run every registered probe on its own copy of every model (`hooked-mlp report`'s probe
    sections). Whatever a probe raises, in its function or its result's `to_dict()`,
    `summary()` or `figures()`, is recorded in its row (`error`) and costs nothing else; a
    probe that changed its copy is named in its row (`changed_model`); `time_limit` seconds
    per probe and model (None: no limit)."""
    time_limit_s = check_time_limit(time_limit)
    probes = registered_probes()
    per_model: dict[str, list[dict[str, Any]]] = {}
    figures: dict[str, dict[str, Any]] = {}
    for name, probe in probes.items():
        rows = []
        for i, (model, label) in enumerate(zip(models, labels, strict=True)):
            own = copy.deepcopy(model)
            row: dict[str, Any] = {"model": label}
            try:
                with stop_after(time_limit_s, name):
                    result = run_probe(probe, own)
                    row["data"] = to_jsonable(result.to_dict())
                    row["summary"] = result_text(result)
                    if i == 0 and callable(getattr(result, "figures", None)):
                        figures[name] = dict(result.figures())
            except Exception as e:
                row = {"model": label} | _failure(e)
            changes = model_changes(model, own)
            if changes:
                row["changed_model"] = changes
            rows.append(row)
        per_model[name] = rows
    return ProbeRuns(probes, per_model, figures)


__all__ = ["MAX_TIME_LIMIT", "PROBE_TIME_LIMIT", "Probe", "ProbeResult", "ProbeRuns",
           "ProbeTimeoutError", "check_time_limit", "get_probe", "model_changes",
           "registered_probes", "result_text", "run_probe", "run_probes", "stop_after"]
