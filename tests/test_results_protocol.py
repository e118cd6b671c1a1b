"""One result protocol (issue 18): every result object of `analyses` and `analyses.experiments`
has `summary()` (its headline numbers: plain numbers, words or None, or groups and lists of them)
and `to_dict()`
(everything JSON can carry). The classes are found by walking the source, so a new result class
is held to the protocol without anyone listing it here."""

from __future__ import annotations

import ast
import json
import math
from importlib import import_module
from pathlib import Path

import pytest
import torch

from analyses._common import Result, to_jsonable
from hooked_mlp import HookedMLP, MLPConfig, TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
P, H = 11, 12

# dataclasses that are not results: plans, settings, page and notebook plumbing
NOT_RESULTS = {
    "analyses.experiments.questions.QuestionsPlan",  # the plan a result is computed from
    "analyses.experiments.report.ReportContext",  # what the report's sections share
    "analyses.experiments.report.Section",  # a section's definition
    "analyses.experiments.report.SectionRun",  # one section's result and its timing
    "analyses.probes.Probe",  # a probe's definition
    "analyses.views.NotebookSetup", "analyses.views.CircuitsVisView",  # notebook display
    "analyses.views._NotebookState",
}
# results whose summary() is still a few lines of text, read as text by the report, the probe
# runner and the pages (`analyses/probes.py`, `analyses/experiments/report.py`): each moves its
# text to describe() once those readers take text from there (requests.md, N-names). This set may
# only shrink (a name may belong to a file still being written).
TEXT_SUMMARIES = {
    "analyses.experiments.ablation.FrequencyAblation",
    "analyses.experiments.ablation.FrequencyAblations",
    "analyses.experiments.formation.Formation",
    "analyses.experiments.forms.FormsComparison",
    "analyses.experiments.he2026.He2026",
    "analyses.experiments.published.ImportedPublished",
    "analyses.experiments.report.StudyFigures",
    "analyses.experiments.report.Views",
    "analyses.experiments.report.ExplorerData",  # being written (another helper's work)
    "analyses.patching.PatchingResult",
    "analyses.patching.PathPatchingResult",
    "analyses.swap.PhaseMoments",
}
# results without summary() yet, in files of other helpers (requests.md, N-names); may only shrink
NO_SUMMARY_YET = {
    "analyses.experiments.questions.QuestionsResult",
    "analyses.experiments.study.ModelMeasurements",
    "analyses.experiments.study.StudyResult",
    "analyses.experiments.sweep.SweepMeasures",
    "analyses.experiments.sweep.PhaseDiagram",
    "analyses.probes.ProbeRuns",
    "analyses.swap.Stages",
}


def _dataclasses() -> dict[str, type]:
    """Every dataclass defined at the top of a module of analyses/ and analyses/experiments/."""
    found = {}
    for path in sorted((ROOT / "analyses").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("").parts
        if rel[1] in ("pages", "explorer") or rel[-1] == "__init__":
            continue
        module = ".".join(rel)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and any(
                    "dataclass" in ast.unparse(d) for d in node.decorator_list):
                found[f"{module}.{node.name}"] = getattr(import_module(module), node.name)
    return found


def test_every_result_class_has_summary_and_to_dict():
    classes = _dataclasses()
    assert len(classes) > 40  # the walk found the analyses
    results = {name: cls for name, cls in classes.items() if name not in NOT_RESULTS}
    missing = sorted(name for name, cls in results.items()
                     if name not in TEXT_SUMMARIES | NO_SUMMARY_YET and not (
                         callable(getattr(cls, "summary", None))
                         and callable(getattr(cls, "to_dict", None))))
    assert not missing, f"result classes without summary() and to_dict(): {missing}"
    stale = sorted(name for name in NO_SUMMARY_YET
                   if name not in results or callable(getattr(results[name], "summary", None)))
    assert not stale, f"now follow the protocol or are gone; take them off NO_SUMMARY_YET: {stale}"


@pytest.fixture(scope="module")
def tiny():
    return HookedMLP(MLPConfig(p=P, d_hidden=H), seed=0)


@pytest.fixture(scope="module")
def series():
    model, _ = train(MLPConfig(p=P, d_hidden=H), TrainConfig(epochs=4), snapshots="0,2",
                     progress=False)
    return model.train_info.snapshots


def _builders(tiny, series):
    """One result of each class that follows the protocol, computed on the tiny model."""
    from analyses import activation_fits as af
    from analyses import (
        builtin_probes,
        forms,
        fourier,
        neuron_measures,
        predict_out,
        replacement,
        synthetic,
    )
    from analyses import cosine_fit as cf
    from analyses.activations import activation_grids
    from analyses.clock_pizza import diagnose
    from analyses.discovery import discover
    from analyses.dynamics import dynamics
    from analyses.experiments.construction import quad_curve
    from analyses.experiments.dictionaries import dictionaries
    from analyses.experiments.report import ReportContext, Section, run_report
    from analyses.sae import train_sae

    w = tiny.W_a.detach().t()
    fits = cf.fit_neurons(tiny)
    return {
        "analyses.activation_fits.GridSpectra": lambda: af.grid_spectra(
            af.layer_activations(tiny)),
        "analyses.activation_fits.ActivationFits": lambda: af.fit_activations(tiny),
        "analyses.activation_fits.ActivationReplacementCurve":
            lambda: af.activation_replacement_curve(tiny, n_orders=1),
        "analyses.activations.ActivationGrids": lambda: activation_grids(tiny),
        "analyses.clock_pizza.ClockPizza": lambda: diagnose(tiny, n_triples=64),
        "analyses.cosine_fit.CosineFit": lambda: cf.fit_cosines(w),
        "analyses.cosine_fit.HarmonicFit": lambda: cf.fit_harmonics(w, fits.a.k, 2),
        "analyses.cosine_fit.JointInputFit": lambda: cf.fit_joint_inputs(
            w, tiny.W_b.detach().t()),
        "analyses.cosine_fit.NeuronFits": lambda: fits,
        "analyses.discovery.Discovery": lambda: discover(w[0], method="library"),
        "analyses.forms.FormFit": lambda: forms.fit_form(w, "cosine"),
        "analyses.forms.FormComparison": lambda: forms.compare_forms(tiny, neurons=[0, 1, 2]),
        "analyses.forms.FormReplacement": lambda: forms.form_replacement(
            tiny, forms=("cosine",), fractions=(0.0, 1.0), n_orders=1),
        "analyses.fourier.NeuronSpectra": lambda: fourier.neuron_spectra(tiny),
        "analyses.fourier.FrequencyHistogram": lambda: fourier.frequency_histogram(tiny),
        "analyses.neuron_measures.NeuronMeasures": lambda: neuron_measures.neuron_measures(tiny),
        "analyses.neuron_measures.Lottery": lambda: neuron_measures.lottery(series[0],
                                                                            series[-1]),
        "analyses.phases.Phases": lambda: dynamics(series).phases,
        "analyses.dynamics.Dynamics": lambda: dynamics(series),
        "analyses.predict_out.OutputPrediction": lambda: predict_out.predict_output_weights(tiny),
        "analyses.predict_out.OutputReplacementCurve":
            lambda: predict_out.output_replacement_curve(tiny, n_orders=1),
        "analyses.replacement.ReplacementCurve": lambda: replacement.replacement_curve(
            tiny, n_orders=1, fits=fits),
        "analyses.synthetic.SyntheticCurve": lambda: synthetic.synthetic_curve(
            ns=(4, 8), seeds=(0,), p=P),
        "analyses.experiments.construction.QuadCurve": lambda: quad_curve(ns=(1, 3), p=P,
                                                                           seeds=(0,)),
        "analyses.sae.SparseDictionary": lambda: train_sae(tiny, d_sae=8, steps=5,
                                                           batch_size=64),
        "analyses.experiments.dictionaries.Dictionaries": lambda: dictionaries(
            [tiny], sizes=(4, 8), steps=5, batch_size=64, k=2),
        "analyses.probes.ProbeResult": lambda: builtin_probes.dead_neurons(tiny),
        "analyses.experiments.report.ReportResult": lambda: run_report(
            ReportContext([tiny], ["tiny"], "a tiny model"),
            (Section("frequencies", "Frequencies",
                     lambda ctx: fourier.frequency_histogram(ctx.models[0])),)),
    }


def _leaves(value):
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _leaves(v)]
    return [value]


def test_each_result_gives_json_able_headline_numbers_on_a_tiny_model(tiny, series):
    builders = _builders(tiny, series)
    classes = _dataclasses()
    following = {name for name, cls in classes.items()
                 if name not in NOT_RESULTS | TEXT_SUMMARIES | NO_SUMMARY_YET}
    assert following <= set(builders), f"no builder for {sorted(following - set(builders))}"
    for name, build in builders.items():
        result = build()
        assert type(result) is classes[name], name
        assert isinstance(result, Result), name
        summary = result.summary()
        assert isinstance(summary, dict) and summary, name
        for key, value in summary.items():
            assert isinstance(key, str), (name, key)
            for leaf in _leaves(value):  # plain values: no tensor, no numpy scalar
                assert leaf is None or type(leaf) in (bool, int, float, str), (name, key, leaf)
        json.dumps(to_jsonable(summary), allow_nan=False)
        full = result.to_dict()
        assert isinstance(full, dict) and full, name
        json.dumps(to_jsonable(full), allow_nan=False)


def test_headline_numbers_are_the_results_own(tiny):
    """The summaries say what the objects hold (not a constant)."""
    from analyses.cosine_fit import fit_cosines
    from analyses.replacement import replacement_curve

    w = tiny.W_a.detach().t()
    fit = fit_cosines(w)
    s = fit.summary()
    assert s["n_rows"] == H and s["p"] == P
    finite = fit.r2[torch.isfinite(fit.r2)].double()
    assert s["r2_median"] == pytest.approx(float(finite.median()))
    curve = replacement_curve(tiny, n_orders=2, fractions=(0.0, 0.5, 1.0))
    c = curve.summary()
    assert c["accuracy_first"] == curve.mean[0] and c["accuracy_last"] == curve.mean[-1]
    assert c["n_orders"] == 2 and math.isclose(c["fraction_last"], 1.0)
    # the exact construction is right everywhere from its predicted width on, not before
    from analyses.experiments.construction import quad_curve

    q = quad_curve(ns=(1, 3, 6, 12), p=P, seeds=(0, 1)).summary()
    assert q["smallest_n_exact"] == q["predicted"] == 6 and q["exact_last"] == 1.0


def test_the_readers_take_text_from_describe_else_the_headline_numbers():
    """`analyses.probes.result_text`: what the report, the probe runner and `hooked-mlp probe`
    print for a result."""
    from analyses.probes import result_text

    class Described:
        def summary(self):
            return {"n": 1}

        def describe(self):
            return "one neuron"

    class Numbers:
        def summary(self):
            return {"n": 3, "r2": 0.123456, "k": [1, 2], "none": None}

    class OldText:  # a third-party result written before the protocol
        def summary(self):
            return "two lines\nof text"

    assert result_text(Described()) == "one neuron"
    assert result_text(Numbers()) == "n: 3\nr2: 0.1235\nk: [1, 2]\nnone: None"
    assert result_text(OldText()) == "two lines\nof text"
    assert result_text(object()) == ""
