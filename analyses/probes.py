"""Probes as plugins: the protocol, the registry, and running one.

A probe is a function of a model that returns a result:

    def my_probe(model: HookedMLP) -> Result:       # its docstring's first line is its title
        ...

where `result.to_dict()` returns JSON-ready numbers (the only thing required), and optionally
`result.figures()` returns `{name: matplotlib.figure.Figure}` and `result.summary()` a few lines
of text. A probe computes; it never writes files or HTML: `hooked-mlp probe` prints what it
returns and `hooked-mlp report` presents it. `ProbeResult` is a ready-made result class.

Probes are found through Python entry points in the group `hooked_mlp.probes`, so another
installed package adds one without editing this one; in its `pyproject.toml`:

    [project.entry-points."hooked_mlp.probes"]
    my_probe = "my_package.probes:my_probe"

The built-in probes (`analyses.builtin_probes`) are registered the same way, in this project's
`pyproject.toml`. A probe that does not apply to a model raises a `ValueError` saying why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from analyses._common import to_jsonable

ENTRY_POINT_GROUP = "hooked_mlp.probes"


@dataclass
class ProbeResult:
    """A probe's result: numbers (`data`, JSON-ready), figures and a short summary."""

    data: dict[str, Any]
    figure_makers: dict[str, Callable[[], Any]] = field(default_factory=dict)
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self.data)

    def figures(self) -> dict[str, Any]:
        return {name: make() for name, make in self.figure_makers.items()}

    def summary(self) -> str:
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


@dataclass
class ProbeRuns:
    """Every registered probe run on every model: for each probe, per model either its
    numbers and summary or why it does not apply; and the first model's figures."""

    probes: dict[str, Probe]
    per_model: dict[str, list[dict[str, Any]]]
    figures: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {name: {"title": p.title, "source": p.source, "per_model": self.per_model[name]}
                for name, p in self.probes.items()}


def run_probes(models: list[Any], labels: list[str]) -> ProbeRuns:
    """Run every registered probe on every model (`hooked-mlp report`'s probe sections). A
    probe that refuses a model (ValueError, TypeError) is recorded with its message."""
    probes = registered_probes()
    per_model: dict[str, list[dict[str, Any]]] = {}
    figures: dict[str, dict[str, Any]] = {}
    for name, probe in probes.items():
        rows = []
        for i, (model, label) in enumerate(zip(models, labels, strict=True)):
            try:
                result = run_probe(probe, model)
            except (ValueError, TypeError) as e:
                rows.append({"model": label, "error": str(e)})
                continue
            summary = result.summary() if callable(getattr(result, "summary", None)) else ""
            rows.append({"model": label, "data": to_jsonable(result.to_dict()),
                         "summary": str(summary)})
            if i == 0 and callable(getattr(result, "figures", None)):
                figures[name] = dict(result.figures())
        per_model[name] = rows
    return ProbeRuns(probes, per_model, figures)
