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

import hooked_mlp
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
    "analyses.experiments.sweep.SweepMeasures",  # a sweep's measure columns (settings, callable)
    "analyses.views.NotebookSetup", "analyses.views.CircuitsVisView",  # notebook display
    "analyses.views._NotebookState",
}
# results whose summary() is still a few lines of text (the readers, `analyses.probes.
# result_text`, take text from describe() and fall back on a text summary()): empty since issue
# 18's migration (session 5); kept so that a result written as text elsewhere can be listed
# while it moves. This set may only shrink.
TEXT_SUMMARIES: set[str] = set()
# results without summary() yet: empty since session 5 (a new result follows the protocol from
# its first commit); may only shrink
NO_SUMMARY_YET: set[str] = set()

# results whose summary() still gives NaN where a number is not defined (the protocol says None;
# summary.json turns it into null through to_jsonable): requests.md (R-summary); may only shrink
NAN_IN_SUMMARY: set[str] = set()


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
def trained():
    model, _ = train(MLPConfig(p=P, d_hidden=H), TrainConfig(epochs=4), snapshots="0,2",
                     progress=False)
    return model


@pytest.fixture(scope="module")
def series(trained):
    return trained.train_info.snapshots


def _builders(tiny, trained, series, tmp_path):
    """One result of each class that follows the protocol, computed on the tiny model."""
    import pandas as pd

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
    from analyses.experiments.ablation import frequency_ablation, frequency_ablation_section
    from analyses.experiments.construction import quad_curve
    from analyses.experiments.dictionaries import dictionaries
    from analyses.experiments.formation import how_it_formed
    from analyses.experiments.forms import compare_neuron_forms
    from analyses.experiments.he2026 import he2026
    from analyses.experiments.published import imported_published
    from analyses.experiments.questions import QuestionsPlan, run_questions
    from analyses.experiments.report import (
        ExplorerData,
        ReportContext,
        Section,
        StudyFigures,
        Views,
        run_report,
    )
    from analyses.experiments.study import study
    from analyses.experiments.sweep import phase_diagram
    from analyses.experiments.sweep_folder import sweep_result
    from analyses.explorer import gather
    from analyses.patching import neuron_patching, path_patching
    from analyses.probes import run_probes
    from analyses.sae import train_sae
    from analyses.swap import detect_stages, phase_moments
    from analyses.views import neuron_grid_view
    from hooked_mlp.data import all_pairs

    w = tiny.W_a.detach().t()
    fits = cf.fit_neurons(tiny)
    ctx = ReportContext([tiny], ["tiny"], "a tiny model")
    studied = study([trained], ["trained"], synthetic_seeds=[0], n_orders_scale=0.1)
    clean = all_pairs(P)[:8]
    corrupt = clean.flip(0)
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
        "analyses.experiments.ablation.FrequencyAblation": lambda: frequency_ablation(tiny),
        "analyses.experiments.ablation.FrequencyAblations": lambda: frequency_ablation_section(
            ctx),
        "analyses.experiments.formation.Formation": lambda: how_it_formed([trained]),
        "analyses.experiments.forms.FormsComparison": lambda: compare_neuron_forms(
            [tiny], n_orders=1, discover_generations=1),
        "analyses.experiments.he2026.He2026": lambda: he2026([trained]),
        "analyses.experiments.published.ImportedPublished": imported_published,
        "analyses.patching.PatchingResult": lambda: neuron_patching(
            tiny, clean, corrupt, lambda logits: logits[:, 0].mean()),
        "analyses.patching.PathPatchingResult": lambda: path_patching(
            HookedMLP(MLPConfig(p=P, d_hidden=4, n_layers=2), seed=0), clean, corrupt,
            lambda logits: logits[:, 0].mean()),
        "analyses.swap.PhaseMoments": lambda: phase_moments(tiny),
        "analyses.swap.Stages": lambda: detect_stages(trained.train_info.history),
        "analyses.experiments.report.StudyFigures": lambda: StudyFigures(
            {"activations": b"png", "synthetic": None}, {"synthetic": "not asked for"}),
        "analyses.experiments.report.Views": lambda: Views("tiny", [neuron_grid_view(tiny, 0)]),
        "analyses.experiments.report.ExplorerData": lambda: ExplorerData(
            "tiny", gather(tiny, "tiny")),
        "analyses.experiments.study.StudyResult": lambda: studied,
        "analyses.experiments.study.ModelMeasurements": lambda: studied.per_model[0],
        "analyses.experiments.questions.QuestionsResult": lambda: run_questions(
            tmp_path / "questions", QuestionsPlan(
                name="tiny", p=P, d_hidden=H, epochs=4, seeds=(0,), encodings=("one_hot",),
                depths=(1,), retries=(), fractions=(0.0, 1.0), n_orders=1, small_p=False),
            log=lambda line: None),
        "analyses.experiments.sweep.PhaseDiagram": lambda: phase_diagram(pd.DataFrame([
            {"weight_decay": wd, "seed": seed, "phase": phase, "val_acc": acc,
             "grok_epoch": epoch} for wd, seed, phase, acc, epoch in (
                (0.1, 0, "grokking", 1.0, 30), (0.1, 1, "memorization", 0.2, None),
                (1.0, 0, "comprehension", 1.0, 5))]), ["weight_decay"]),
        "analyses.experiments.sweep_folder.SweepResult": lambda: sweep_result(_tiny_sweep(
            tmp_path / "S")),
        "analyses.probes.ProbeRuns": lambda: run_probes([tiny], ["tiny"]),
        "analyses.experiments.report.ReportResult": lambda: run_report(
            ReportContext([tiny], ["tiny"], "a tiny model"),
            (Section("frequencies", "Frequencies",
                     lambda ctx: fourier.frequency_histogram(ctx.models[0])),)),
    }


def _tiny_sweep(out: Path) -> Path:
    hooked_mlp.sweep({"weight_decay": [0.1, 1.0]}, model=MLPConfig(p=P, d_hidden=8),
                     recipe=TrainConfig(epochs=5, batch_size=4096), out=out, progress=False,
                     page=False)
    return out


def _leaves(value):
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _leaves(v)]
    return [value]


def test_each_result_gives_json_able_headline_numbers_on_a_tiny_model(tiny, trained, series,
                                                                      tmp_path):
    builders = _builders(tiny, trained, series, tmp_path)
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
        # as it is: plain values, None for a number that is not defined (not NaN)
        json.dumps(to_jsonable(summary) if name in NAN_IN_SUMMARY else summary, allow_nan=False)
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


def test_the_new_summaries_count_what_the_objects_hold(tiny):
    """A phase diagram's and a probe run's headline numbers are counted from their contents."""
    import pandas as pd

    from analyses.experiments.sweep import phase_diagram
    from analyses.probes import run_probes

    d = phase_diagram(pd.DataFrame([
        {"weight_decay": wd, "seed": s, "phase": ph, "val_acc": 1.0, "grok_epoch": None}
        for wd, s, ph in ((0.1, 0, "grokking"), (0.1, 1, "grokking"), (1.0, 0, "confusion"))]),
        ["weight_decay"])
    s = d.summary()
    assert s["n_runs"] == 3 and s["n_x"] == 2 and s["phase_cells"] == d.counts()
    assert sum(s["phase_cells"].values()) == 2
    runs = run_probes([tiny, HookedMLP(MLPConfig(p=2, d_hidden=4), seed=0)], ["tiny", "p=2"])
    for name, counts in runs.summary().items():
        rows = runs.per_model[name]
        assert sum(counts.values()) == len(rows) == 2, name
        assert counts["ran"] == sum("data" in r for r in rows), name
