"""The one neuron-by-neuron readout (analyses.readout) against the model's own forward."""

from __future__ import annotations

import pytest
import torch

from analyses.readout import accuracy_as_terms_change, readout_logits
from hooked_mlp import HookedMLP, MLPConfig
from hooked_mlp.checks import LogitsOverflowError
from hooked_mlp.data import dataset
from hooked_mlp.helpers import accuracy

P, H = 11, 12


def _post(model: HookedMLP, tokens: torch.Tensor) -> torch.Tensor:
    last = f"blocks.{model.cfg.n_layers - 1}.mlp.hook_post"
    _, cache = model.run_with_cache(tokens, names_filter=last)
    return cache[last].detach()


@pytest.mark.parametrize("cfg", [
    MLPConfig(p=P, d_hidden=H),
    MLPConfig(p=P, d_hidden=H, bias=False, activation="quad"),
    MLPConfig(p=P, d_hidden=H, n_layers=2, activation="gelu"),
])
def test_readout_logits_are_the_forward(cfg):
    model = HookedMLP(cfg, seed=3)
    tokens, _ = dataset(cfg)
    b_out = model.b_out.detach() if cfg.bias else None
    got = readout_logits(_post(model, tokens), model.W_out.detach(), b_out)
    torch.testing.assert_close(got, model(tokens).detach(), rtol=1e-5, atol=1e-5)


def _hybrid(a: HookedMLP, b: HookedMLP, neurons: list[int], inputs: bool) -> HookedMLP:
    """Model `a` with the given neurons' output rows (and input columns) taken from `b`."""
    state = {k: v.detach().clone() for k, v in a.state_tensors().items()}
    other = b.state_tensors()
    idx = torch.tensor(neurons, dtype=torch.int64)
    state["W_out"][idx] = other["W_out"].detach()[idx]
    if inputs:
        state["W_in"][:, idx] = other["W_in"].detach()[:, idx]
        state["b_in"][idx] = other["b_in"].detach()[idx]
    out = HookedMLP(a.cfg)
    out.load_state_dict(state)
    return out


@pytest.mark.parametrize("inputs", [True, False])
def test_accuracy_as_terms_change_is_the_accuracy_of_the_changed_model(inputs):
    """Swapping the terms of the first n neurons of an order gives the accuracy of the model
    with those neurons swapped (through its forward), at every n; none swapped is the model's
    accuracy exactly."""
    cfg = MLPConfig(p=P, d_hidden=H)
    a, b = HookedMLP(cfg, seed=1), HookedMLP(cfg, seed=2)
    with torch.no_grad():  # make the swapped neurons matter: b's output rows near a's answer
        b.W_out.mul_(3.0)
    tokens, labels = dataset(cfg)
    post_a, post_b = _post(a, tokens), _post(b, tokens)
    base = readout_logits(post_a, a.W_out.detach(), a.b_out.detach())
    orders = [list(range(H)), [5, 0, 11, 3, 7, 1, 2, 4, 6, 8, 9, 10]]
    counts = [0, 3, 6, H]
    curves = accuracy_as_terms_change(base, labels, post_a, a.W_out.detach(), orders, counts,
                                      b.W_out.detach(), post_b if inputs else None)
    assert len(curves) == 2 and all(len(c) == len(counts) for c in curves)
    for order, curve in zip(orders, curves, strict=True):
        assert curve[0] == accuracy(a)
        for n, got in zip(counts, curve, strict=True):
            want = accuracy(_hybrid(a, b, order[:n], inputs))
            assert got == pytest.approx(want, abs=1.5 / P**2), (order, n)
    # the curve moves: b's scaled rows change the answers
    assert len({round(x, 6) for x in curves[0]}) > 1


def test_overflowed_terms_are_refused_naming_what():
    cfg = MLPConfig(p=P, d_hidden=H)
    a = HookedMLP(cfg, seed=1)
    tokens, labels = dataset(cfg)
    post = _post(a, tokens)
    W = a.W_out.detach()
    base = readout_logits(post, W, a.b_out.detach())
    with pytest.raises(LogitsOverflowError, match=r"the test's accuracy \(4 neurons replaced\)"):
        accuracy_as_terms_change(base, labels, post, W, [list(range(H))], [4],
                                 torch.full_like(W, float("inf")), what="the test's accuracy")
