"""Gromov's quad construction made exact (analyses.synthetic.quad_construction) and trained
quad models beside it (analyses.experiments.construction)."""

from __future__ import annotations

import math

import pytest
import torch

from analyses.experiments.construction import compare_quad, quad_curve
from analyses.synthetic import quad_construction, quad_construction_neurons
from hooked_mlp import MLPConfig, TrainConfig
from hooked_mlp.data import all_pairs
from hooked_mlp.helpers import accuracy
from hooked_mlp.training import train


@pytest.mark.parametrize("p", [23, 113])
def test_reaches_100_percent_at_the_predicted_count(p: int) -> None:
    n = quad_construction_neurons(p)
    assert n == 6
    for seed in range(3):
        assert accuracy(quad_construction(n, p, seed)) == 1.0
        assert accuracy(quad_construction(2 * n, p, seed)) == 1.0
        # between multiples of 6 an incomplete group's uncancelled terms break it
        assert accuracy(quad_construction(n + 1, p, seed)) < 0.9
        # fewer neurons leave uncancelled terms
        assert max(accuracy(quad_construction(m, p, seed)) for m in range(1, n)) < 0.6


def test_logits_are_exactly_the_wanted_term() -> None:
    p = 23
    model = quad_construction(6, p, seed=2)
    k = int(torch.fft.rfft(model.W_out[0].detach().double()).abs()[1:].argmax()) + 1
    tokens = all_pairs(p)
    c = torch.arange(p)
    want = 3 * torch.cos(2 * math.pi * k * (tokens.sum(1, keepdim=True) - c).double() / p)
    assert torch.allclose(model(tokens).double(), want, atol=1e-4)


def test_nested_and_curve() -> None:
    small, big = quad_construction(6, 23, 1), quad_construction(12, 23, 1)
    assert torch.equal(small.W_in, big.W_in[:, :6])
    curve = quad_curve(ns=[5, 6, 24], p=23, seeds=[0])
    assert curve.exact[1] == [1.0] and curve.exact[2] == [1.0] and curve.exact[0][0] < 1.0
    assert curve.random_phases[1][0] < 1.0  # random phases need many more neurons
    assert curve.predicted == 6


def test_trained_quad_model_against_the_construction() -> None:
    torch.set_num_threads(1)
    cfg = MLPConfig(p=23, d_hidden=48, activation="quad", bias=False)
    model, _ = train(cfg, TrainConfig(epochs=150, batch_size=64), progress=False, threads=1)
    trained = compare_quad(model)
    exact = compare_quad(quad_construction(12, 23, 0))
    assert trained["accuracy"] > 0.95
    # the trained model keeps the construction's relations (shared k, phi_out = phi_a + phi_b)
    assert trained["frac_k_shared"] > 0.9 and trained["phase_error_abs_median"] < 0.2
    # ... but not its phase lattice: the sums the construction zeroes stay well above zero
    assert max(exact["phase_sum_mean"]) < 1e-5
    assert min(trained["phase_sum_mean"]) > 0.1


def test_sizes_are_checked_before_anything_is_built():
    from analyses.synthetic import pizza_construction

    for build in (quad_construction, pizza_construction):
        with pytest.raises(ValueError, match="d_hidden must be an integer in"):
            build(10**9)
        with pytest.raises(ValueError, match="n_neurons"):
            build(0)
