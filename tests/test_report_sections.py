"""The report as an experiment (analyses.experiments.report): sections run in order on one
context, a failing section costs only its own row, summary.json's layout."""

from __future__ import annotations

import json

import pytest

from analyses.experiments.report import (
    SECTIONS,
    ReportContext,
    Section,
    run_report,
)
from hooked_mlp import MLPConfig, TrainConfig, train


@pytest.fixture(scope="module")
def small():
    model, _ = train(MLPConfig(p=13, d_hidden=24), TrainConfig(epochs=40), progress=False)
    return model


class _Numbers:
    def __init__(self, value):
        self.value = value

    def to_dict(self):
        return {"value": self.value}

    def summary(self):  # headline numbers only (no describe()): the text lists them
        return {"value": self.value}


def test_a_failing_section_costs_only_its_row_and_skips_what_needs_it(small):
    def boom(ctx):
        raise RuntimeError("boom\nsecond line")

    seen = []

    def reads_first(ctx):
        seen.append(ctx.results["first"].value)
        return _Numbers(ctx.results["first"].value + 1)

    sections = (
        Section("first", "First", lambda ctx: _Numbers(len(ctx.models))),
        Section("broken", "Broken", boom),
        Section("after_broken", "Needs the broken one", lambda ctx: _Numbers(0),
                needs=("broken",)),
        Section("second", "Second", reads_first, needs=("first",)),
        Section("nothing", "Nothing to show", lambda ctx: None),
        Section("hidden", "Not in the summary", lambda ctx: _Numbers(9), placement=None),
    )
    ctx = ReportContext([small, small], ["a", "b"], "two copies")
    result = run_report(ctx, sections)
    assert seen == [2]
    assert result["second"].value == 3 and result["broken"] is None
    assert result.failed == {"broken": "RuntimeError: boom second line"}
    assert result.skipped == ["after_broken"]
    assert list(result.runs) == ["first", "second", "hidden"]
    doc = result.to_dict(seconds=1.5)
    assert doc == {"source": "two copies", "seconds": 1.5, "first": {"value": 2},
                   "broken": None, "after_broken": None, "second": {"value": 3},
                   "nothing": None, "sections_failed": {"broken": "RuntimeError: boom second line"}}
    text = result.describe()
    assert "Second:\nvalue: 3" in text and "left out: broken" in text
    assert result.summary() == {"sections_ran": ["first", "second", "hidden"],
                                "not_applicable": {}, "skipped": ["after_broken"],
                                "sections_failed": {"broken": "RuntimeError: boom second line"},
                                "seconds": result.seconds}
    with pytest.raises(ValueError, match="distinct names"):
        run_report(ctx, (sections[0], sections[0]))
    with pytest.raises(ValueError, match="labels must name each of the 2 models"):
        ReportContext([small, small], ["a"])


def test_the_report_sections_on_a_small_model(small):
    ctx = ReportContext([small], ["small"], "a small model", synthetic_seeds=[0],
                        n_orders_scale=0.1)
    result = run_report(ctx, SECTIONS)
    assert result.failed == {}
    names = [s.name for s in SECTIONS]
    assert names[:3] == ["study", "figures", "views"]
    assert {"frequency_ablation", "he2026", "probes"} <= set(result.runs)
    assert "how_it_formed" not in result.runs  # no snapshots: nothing to show
    doc = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert doc["models"] == ["small"] and len(doc["claims"]) == 7
    # each section's numbers under its name, computed on this very model
    abl = doc["frequency_ablation"]["small"]
    assert abl["p"] == 13 and abl["acc"] == pytest.approx(result["study"].per_model[0].accuracy_all)
    assert doc["he2026"]["labels"] == ["small"]
    assert set(doc["probes"]) >= {"frequencies", "cosine_fits", "dead_neurons"}
    # figures are PNG bytes, drawn from the results
    run = result.runs["frequency_ablation"]
    assert set(run.figures) == {"keep_k", "ablation_0"}
    assert all(png.startswith(b"\x89PNG") for png in run.figures.values())
    assert result.runs["figures"].result.pngs["training"].startswith(b"\x89PNG")
    assert len(result.runs["views"].result.views) == 4


def test_a_section_that_does_not_apply_says_why_instead_of_failing():
    from analyses.pages.report import render_report

    p2, _ = train(MLPConfig(p=2, d_hidden=8), TrainConfig(epochs=5), progress=False)
    names = ("frequency_ablation", "he2026")
    result = run_report(ReportContext([p2], ["p2"], "p = 2"),
                        [s for s in SECTIONS if s.name in names])
    assert result.failed == {} and list(result.not_applicable) == list(names)
    assert "p >= 3" in result.not_applicable["frequency_ablation"]
    doc = result.to_dict()
    assert doc["he2026"] == {"not_applicable": result.not_applicable["he2026"]}
    html = render_report(result, 0.0, "p = 2")
    assert html.count("Does not apply to these models: neuron_signals needs p &gt;= 3") == 2
    assert "Sections left out" not in html


def test_frequency_ablation_refuses_logits_that_overflow(small):
    """Every weight x 1e30: the logits are infinite, so no loss or accuracy is given (issue 20),
    and the report's section is left out as an overflow, like the study's."""
    import copy

    import torch

    from analyses.experiments.ablation import frequency_ablation, frequency_ablation_section
    from hooked_mlp.checks import LogitsOverflowError

    big = copy.deepcopy(small)
    with torch.no_grad():
        for param in big.parameters():
            param.mul_(1e30)
    with pytest.raises(LogitsOverflowError, match="overflowed.*frequency ablation"):
        frequency_ablation(big)
    ctx = ReportContext([big], ["x 1e30"], "a scaled model")
    result = run_report(ctx, (Section("frequency_ablation", "Frequency ablation",
                                      frequency_ablation_section,
                                      refusals=(ValueError, TypeError)),))
    assert result.failed["frequency_ablation"].startswith("overflow: the logits overflowed")
    assert result["frequency_ablation"] is None and not result.not_applicable
    from hooked_mlp.helpers import accuracy

    # the model itself is measured as before: its accuracy on every pair
    assert frequency_ablation(small).acc == pytest.approx(accuracy(small), abs=1e-6)
