"""The same models give the same report on any machine (issue 20): the report's symbolic
search is budgeted by work (generations x population), not by seconds, so a machine a thousand
times slower finds the same expression; a time bound, when asked for, says so."""

import itertools
import time

import pytest

from analyses import discovery
from analyses.fourier import neuron_signals
from hooked_mlp import load_pretrained

pytest.importorskip("gplearn")


@pytest.fixture(scope="module")
def vector():
    return neuron_signals(load_pretrained())["a"][5]


def _numbers(d):
    out = d.to_dict()
    out.pop("seconds")
    for c in out["candidates"]:
        c.pop("seconds")
    return out


def test_a_slow_machine_finds_the_same_expression(vector, monkeypatch):
    fast = discovery.discover(vector, population=100, max_generations=3)
    clock = itertools.count(0.0, 50.0)  # every reading of the clock 50 s later: a slow machine
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    slow = discovery.discover(vector, population=100, max_generations=3)
    assert _numbers(slow) == _numbers(fast)
    symbolic = next(c for c in fast.candidates if c["method"] == "symbolic")
    assert symbolic["stopped_by"] in ("generations", "fit") and symbolic["generations"] <= 3
    assert fast.note == ""


def test_a_time_bound_is_optional_and_says_when_it_stopped_the_search(vector, monkeypatch):
    clock = itertools.count(0.0, 50.0)
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    d = discovery.discover(vector, budget_s=60, population=100, max_generations=3)
    symbolic = next(c for c in d.candidates if c["method"] == "symbolic")
    assert symbolic["stopped_by"] == "time" and symbolic["generations"] == 1
    assert "stopped by the time bound" in d.note and "machine's speed" in d.note
    with pytest.raises(ValueError, match="never stop"):
        discovery.discover(vector, budget_s=None, max_generations=None)
