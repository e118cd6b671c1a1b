"""The study's claims, measured on the shipped model; replacement and synthetic models."""

import pytest
import torch

from analyses.activations import activation_grids
from analyses.cosine_fit import fit_neurons
from analyses.fourier import frequency_histogram, neuron_spectra
from analyses.replacement import replace_neurons, replacement_curve
from analyses.synthetic import random_cosine_model, random_cosine_params, synthetic_curve
from hooked_mlp import HookedMLP, MLPConfig
from hooked_mlp.helpers import accuracy


@pytest.fixture(scope="module")
def fits(shipped):
    return fit_neurons(shipped)


def test_shipped_model_frequencies_agree_and_phases_add(fits):
    s = fits.summary()
    assert s["frac_k_all_equal"] >= 0.9
    assert s["frac_k_a_eq_b"] >= 0.9
    assert s["phase_error_abs_median"] < 0.2  # radians
    assert s["scale_rel_diff_median"] < 0.1
    assert s["r2_a_median"] > 0.8 and s["r2_b_median"] > 0.8
    # the phases of a and b differ: the relation is not trivially phi_a = phi_b
    assert s["phase_a_minus_b_abs_median"] > 0.5


def test_spectra_and_histogram(shipped):
    spectra = neuron_spectra(shipped)
    assert spectra.power["a"].shape == (100, 56)
    assert bool((spectra.top_fraction["a"] <= 1).all())
    h = frequency_histogram(shipped)
    assert h.n_neurons == 100 and sum(h.counts) == 100 and h.n_available == 56
    assert 20 <= h.n_distinct <= 56 and h.most_common_count <= 15
    assert h.effective_number <= h.n_distinct
    with pytest.raises(ValueError, match="source must be one of"):
        frequency_histogram(shipped, "c")


def test_replacing_zero_neurons_changes_nothing(shipped, fits, all_pairs_tokens):
    same = replace_neurons(shipped, [], fits)
    for name in ("W_in", "b_in", "W_out", "b_out"):
        assert torch.equal(getattr(same, name), getattr(shipped, name))
    with torch.no_grad():
        assert torch.equal(same(all_pairs_tokens), shipped(all_pairs_tokens))
    curve = replacement_curve(shipped, fractions=[0.0, 0.5], n_orders=2, fits=fits)
    assert curve.accuracy[0][0] == curve.accuracy[1][0] == accuracy(shipped)


def test_replacement_touches_only_chosen_neurons(shipped, fits):
    m = replace_neurons(shipped, [3, 50], fits)
    assert isinstance(m, HookedMLP)
    changed = (m.W_in != shipped.W_in).any(dim=0).nonzero().flatten().tolist()
    assert changed == [3, 50]
    assert (m.W_out != shipped.W_out).any(dim=1).nonzero().flatten().tolist() == [3, 50]
    torch.testing.assert_close(m.W_a[:, 3], fits.a.values()[3])
    assert torch.equal(m.b_in, shipped.b_in)
    inputs_only = replace_neurons(shipped, [3], fits, parts="inputs")
    assert torch.equal(inputs_only.W_out, shipped.W_out)


def test_incremental_curve_equals_building_models(shipped, fits):
    curve = replacement_curve(shipped, fractions=[0.3, 0.9], n_orders=2, seed=4, fits=fits,
                              form="harmonic")
    gen = torch.Generator().manual_seed(4)
    orders = [torch.randperm(100, generator=gen).tolist() for _ in range(2)]
    for r, order in enumerate(orders):
        for j, frac in enumerate([0.3, 0.9]):
            direct = accuracy(replace_neurons(shipped, order[: round(frac * 100)], fits,
                                              form="harmonic"))
            assert curve.accuracy[r][j] == pytest.approx(direct, abs=2 / 12769)


def test_replacement_degrades_gracefully_and_harmonics_help(shipped, fits):
    single = replacement_curve(shipped, fractions=[0.9], n_orders=5, fits=fits)
    harmonic = replacement_curve(shipped, fractions=[0.9], n_orders=5, fits=fits,
                                 form="harmonic")
    inputs = replacement_curve(shipped, fractions=[1.0], n_orders=1, fits=fits, parts="inputs")
    assert 0.5 < single.mean[0] < 1.0
    assert harmonic.mean[0] > single.mean[0]
    assert inputs.mean[0] > 0.99  # the input fits alone lose (almost) nothing


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"fractions": [1.5]}, ValueError, "fractions must be a non-empty list of numbers in"),
        ({"fractions": 0.5}, ValueError, "fractions must be a non-empty list of numbers in"),
        ({"fractions": ["a"]}, ValueError, "fractions must be a non-empty list of numbers in"),
        ({"order": "alphabetical"}, ValueError, "order must be one of"),
        ({"form": "square"}, ValueError, "form must be one of"),
        ({"parts": "middle"}, ValueError, "parts must be one of"),
        ({"n_orders": 0}, ValueError, "n_orders must be a positive integer"),
    ],
)
def test_replacement_bad_arguments(shipped, fits, kwargs, exc, message):
    with pytest.raises(exc, match=message):
        replacement_curve(shipped, fits=fits, **kwargs)


def test_bad_neurons_are_named(shipped, fits):
    message = "neurons must lie in \\[0, 99\\] \\(d_hidden=100\\), got 100"
    with pytest.raises(ValueError, match=message):
        replace_neurons(shipped, [100], fits)
    with pytest.raises(ValueError, match="neurons must lie in \\[0, 99\\]"):
        activation_grids(shipped, [-1])
    with pytest.raises(TypeError, match="neurons must be integers"):
        fit_neurons(shipped, ["3"])
    with pytest.raises(TypeError, match="model must be a HookedMLP"):
        fit_neurons("model")
    with pytest.raises(ValueError, match="hook must be one of"):
        activation_grids(shipped, [1], hook="hook_post")  # the old name: now blocks.0.mlp.*
    with pytest.raises(ValueError, match="neurons must lie in \\[0, 112\\] \\(d_hidden=113\\)"):
        activation_grids(shipped, [113], hook="hook_logits")


def test_activation_grids_match_the_cache(shipped, all_pairs_tokens):
    grids = activation_grids(shipped, [5, 17])
    assert grids.grids.shape == (2, 113, 113)
    _, cache = shipped.run_with_cache(all_pairs_tokens)
    a, b = 40, 99
    assert float(grids.grids[1, a, b]) == float(cache["blocks.0.mlp.hook_post"][a * 113 + b, 17])
    assert 0 < float(grids.active_fraction[0]) < 1


def test_random_cosine_models_add_modulo_p():
    seeds = range(5)
    acc256 = [accuracy(random_cosine_model(256, seed=s)) for s in seeds]
    acc512 = [accuracy(random_cosine_model(512, seed=s)) for s in seeds]
    assert sum(acc256) / 5 >= 0.95
    assert sum(acc512) / 5 >= 0.999
    m = random_cosine_model(8, p=13, seed=2)
    assert isinstance(m, HookedMLP) and m.cfg == MLPConfig(p=13, d_hidden=8, bias=False)
    assert m.b_in is None and m.b_out is None  # a member of the family without biases


def test_synthetic_curve_matches_models_and_is_nested():
    curve = synthetic_curve(ns=[16, 64], seeds=[0, 3], p=31)
    for i, n in enumerate([16, 64]):
        for j, s in enumerate([0, 3]):
            direct = accuracy(random_cosine_model(n, p=31, seed=s))
            assert curve.accuracy[i][j] == pytest.approx(direct, abs=2 / 31**2)
    small, big = random_cosine_params(10, 113, 7), random_cosine_params(50, 113, 7)
    assert torch.equal(small["k"], big["k"][:10])
    assert torch.equal(small["phi_a"], big["phi_a"][:10])
    assert not torch.equal(random_cosine_params(10, 113, 8)["k"], small["k"])
    k = random_cosine_params(5000, 113, 0)["k"]
    assert int(k.min()) == 1 and int(k.max()) == 56
    with pytest.raises(ValueError, match="n_neurons must be an integer >= 1"):
        random_cosine_model(0)


def test_sampling_analyses_are_reproducible(shipped, fits):
    one = replacement_curve(shipped, fractions=[0.5, 0.9], n_orders=3, seed=11, fits=fits)
    again = replacement_curve(shipped, fractions=[0.5, 0.9], n_orders=3, seed=11, fits=fits)
    other = replacement_curve(shipped, fractions=[0.5, 0.9], n_orders=3, seed=12, fits=fits)
    assert one.accuracy == again.accuracy and one.accuracy != other.accuracy
    a, b = random_cosine_model(64, seed=5), random_cosine_model(64, seed=5)
    assert torch.equal(a.W_in, b.W_in) and torch.equal(a.W_out, b.W_out)
    assert not torch.equal(a.W_in, random_cosine_model(64, seed=6).W_in)
    assert synthetic_curve(ns=[32], seeds=[1], p=31).accuracy == \
        synthetic_curve(ns=[32], seeds=[1], p=31).accuracy


def test_the_curves_spread_is_the_one_aggregate():
    """ReplacementCurve.sd and SyntheticCurve.sd are mean_sd's sample sd (n - 1; 0 for one
    run), per fraction and per N."""
    import statistics

    from analyses.replacement import ReplacementCurve
    from analyses.synthetic import SyntheticCurve

    runs = [[1.0, 0.5, 0.25], [1.0, 0.7, 0.5], [1.0, 0.9, 0.0]]
    curve = ReplacementCurve([0.0, 0.5, 1.0], "random", "cosine", "both", runs, seed=0)
    assert curve.sd == [0.0, pytest.approx(0.2, abs=1e-15), statistics.stdev([0.25, 0.5, 0.0])]
    assert ReplacementCurve([0.0, 1.0], "random", "cosine", "both", [[1.0, 0.3]], 0).sd == [0, 0]
    synth = SyntheticCurve(p=7, ns=[4, 8], seeds=[0, 1], accuracy=[[0.5, 0.75], [1.0, 1.0]])
    assert synth.sd == [statistics.stdev([0.5, 0.75]), 0.0]
    assert SyntheticCurve(p=7, ns=[4], seeds=[0], accuracy=[[0.5]]).sd == [0.0]
