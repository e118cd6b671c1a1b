"""The dictionaries experiment (issue 21 §3): planted features whose answer is known, the
experiment's numbers on a tiny model, its report section, its summary()."""

from __future__ import annotations

import math

import pytest
import torch

from analyses.experiments.dictionaries import (
    Dictionaries,
    answer,
    dictionaries,
    first_order_terms,
    quadrature_pairs,
    read_features,
)
from hooked_mlp import HookedMLP, MLPConfig

P = 13


def _grid(f) -> torch.Tensor:
    a = torch.arange(P, dtype=torch.float64)
    return f(a[:, None], a[None, :])


def _planted(pair: str = "quadrature") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Five features on p = 13: cos and sin (or -cos) of w3 (a + b), cos w5 a, cos w6 b and
    one feature spread over frequencies 1, 3 and 4; six neurons of frequencies 3, 3, 5, 6, 1, 4;
    each feature's decoder on one neuron but the last (on all equally)."""
    w = lambda k: 2 * math.pi * k / P  # noqa: E731
    second = ((lambda a, b: torch.sin(w(3) * (a + b))) if pair == "quadrature" else
              (lambda a, b: -torch.cos(w(3) * (a + b))))
    grids = torch.stack([
        _grid(lambda a, b: torch.cos(w(3) * (a + b))), _grid(second),
        _grid(lambda a, b: torch.cos(w(5) * a + 0.3) + 0 * b),
        _grid(lambda a, b: torch.cos(w(6) * b) + 0 * a),
        _grid(lambda a, b: torch.cos(w(1) * a) + torch.cos(w(3) * b) + torch.cos(w(4) * (a - b))),
    ])
    W_dec = torch.zeros(5, 6)
    W_dec[0, 0] = W_dec[1, 1] = W_dec[2, 2] = W_dec[3, 3] = 1.0
    W_dec[4] = 1.0
    return grids, W_dec, torch.tensor([3, 3, 5, 6, 1, 4])


def test_planted_cos_sin_pair_is_found_in_quadrature():
    grids, W_dec, neuron_k = _planted()
    r = read_features(grids, W_dec, neuron_k)
    assert r["n_live"] == 5
    assert r["k"][:4] == [3, 3, 5, 6]
    assert r["single"][:4] == pytest.approx([1.0] * 4)
    assert r["single"][4] < 0.5  # three frequencies, a third of the power each
    assert r["fraction_single_frequency"] == pytest.approx(0.8)
    assert r["top_neuron"] == pytest.approx([1.0] * 4 + [1 / 6])
    assert r["fraction_neuron_like"] == pytest.approx(0.8)
    assert r["own_frequency"][:4] == pytest.approx([1.0] * 4)
    assert r["per_key"][3]["pattern"] == "pairs" and r["per_key"][3]["quadrature_pairs"] == 1
    assert abs(r["per_key"][3]["phase_differences"][0]) == pytest.approx(math.pi / 2)
    assert r["per_key"][5]["pattern"] == r["per_key"][6]["pattern"] == "one"
    assert r["per_key"][1]["pattern"] == r["per_key"][4]["pattern"] == "none"
    assert r["patterns"] == {"none": 2, "one": 2, "pairs": 1, "several": 0}
    assert r["answer"] == "one feature per frequency"  # two frequencies of one, one of a pair


def test_planted_logit_directions_are_read_on_the_features_own_frequency():
    """A feature of input frequency k that writes cos(w_k c) has its logits on its own
    frequency; one that writes cos(w_2 c) has none there; 2 cos(w_5 c) + cos(w_1 c), four
    fifths."""
    grids, W_dec, neuron_k = _planted()
    c = torch.arange(P, dtype=torch.float64)
    w = lambda k: 2 * math.pi * k / P  # noqa: E731
    W_logits = torch.stack([torch.cos(w(3) * c + 0.4), torch.cos(w(2) * c),
                            2 * torch.cos(w(5) * c) + torch.cos(w(1) * c),
                            torch.cos(w(6) * c) + 7.0,
                            torch.zeros(P)])
    r = read_features(grids, W_dec, neuron_k, W_logits)
    assert r["logit_own"][:4] == pytest.approx([1.0, 0.0, 0.8, 1.0])  # a constant is no power
    assert r["logit_k"][:2] == [3, 2] and r["logit_k"][3] == 6
    assert r["logit_own"][4] == 0.0  # writes nothing: no share anywhere
    assert r["fraction_logits_on_own_frequency"] == pytest.approx(3 / 5)
    bare = read_features(grids, W_dec, neuron_k)
    assert bare["logit_own"] == [] and bare["fraction_logits_on_own_frequency"] is None


def test_the_shipped_neurons_write_their_own_frequency():
    """The study's claim that a neuron's output weights are a cosine of its input frequency,
    through the experiment's logit reading: the reference row of the section."""
    from analyses.activation_fits import layer_activations
    from analyses.groups import by_frequency
    from hooked_mlp import load_pretrained

    model = load_pretrained(0)
    neuron_k = torch.zeros(model.cfg.d_hidden, dtype=torch.long)
    for kk, ns in by_frequency(model, alive_only=True).items():
        neuron_k[ns] = kk
    grids = layer_activations(model)
    r = read_features(grids, torch.eye(grids.shape[0]), neuron_k,
                      model.W_out.detach().double())
    assert r["n_live"] >= 95 and r["fraction_logits_on_own_frequency"] >= 0.95
    assert r["median_logit_own"] > 0.75  # 0.81 on seed 0: the rest is on other frequencies
    assert sum(lk == k for lk, k in zip(r["logit_k"], r["k"], strict=True)) >= 0.95 * r["n_live"]


def test_planted_opposite_phase_is_not_quadrature():
    grids, W_dec, neuron_k = _planted("opposite")
    r = read_features(grids, W_dec, neuron_k)
    assert r["per_key"][3] == {"features": 2, "neurons": 2, "quadrature_pairs": 0,
                               "phase_differences": [], "pattern": "several"}
    terms = first_order_terms(grids[:2], torch.tensor([3, 3]))
    inner = (terms[0].conj() * terms[1]).sum()
    assert abs(float(torch.angle(inner))) == pytest.approx(math.pi)  # -cos is cos shifted by pi


def test_quadrature_pairs_are_disjoint_and_need_the_same_term_mix():
    terms = torch.tensor([[1, 0, 0, 0], [1j, 0, 0, 0], [-1j, 0, 0, 0], [0, 1j, 0, 0]],
                         dtype=torch.complex128)
    pairs = quadrature_pairs(terms)
    assert len(pairs) == 1 and pairs[0][:2] in ((0, 1), (0, 2))  # 1 and 2 both fit 0; one pair
    assert quadrature_pairs(terms[[0, 3]]) == []  # pi/2 apart, but on another term: incoherent


def test_answer_words():
    counts = {"none": 0, "one": 1, "pairs": 3, "several": 1}
    assert answer(counts, 0.9, 0.1) == "cos/sin pairs in quadrature"
    assert answer(counts, 0.3, 0.1) == "not single-frequency"
    assert answer({"none": 0, "one": 0, "pairs": 0, "several": 4}, 0.9, 0.8) == \
        "several per frequency, neuron-like"
    assert answer({"none": 4, "one": 0, "pairs": 0, "several": 0}, 0.9, 0.8) == \
        "no key frequency covered"


@pytest.fixture(scope="module")
def tiny_result():
    model = HookedMLP(MLPConfig(p=11, d_hidden=16), seed=0)
    return model, dictionaries([model, model], ["a", "b"], sizes=(4, 8), steps=40,
                               batch_size=64, k=2, resample_every=20)


def test_experiment_numbers_on_a_tiny_model(tiny_result):
    from analyses.activation_fits import layer_activations
    from analyses.sae import train_dictionaries

    model, r = tiny_result
    assert isinstance(r, Dictionaries)
    assert r.names == ["l1 4", "l1 8", "topk 4", "topk 8", "transcoder topk 4",
                       "transcoder topk 8"]
    # the same model twice: the same numbers (each dictionary from its own seed and size)
    assert r.metrics[0] == r.metrics[1]
    # the metrics are those of the dictionaries trained alone with the same settings
    opts = dict(sparsity="topk", k=2, steps=40, batch_size=64, lr=r.settings["lr"],
                resample_every=20)
    again = train_dictionaries(model, None, [4, 8], **opts)
    assert [d.metrics(model) for d in again] == r.metrics[0][2:4]
    # and the transcoders: hook_pre -> the logits, read through their encoder (the neurons
    # they read) and their decoder (the logits they write)
    tcs = train_dictionaries(model, None, [4, 8], kind="transcoder", **opts)
    assert [(d.hook_in, d.hook_out) for d in tcs] == [("blocks.0.mlp.hook_pre",
                                                       "hook_logits")] * 2
    assert [d.metrics(model) for d in tcs] == r.metrics[0][4:]
    neuron_k = torch.zeros(16, dtype=torch.long)
    from analyses.groups import by_frequency
    for kk, ns in by_frequency(model, alive_only=True).items():
        neuron_k[ns] = kk
    assert [read_features(d.feature_grids(model), d.W_enc.t(), neuron_k, d.W_dec)
            for d in tcs] == r.features[0][4:]
    W_out = model.W_out.detach().double()
    assert [read_features(d.feature_grids(model), d.W_dec, neuron_k, d.W_dec.double() @ W_out)
            for d in again] == r.features[0][2:4]
    for m in r.metrics[0][2:]:
        assert m["l0"] <= 2.0
    for m, f in zip(r.metrics[0], r.features[0], strict=True):
        assert 0 <= m["nmse"] < 1
        assert f["n_live"] == m["d_sae"] - m["dead_features"]
        assert sum(v["features"] for v in f["per_key"].values()) <= f["n_live"]
    # the neurons as the reference: each is its own neuron; L0 counted by hand
    grids = layer_activations(model)
    n = r.neurons[0]
    assert n["fraction_neuron_like"] == 1.0
    assert n["l0"] == pytest.approx(float((grids > 0).sum() / 11 ** 2))
    s = r.summary()
    assert s["models"] == 2 and set(s["dictionaries"]) == set(r.names)
    assert s["dictionaries"]["l1 8"]["nmse"] == pytest.approx(r.metrics[0][1]["nmse"])
    assert s["answer"] in {w for per in s["answers"].values() for w in per}
    # each kind ranked on its own: the best SAE among the SAEs, the best transcoder among those
    nmse = [r.metrics[0][j]["nmse"] for j in range(6)]
    assert s["best"] == r.names[min(range(4), key=lambda j: (nmse[j], -j))]
    assert s["transcoder_best"] == r.names[min((4, 5), key=lambda j: (nmse[j], -j))]
    assert s["transcoder_answer"] in s["answers"][s["transcoder_best"]]
    assert [s["dictionaries"][n]["kind"] for n in r.names] == ["sae"] * 4 + ["transcoder"] * 2


def test_summary_is_plain_numbers_and_words(tiny_result):
    import json

    _, r = tiny_result
    s = r.summary()
    assert isinstance(s, dict)
    json.dumps(s, allow_nan=False)
    assert json.loads(json.dumps(r.to_dict()))["summary"] == s
    assert "answer" in r.describe()


def test_section_renders_and_refuses_p_3(tiny_result):
    from analyses.experiments.report import SECTIONS, ReportContext, run_report
    from analyses.pages.report import render_report

    model, _ = tiny_result
    section = next(s for s in SECTIONS if s.name == "dictionaries")
    small = dict(sizes=(4, 8), steps=10, batch_size=64, k=2)
    import analyses.experiments.dictionaries as dd

    quick = type(section)(section.name, section.title,
                          lambda ctx: dd.dictionaries(ctx.models, ctx.labels, **small),
                          refusals=section.refusals)
    report = run_report(ReportContext([model], ["tiny"], "a tiny model"), (quick,))
    assert not report.failed and set(report.runs["dictionaries"].figures) == {
        "frequencies", "features", "logits"}
    html = render_report(report, 1.0, "p = 11")
    assert 'id="dictionaries"' in html and "Answer (the best-reconstructing SAE" in html
    assert "Answer (the best-reconstructing transcoder" in html and "the neurons" in html
    assert report.to_dict()["dictionaries"]["summary"] == report["dictionaries"].summary()
    p3 = HookedMLP(MLPConfig(p=3, d_hidden=8), seed=0)
    refused = run_report(ReportContext([p3], ["p3"], "p = 3"), (section,))
    assert "p >= 5" in refused.not_applicable["dictionaries"] and not refused.failed


def test_report_options_are_checked_by_name(tiny_result):
    from analyses.experiments.report import ReportContext
    from analyses.pages.report import run_report

    model, _ = tiny_result
    with pytest.raises(ValueError, match=r"dictionary_options takes .*got \['step'\]"):
        ReportContext([model], ["tiny"], dictionary_options={"step": 3})
    with pytest.raises(ValueError, match="dictionary_options must be a dict"):
        ReportContext([model], ["tiny"], dictionary_options=[("steps", 3)])
    with pytest.raises(ValueError, match="dictionary_options takes"):  # before any model loads
        run_report("/nonexistent/never-written", dictionary_options={"epochs": 3})
    with pytest.raises(ValueError, match="dictionary_options must be a dict"):
        run_report("/nonexistent/never-written", dictionary_options=[("steps", 3)])


def test_bad_arguments_are_named():
    model = HookedMLP(MLPConfig(p=11, d_hidden=8), seed=0)
    with pytest.raises(ValueError, match="models"):
        dictionaries([])
    with pytest.raises(ValueError, match="labels"):
        dictionaries([model], ["a", "b"])
    with pytest.raises(ValueError, match="k at most"):
        dictionaries([model], sizes=(4,), k=8)
    with pytest.raises(ValueError, match="transcoders must be sparsities"):
        dictionaries([model], sizes=(4,), k=2, transcoders=("relu",))
    with pytest.raises(ValueError, match="transcoders must be a sequence"):
        dictionaries([model], sizes=(4,), k=2, transcoders="topk")
    deep = HookedMLP(MLPConfig(p=11, d_hidden=8, n_layers=2), seed=0)
    with pytest.raises(ValueError, match="one-layer models; 'model 0' has 2 layers"):
        dictionaries([deep], sizes=(4,), k=2, steps=2)


def test_an_overflowing_model_is_an_overflow_and_undefined_numbers_read_n_a(tiny_result):
    from analyses.experiments.report import SECTIONS, ReportContext, run_report
    from hooked_mlp.checks import LogitsOverflowError

    _, r = tiny_result
    huge = HookedMLP(MLPConfig(p=11, d_hidden=8), seed=0)
    with torch.no_grad():
        for w in huge.parameters():
            w.mul_(1e30)
    with pytest.raises(LogitsOverflowError):
        dictionaries([huge], sizes=(4,), steps=2, k=2)
    section = [s for s in SECTIONS if s.name == "dictionaries"]
    report = run_report(ReportContext([huge], ["huge"], "too large"), section)
    assert report.failed["dictionaries"].startswith("overflow:")
    blank = Dictionaries(r.labels, r.names, [[{**m, "nmse": float("nan")} for m in per]
                                             for per in r.metrics], r.features, r.settings,
                         r.neurons)
    assert blank.summary()["dictionaries"]["l1 4"]["nmse"] is None
    assert "nmse n/a" in blank.describe() and blank.table()[1][0][1] == "n/a"
