"""Issue 20, item 2: no verdict without the signal it rests on.

A model that computes nothing (all zeros, dead ReLUs, weights x 1e-30 whose float32 logits
underflow to zero, random weights, a 1-neuron model) or whose logits overflow (x 1e30) gets
`no verdict` from `analyses.clock_pizza.diagnose`, with the reason as a field; the shipped
models keep theirs.
"""

from __future__ import annotations

import math

import pytest
import torch

from analyses.clock_pizza import NO_VERDICT, diagnose, gradient_symmetricity
from hooked_mlp import MLPConfig, load_pretrained
from hooked_mlp.model import HookedMLP


def _scaled(factor: float) -> HookedMLP:
    model = load_pretrained(0)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(factor)
    return model


def _dead() -> HookedMLP:
    model = load_pretrained(0)
    with torch.no_grad():
        model.b_in.fill_(-1e4)  # every ReLU off on every pair: the logits are b_out alone
    return model


def _random(d_hidden: int) -> HookedMLP:
    torch.manual_seed(0)
    return HookedMLP(MLPConfig(p=113, d_hidden=d_hidden))


CASES = {
    "all zero": lambda: _scaled(0.0),
    "dead network": _dead,
    "study model x 1e-30": lambda: _scaled(1e-30),
    "random weights": lambda: _random(512),
    "one neuron": lambda: _random(1),
    "study model x 1e30": lambda: _scaled(1e30),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_model_that_computes_nothing_gets_no_verdict(name: str) -> None:
    result = diagnose(CASES[name](), n_triples=512)
    assert result.verdict == NO_VERDICT, (name, result)
    assert result.no_verdict_reason
    assert result.to_dict()["no_verdict_reason"] == result.no_verdict_reason
    if name == "study model x 1e30":
        assert "not finite" in result.no_verdict_reason
    else:
        assert result.accuracy < 0.5
        assert "pairs right" in result.no_verdict_reason


def test_zero_gradients_have_no_cosine() -> None:
    # the old code floored the cosine's norms (eps=1e-30) and read 0.0 here: a "clock" number
    assert math.isnan(gradient_symmetricity(_scaled(0.0), n_triples=64))


def test_the_shipped_models_keep_their_verdicts() -> None:
    for seed in (0, 1):
        result = diagnose(load_pretrained(seed), n_triples=1024)
        assert result.verdict == "clock"
        assert result.no_verdict_reason is None
        assert result.accuracy > 0.99
        assert result.n_triples_defined == 1024


def test_the_diagnostics_do_not_depend_on_the_output_scale() -> None:
    # the unembedding (and its bias) scaled by 1e-20: every logit shrinks by the same factor,
    # the answers are the same, and so are both diagnostics
    model, small = load_pretrained(0), load_pretrained(0)
    with torch.no_grad():
        small.W_out.mul_(1e-20)
        small.b_out.mul_(1e-20)
    a, b = diagnose(model, n_triples=256), diagnose(small, n_triples=256)
    assert b.verdict == a.verdict == "clock"
    assert b.gradient_symmetricity == pytest.approx(a.gradient_symmetricity, rel=1e-4)
    assert b.distance_irrelevance == pytest.approx(a.distance_irrelevance, rel=1e-4)
