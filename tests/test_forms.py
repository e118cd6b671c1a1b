"""Competing forms per neuron (analyses.forms) and automated discovery (analyses.discovery)."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from analyses.discovery import discover as discover_direct
from analyses.forms import (
    FORMS,
    compare_forms,
    discover,
    fit_form,
    fit_forms,
    form_replacement,
    form_weights,
    select_forms,
)
from analyses.replacement import accuracy_along_orders, replace_neurons
from analyses.synthetic import random_cosine_model
from hooked_mlp import MLPConfig, load_pretrained
from hooked_mlp.helpers import accuracy
from hooked_mlp.model import HookedMLP

P = 113
X = torch.arange(P, dtype=torch.float64)


def _theta(k: int, phi: float, p: int = P) -> torch.Tensor:
    return 2 * math.pi * k * torch.arange(p, dtype=torch.float64) / p + phi


# name -> (curve, the parameters its own fit must recover)
PLANTED = {
    "cosine": (0.7 * torch.cos(_theta(17, 1.0)) + 0.1,
               {"k": 17, "scale": 0.7, "phase": 1.0, "offset": 0.1}),
    "square": (0.5 * torch.sign(torch.cos(_theta(23, -0.7))) - 0.05,
               {"k": 23, "scale": 0.5, "phase": -0.7, "offset": -0.05}),
    "clipped": (0.8 * torch.clamp(torch.cos(_theta(9, 2.0)), -0.4, 0.5) + 0.02,
                {"k": 9, "scale": 0.8, "phase": 2.0, "offset": 0.02, "lo": -0.4, "hi": 0.5}),
    "harmonics": (0.6 * torch.cos(_theta(11, 0.3)) + 0.25 * torch.cos(_theta(22, -1.2))
                  + 0.12 * torch.cos(_theta(33, 2.2)),
                  {"k": 11, "scale": [0.6, 0.25, 0.12], "phase": [0.3, -1.2, 2.2],
                   "offset": 0.0}),
    "two_freq": (0.6 * torch.cos(_theta(5, 0.3)) + 0.4 * torch.cos(_theta(40, -2.0)) + 0.3,
                 {"k": 5, "k2": 40, "scale": 0.6, "scale2": 0.4, "phase": 0.3, "phase2": -2.0,
                  "offset": 0.3}),
}


def _angle_diff(a: float, b: float) -> float:
    return abs((a - b + math.pi) % (2 * math.pi) - math.pi)


@pytest.mark.parametrize("noise_seed", [0, 1, 2])
def test_planted_forms_recovered_by_their_own_fit_and_win(noise_seed: int) -> None:
    gen = torch.Generator().manual_seed(noise_seed)
    w = torch.stack([c for c, _ in PLANTED.values()])
    w = w + 0.02 * torch.randn(w.shape, generator=gen, dtype=torch.float64)
    fits = fit_forms(w.float())
    assert select_forms(fits) == list(PLANTED)
    for i, (form, (_, truth)) in enumerate(PLANTED.items()):
        got = {k: v[i] for k, v in fits[form].params.items()}
        assert int(got["k"]) == truth["k"], form
        if form == "two_freq":
            assert int(got["k2"]) == truth["k2"]
        for name, want in truth.items():
            if name in ("k", "k2"):
                continue
            have = got[name].tolist()
            scale = truth["scale2" if name == "phase2" else "scale"]
            for j, (h, t) in enumerate(zip(have if isinstance(have, list) else [have],
                                           want if isinstance(want, list) else [want],
                                           strict=True)):
                if name.startswith("phase"):
                    # 4 standard errors of a phase (noise 0.02, amplitude s: 0.02 sqrt(2/p) / s),
                    # plus the square wave's phase interval of width pi / p
                    amp = scale[j] if isinstance(scale, list) else scale
                    tol = 4 * 0.02 * math.sqrt(2 / P) / amp + (math.pi / P if form == "square"
                                                               else 0.01)
                    assert _angle_diff(h, t) < tol, (form, name, h, t)
                else:
                    assert abs(h - t) < 0.04, (form, name, h, t)
        assert float(fits[form].r2[i]) > 0.99


def test_exact_cosines_tie_and_the_cheapest_form_wins() -> None:
    # a random cosine model's weights are exact cosines: harmonics, clipped and two_freq fit
    # them just as well, and the BIC's charge for parameters gives the win to the cosine
    model = random_cosine_model(16, p=31, seed=3)
    comp = compare_forms(model)
    for sig in ("a", "b", "out"):
        assert comp.winners[sig] == ["cosine"] * 16
        assert float(comp.fits[sig]["cosine"].r2.min()) > 0.9999


def test_compare_forms_on_a_shipped_model() -> None:
    model = load_pretrained(0)
    comp = compare_forms(model)
    H = model.cfg.d_hidden
    assert set(comp.winners) == {"a", "b", "out"}
    for sig, names in comp.winners.items():
        assert len(names) == H and set(names) <= set(FORMS)
        assert sum(comp.win_counts()[sig].values()) == int(comp.defined[sig].sum())
        # the harmonics include the cosine at its own frequency, so never fit worse than it
        # where they pick the same frequency
        same_k = comp.fits[sig]["harmonics"].params["k"] == comp.fits[sig]["cosine"].params["k"]
        assert bool((comp.fits[sig]["harmonics"].r2[same_k]
                     >= comp.fits[sig]["cosine"].r2[same_k] - 1e-6).all())
    # the output weights are not single cosines: one cosine never wins them
    assert comp.win_counts()["out"]["cosine"] < H // 10
    # replacing every neuron by its winning forms keeps much more accuracy than by one cosine
    rep = form_replacement(model, comp, forms=("cosine", "best"), fractions=[0.0, 1.0],
                           n_orders=1)
    assert rep.at(0.0)["cosine"] == pytest.approx(accuracy(model), abs=1e-6)
    assert rep.at(1.0)["best"] > rep.at(1.0)["cosine"] + 0.05


def test_form_weights_are_the_fitted_curves() -> None:
    model = random_cosine_model(8, p=23, seed=0)
    comp = compare_forms(model)
    w = form_weights(comp, "best")
    assert torch.allclose(w["W_a"], model.W_a.detach(), atol=1e-5)
    assert torch.allclose(w["W_out"], model.W_out.detach(), atol=1e-5)


def test_replacement_from_both_ends_equals_the_direct_one() -> None:
    # fractions above 1/2 are computed back from the fully replaced model: the same accuracies
    # as replacing forward, order by order
    model = random_cosine_model(64, p=23, seed=1)
    model = HookedMLP.from_params(model.cfg, {
        "W_in": model.W_in.detach() + 0.2 * model.W_in.detach().clamp_min(0).square(),
        "W_out": model.W_out.detach()})
    comp = compare_forms(model)
    fractions = [0.0, 0.3, 0.5, 0.55, 0.9, 1.0]
    rep = form_replacement(model, comp, forms=("square", "best"), fractions=fractions,
                           n_orders=2, seed=4)
    gen = torch.Generator().manual_seed(4)
    orders = [torch.randperm(64, generator=gen).tolist() for _ in range(2)]
    for form in ("square", "best"):
        direct = accuracy_along_orders(model, form_weights(comp, form), "both", orders,
                                       fractions)
        assert torch.allclose(torch.tensor(rep.curves[form].accuracy), torch.tensor(direct),
                              atol=1e-9)
    # ... and 100 % replaced is the model replace_neurons builds from the same weights
    full = replace_neurons(model, range(64), weights=form_weights(comp, "square"))
    assert rep.at(1.0)["square"] == pytest.approx(accuracy(full), abs=1e-9)
    assert rep.at(1.0)["square"] < rep.at(0.0)["square"]  # a square wave is a worse fit here


def test_bad_inputs_are_refused_with_clear_errors() -> None:
    with pytest.raises(ValueError, match="form must be one of"):
        fit_form(torch.zeros(2, 11), "sine")
    with pytest.raises(ValueError, match="w must be a 2-D float tensor"):
        fit_forms(torch.zeros(11))
    with pytest.raises(TypeError, match="w must be a 2-D float tensor"):
        fit_forms([[0.0] * 11])
    with pytest.raises(TypeError, match="w must be a 2-D float tensor"):
        fit_forms(torch.zeros(2, 11, dtype=torch.int64))
    with pytest.raises(ValueError, match="NaN"):
        fit_forms(torch.full((1, 11), float("nan")))
    with pytest.raises(TypeError, match="fits must be"):
        select_forms({})
    with pytest.raises(TypeError, match="model must be a HookedMLP"):
        compare_forms("model")
    with pytest.raises(ValueError, match="n_layers=2"):
        compare_forms(HookedMLP(MLPConfig(p=11, d_hidden=8, n_layers=2)))
    with pytest.raises(ValueError, match="one-hot"):
        compare_forms(HookedMLP(MLPConfig(p=11, d_hidden=8, input_encoding="circle")))
    with pytest.raises(TypeError, match="comparison must be a FormComparison"):
        form_weights("comparison", "cosine")
    with pytest.raises(ValueError, match="budget_s"):
        discover(torch.randn(31), budget_s=0)
    with pytest.raises(ValueError, match="budget_s"):
        discover(torch.randn(31), budget_s=float("nan"))
    with pytest.raises(ValueError, match="one weight vector"):
        discover(torch.randn(2, 31))
    with pytest.raises(TypeError, match="w must be a 1-D float tensor"):
        discover([0.0] * 31)
    with pytest.raises(ValueError, match="NaN"):
        discover(torch.full((31,), float("nan")))
    with pytest.raises(ValueError, match="method must be one of"):
        discover(torch.randn(31), method="pysr")
    with pytest.raises(ValueError, match="constant"):
        discover(torch.ones(31), method="library")


def test_symbolic_search_is_reproducible_with_a_generation_cap() -> None:
    pytest.importorskip("gplearn")
    w = 0.5 * torch.sign(torch.cos(_theta(4, 0.3, 29))) + 0.1 * torch.cos(_theta(9, 0.0, 29))
    runs = [discover_direct(w, budget_s=30, method="symbolic", seed=3, population=50,
                            max_generations=3) for _ in range(2)]
    assert runs[0].expression == runs[1].expression
    assert runs[0].candidates[0]["generations"] <= 3
    with pytest.raises(ValueError, match="max_generations"):
        discover_direct(w, max_generations=0)


def test_missing_gplearn_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gplearn", None)
    monkeypatch.setitem(sys.modules, "gplearn.genetic", None)
    monkeypatch.setitem(sys.modules, "gplearn.functions", None)
    w = torch.cos(_theta(5, 0.4, 31))
    with pytest.raises(ImportError, match=r"hooked-mlp\[symbolic\]"):
        discover(w, budget_s=1, method="symbolic")
    found = discover(w, budget_s=1)  # auto: the library, and a note saying what was skipped
    assert found.method == "library" and "hooked-mlp[symbolic]" in found.note
    assert found.form == "cosine" and found.frequency == 5


@pytest.mark.parametrize("form", ["cosine", "square"])
def test_discovery_recovers_planted_forms(form: str) -> None:
    p, k = 61, {"cosine": 7, "square": 12}[form]
    clean = (0.7 * torch.cos(_theta(k, 1.0, p)) + 0.1 if form == "cosine"
             else 0.5 * torch.sign(torch.cos(_theta(k, -0.7, p))) - 0.05)
    library_hits, symbolic_hits = 0, 0
    gplearn = pytest.importorskip("gplearn")
    assert gplearn is not None
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        w = clean + 0.05 * torch.randn(p, generator=gen, dtype=torch.float64)
        lib = discover_direct(w, method="library")
        library_hits += lib.form == form and lib.frequency == k
        sym = discover_direct(w, budget_s=30, method="symbolic", seed=seed, population=200,
                              max_generations=8)
        r2_clean = 1 - float((sym.values.double() - clean).square().sum()
                             / (clean - clean.mean()).square().sum())
        symbolic_hits += sym.frequency == k and sym.form == form and r2_clean > 0.95
    assert library_hits >= 2  # "most seeds": BIC keeps a cosine in ~97 % of noisy draws
    assert symbolic_hits >= 2


def test_clip_sums_equal_the_direct_regression() -> None:
    from analyses.forms import _ClipSums

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 31, generator=gen, dtype=torch.float64)
    basis = torch.cos(6 * torch.rand(4, 2, 31, generator=gen, dtype=torch.float64))
    lo = torch.rand(4, 2, 5, generator=gen, dtype=torch.float64) - 1
    hi = torch.rand(4, 2, 5, generator=gen, dtype=torch.float64)
    gain, scale, offset = _ClipSums(w, basis).scores(lo, hi)
    g = torch.minimum(torch.maximum(basis[:, :, None, :], lo[..., None]), hi[..., None])
    gc = g - g.mean(-1, keepdim=True)
    wc = (w - w.mean(1, keepdim=True))[:, None, None, :]
    var, cov = gc.square().sum(-1), (gc * wc).sum(-1)
    assert torch.allclose(gain, cov.square() / var, atol=1e-12)
    assert torch.allclose(scale, cov / var, atol=1e-12)
    assert torch.allclose(offset, w.mean(1)[:, None, None] - cov / var * g.mean(-1), atol=1e-12)


# ----------------------------------------------------------------- the forms comparison
def test_forms_comparison_on_a_shipped_model_and_its_section() -> None:
    """analyses.experiments.forms: the numbers the report's section shows, then the section
    rendered from them (values autoescaped, the figure embedded)."""
    from analyses.experiments.forms import compare_neuron_forms
    from analyses.pages.forms import forms_html

    model = load_pretrained(0)
    r = compare_neuron_forms([model], ["<b>seed 0</b>"], n_orders=1, discover_generations=1)
    d = r.to_dict()
    assert list(d) == ["applies", "forms", "replacement", "discovery", "clock_pizza",
                       "construction"]
    assert d["applies"] == {"forms": None, "clock_pizza": None}
    win = d["forms"]["aggregate"]["out"]
    assert sum(win[f]["win_share"]["mean"] for f in FORMS) == pytest.approx(1.0)
    assert win["harmonics"]["win_share"] == {**win["harmonics"]["win_share"], "n": 1, "sd": 0.0}
    rep = d["replacement"]["by_form"]
    # the study's own description loses more than each vector's winning form
    assert rep["best"]["at_1.0"]["mean"] > rep["cosine"]["at_1.0"]["mean"] + 0.05
    assert r.best_form == max(FORMS, key=lambda f: rep[f]["at_0.9"]["mean"])
    assert [x["weights"] for x in d["discovery"]] == ["a", "out"]
    assert d["clock_pizza"]["trained_verdicts"] == ["clock"]
    kinds = [row["kind"] for row in d["clock_pizza"]["rows"]]
    assert kinds[:2] == ["trained", "all neurons replaced (best form)"] and len(kinds) == 5
    quad = d["construction"]["quad_curve"]
    assert quad["predicted"] == 6 and quad["exact"][quad["ns"].index(6)] == [1.0]
    assert "clock or pizza (trained): clock" in r.describe()
    s = r.summary()
    assert s["best_form"] == r.best_form and s["clock_pizza"] == ["clock"]
    assert s["acc_at_0.9"] == {f: rep[f]["at_0.9"]["mean"] for f in rep}

    page = forms_html(r)
    assert page.count('id="fig-forms-replacement"') == 1
    assert "&lt;b&gt;seed 0&lt;/b&gt;" in page and "<b>seed 0</b>" not in page
    assert page.count("<tr>") == 1 + 3 + 1 + 6 + 1 + 2 + 1 + 5 + 1 + len(quad["ns"])


def test_forms_comparison_says_which_parts_do_not_apply() -> None:
    from analyses.experiments.forms import compare_neuron_forms
    from analyses.pages.forms import forms_html

    deep = HookedMLP(MLPConfig(p=11, d_hidden=8, n_layers=2))
    r = compare_neuron_forms([deep])
    assert r.to_dict() == {"applies": {"forms": r.applies["forms"],
                                       "clock_pizza": r.applies["forms"]}}
    assert "2-layer model" in r.applies["forms"] and r.figures() == {}
    assert "2-layer model" in r.describe() and "2-layer model" in forms_html(r)
    assert r.summary() == {"applies": r.applies}
    small = HookedMLP(MLPConfig(p=3, d_hidden=8))
    tiny = compare_neuron_forms([small], ["tiny"])
    html, numbers = forms_html(tiny), tiny.to_dict()
    assert "p = 3" in numbers["applies"]["forms"] and "p = 3" in html
    torch.manual_seed(0)
    mul = HookedMLP(MLPConfig(p=11, d_hidden=16, operation="mul"))
    d = compare_neuron_forms([mul], n_orders=1, discover_generations=1).to_dict()
    assert "clock_pizza" not in d and "construction" not in d and "mul" in \
        d["applies"]["clock_pizza"]


def test_forms_comparison_refuses_bad_arguments() -> None:
    from analyses.experiments.forms import compare_neuron_forms

    model = HookedMLP(MLPConfig(p=11, d_hidden=8))
    with pytest.raises(ValueError, match="at least one model"):
        compare_neuron_forms([])
    with pytest.raises(ValueError, match="labels must name each of the 1 models"):
        compare_neuron_forms([model], ["a", "b"])
    with pytest.raises(ValueError, match="n_orders must be a positive integer"):
        compare_neuron_forms([model], n_orders=0)
    with pytest.raises(ValueError, match="discover_generations must be a positive integer"):
        compare_neuron_forms([model], discover_generations=1.5)
