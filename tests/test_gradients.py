"""The hand-derived gradients (`hooked_mlp.gradients`) equal autograd through the one definition."""

import pytest
import torch
import torch.nn.functional as F
from test_train import MEMBERS, _name

from hooked_mlp import MLPConfig, TrainConfig, gradients
from hooked_mlp.data import all_pairs, labels_of
from hooked_mlp.functional import init_params, input_rows, param_shapes
from hooked_mlp.training.trainer import BatchedTrainer


def _stacked(cfg: MLPConfig, seeds: list[int]) -> dict[str, torch.Tensor]:
    per_seed = [init_params(cfg, s) for s in seeds]
    return {k: torch.stack([p[k] for p in per_seed]).double() for k in param_shapes(cfg)}


def _batch(cfg: MLPConfig, S: int, B: int) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = all_pairs(cfg.p)
    if cfg.operation == "div":
        pairs = pairs[pairs[:, 1] != 0]
    gen = torch.Generator().manual_seed(7)
    tokens = torch.stack([pairs[torch.randperm(len(pairs), generator=gen)[:B]]
                          for _ in range(S)])  # [S, B, 2]
    return tokens, labels_of(tokens.view(-1, 2), cfg).view(S, B)


def _by_autograd(cfg, params, tokens, labels):
    from hooked_mlp.functional import forward

    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    logits = forward(cfg, leaves, tokens)
    per = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    per.view(labels.shape).mean(1).sum().backward()
    return per.view(labels.shape).detach(), logits.detach(), {k: v.grad for k, v in leaves.items()}


# the dense first layers of the other input encodings, with the structural fields
ENCODED = [MLPConfig(p=7, d_hidden=6, input_encoding=e) for e in ("scalar", "circle", "binary")]
ENCODED += [MLPConfig(p=7, d_hidden=6, input_encoding="binary", tied_inputs=True, bias=False),
            MLPConfig(p=7, d_hidden=6, input_encoding="circle", n_layers=2, activation="quad")]


@pytest.mark.parametrize("cfg", MEMBERS + ENCODED,
                         ids=[_name(c) + "-" + c.input_encoding for c in MEMBERS + ENCODED])
def test_equal_autograd_for_every_member(cfg):
    """Two seeds at once, in float64: losses, logits and every gradient of each seed's mean
    loss equal autograd's through `functional.forward`."""
    params = _stacked(cfg, [1, 2])
    tokens, labels = _batch(cfg, 2, 20)
    grads = {k: torch.full_like(v, float("nan")) for k, v in params.items()}  # all overwritten
    per, logits = gradients.loss_and_grads(cfg, params, input_rows(cfg, tokens), labels, grads)
    want_per, want_logits, want = _by_autograd(cfg, params, tokens, labels)
    torch.testing.assert_close(per, want_per, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(logits, want_logits, rtol=1e-12, atol=1e-14)
    for name in want:
        assert float(want[name].abs().max()) > 0, name
        torch.testing.assert_close(grads[name], want[name], rtol=1e-10, atol=1e-13, msg=name)


def test_an_activation_without_a_listed_backward_falls_back_to_autograd(monkeypatch):
    cfg = MLPConfig(p=7, d_hidden=6, activation="gelu", n_layers=2)
    params = _stacked(cfg, [3])
    tokens, labels = _batch(cfg, 1, 15)
    monkeypatch.delitem(gradients.ACTIVATION_BACKWARD, "gelu")
    grads = {k: torch.empty_like(v) for k, v in params.items()}
    gradients.loss_and_grads(cfg, params, input_rows(cfg, tokens), labels, grads)
    _, _, want = _by_autograd(cfg, params, tokens, labels)
    for name in want:
        torch.testing.assert_close(grads[name], want[name], rtol=1e-10, atol=1e-13, msg=name)


def test_the_trainer_uses_them_and_equals_its_autograd_path():
    """The general path takes the hand-derived gradients; a few epochs with them and with
    autograd give the same weights and history (float tolerance)."""
    cfg = MLPConfig(p=11, d_hidden=16, activation="silu", n_layers=2, tied_inputs=True)
    tcfg = TrainConfig(epochs=3, batch_size=32, seed=5)
    runs = []
    for by_hand in (True, False):
        t = BatchedTrainer(cfg, tcfg, [5, 6], backend="torch")
        assert t.impl.by_hand  # the default
        t.impl.by_hand = by_hand
        for _ in range(tcfg.epochs):
            t.run_epoch()
        runs.append(t)
    (a, b) = runs
    assert float((a.flat - b.flat).abs().max()) < 1e-5
    start = init_params(cfg, 5)
    assert all(float((a.params_of(0)[k] - start[k]).abs().max()) > 1e-3 for k in start)
    torch.testing.assert_close(a.history[:3], b.history[:3], rtol=1e-5, atol=1e-6)
