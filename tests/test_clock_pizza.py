"""Clock or pizza (analyses.clock_pizza): the two diagnostics and the verdict."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from analyses.clock_pizza import (
    correct_logits,
    diagnose,
    distance_irrelevance,
    gradient_symmetricity,
    verdict,
)
from analyses.synthetic import (
    cosine_weights,
    pizza_construction,
    quad_construction,
    random_cosine_model,
    random_cosine_params,
)
from hooked_mlp import MLPConfig, load_pretrained
from hooked_mlp.model import HookedMLP


def test_a_pure_clock_is_a_clock() -> None:
    # the exact quad construction: different phases for a and b, a correct logit that is the
    # same for every pair
    model = quad_construction(12, p=31, seed=0)
    L = correct_logits(model)
    assert float(L.std()) < 1e-4 * float(L.abs().mean())
    result = diagnose(model)
    assert result.distance_irrelevance == 1.0
    assert result.gradient_symmetricity < 0.5
    assert result.verdict == "clock"


def test_a_pure_pizza_is_a_pizza() -> None:
    model = pizza_construction(30, p=31, seed=0)
    result = diagnose(model)
    assert result.gradient_symmetricity == pytest.approx(1.0, abs=1e-6)  # W_a = W_b
    assert result.distance_irrelevance < 1e-3  # the correct logit is a function of a - b
    assert result.verdict == "pizza"


def test_same_neurons_with_and_without_shared_phases() -> None:
    # the same random neurons (ReLU), once with independent phases for a and b, once with
    # phi_b = phi_a: the diagnostics move the way the two algorithms predict
    p, n = 31, 256
    prm = random_cosine_params(n, p, seed=1)
    cfg = MLPConfig(p=p, d_hidden=n, bias=False)
    clock = HookedMLP.from_params(cfg, cosine_weights(prm["k"], prm["phi_a"], prm["phi_b"], p))
    shared = HookedMLP.from_params(cfg, cosine_weights(prm["k"], prm["phi_a"], prm["phi_a"], p))
    gs_clock, gs_shared = gradient_symmetricity(clock), gradient_symmetricity(shared)
    assert gs_clock < 0.3 and gs_shared > 0.999
    assert distance_irrelevance(shared) < distance_irrelevance(clock)
    assert diagnose(clock).verdict == "clock"


def test_shipped_model_is_a_clock_and_subtraction_is_handled() -> None:
    result = diagnose(load_pretrained(0))
    assert result.verdict == "clock"
    assert result.gradient_symmetricity < 0.5 and result.distance_irrelevance > 0.9
    sub = random_cosine_model(256, p=31, seed=0, operation="sub")
    assert diagnose(sub).verdict == "clock"


def test_verdict_thresholds_and_bad_inputs() -> None:
    assert verdict(0.99, 0.1) == "pizza"
    assert verdict(0.5, 0.9) == "clock"
    assert verdict(0.99, 0.9) == "neither" and verdict(0.5, 0.1) == "neither"
    mul = HookedMLP(MLPConfig(p=7, d_hidden=8, operation="mul"))
    with pytest.raises(ValueError, match="modular addition"):
        diagnose(mul)
    with pytest.raises(ValueError, match="n_triples"):
        gradient_symmetricity(quad_construction(6, 7, 0), n_triples=0)
    with pytest.raises(TypeError, match="HookedMLP"):
        diagnose(torch.zeros(3))
    with pytest.raises(TypeError, match="HookedMLP"):
        distance_irrelevance("model")


def test_tied_inputs_are_symmetric_by_construction() -> None:
    cfg = dataclasses.replace(MLPConfig(p=11, d_hidden=16), tied_inputs=True)
    assert gradient_symmetricity(HookedMLP(cfg, seed=0)) == pytest.approx(1.0, abs=1e-6)
