"""The explorer's data (analyses.explorer.data): the factors the front end draws from are the
model's own weights, the checks are the model's own hook_post and logits, and the precomputed
ablations equal ablate()'s."""

import numpy as np
import pytest
import torch

from analyses.explorer import gather, state_data
from analyses.explorer.data import decode
from analyses.fourier import neuron_signals
from analyses.patching import ablate
from hooked_mlp import HookedMLP, MLPConfig
from hooked_mlp.data import all_pairs, labels_of


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return HookedMLP(MLPConfig(p=13, d_hidden=16)).eval()


def test_factors_and_checks_are_the_models(model):
    st = state_data(model)
    p, h = 13, 16
    sig = neuron_signals(model)
    for s in ("a", "b", "out"):
        np.testing.assert_array_equal(decode(st["W"][s], (h, p)), sig[s].numpy())
    # the front end's formula on the shipped factors gives the model's hook_post and logits
    wa, wb, wo = (decode(st["W"][s], (h, p)) for s in ("a", "b", "out"))
    b_in, b_out = decode(st["W"]["b_in"], (h,)), decode(st["W"]["b_out"], (p,))
    assert len(st["checks"]) == 6
    for c in st["checks"]:
        post = np.maximum(wa[:, c["a"]] + wb[:, c["b"]] + b_in, 0)
        np.testing.assert_allclose(post, c["post"], atol=1e-5)
        np.testing.assert_allclose(post @ wo + b_out, c["logits"], atol=1e-4)
    assert len(st["dead"]) == h and len(st["frequency"]) == h
    assert set(st["winner"]) == {"a", "b", "out"}


def test_ablations_equal_ablate(model):
    st = state_data(model)
    pairs = all_pairs(13)
    labels = labels_of(pairs, model.cfg)
    assert st["ablations"]
    for entry in st["ablations"]:
        with torch.no_grad(), ablate(model, entry["neurons"]):
            acc = float((model(pairs).argmax(-1) == labels).double().mean())
        assert entry["acc"] == pytest.approx(acc, abs=1e-5)


def test_gather_refuses_what_it_cannot_draw():
    deep = HookedMLP(MLPConfig(p=13, d_hidden=8, n_layers=2))
    with pytest.raises(ValueError, match="one-hidden-layer"):
        gather(deep)
    with pytest.raises(TypeError, match="explore takes"):
        gather(3)
    data = gather(HookedMLP(MLPConfig(p=7, d_hidden=4)))
    assert data["kind"] == "model" and data["p"] == 7 and len(data["states"]) == 1
    assert len(data["labels"]) == 49
