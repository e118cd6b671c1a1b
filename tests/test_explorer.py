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


@pytest.mark.parametrize("which", ["random", "shipped"])
def test_batched_ablations_equal_ablate_group_by_group(model, which):
    from analyses.explorer.data import ablations
    from analyses.groups import by_frequency
    from hooked_mlp import load_pretrained
    from hooked_mlp.data import valid_mask

    m = model if which == "random" else load_pretrained(0)
    pairs = all_pairs(m.cfg.p)
    labels, valid = labels_of(pairs, m.cfg), valid_mask(m.cfg)
    entries = ablations(m, pairs, labels, valid)
    groups = by_frequency(m, alive_only=True)
    assert [e["k"] for e in entries] == list(groups) and len(entries) >= 2
    for entry in entries:
        assert entry["neurons"] == groups[entry["k"]]
        with torch.no_grad(), ablate(m, entry["neurons"]):
            logits = m(pairs)
        loss = float(torch.nn.functional.cross_entropy(logits[valid], labels[valid]))
        acc = float((logits[valid].argmax(-1) == labels[valid]).double().mean())
        assert entry["acc"] == pytest.approx(acc, abs=1e-5)
        assert entry["loss"] == pytest.approx(loss, abs=2e-5)
    assert any(e["acc"] < max(x["acc"] for x in entries) for e in entries)


def test_gather_refuses_what_it_cannot_draw():
    deep = HookedMLP(MLPConfig(p=13, d_hidden=8, n_layers=2))
    with pytest.raises(ValueError, match="one-hidden-layer"):
        gather(deep)
    with pytest.raises(TypeError, match="explore takes"):
        gather(3)
    data = gather(HookedMLP(MLPConfig(p=7, d_hidden=4)))
    assert data["kind"] == "model" and data["p"] == 7 and len(data["states"]) == 1
    assert len(data["labels"]) == 49


def test_a_series_takes_its_measures_computed_before_and_refuses_another_series():
    from analyses.dynamics import dynamics
    from hooked_mlp import load_snapshots
    from hooked_mlp.files.layout import PRETRAINED_DIR, SHIPPED_SERIES
    from hooked_mlp.files.series import SnapshotSeries

    full = load_snapshots(PRETRAINED_DIR / SHIPPED_SERIES)
    keep = [0, 16, len(full) - 1]
    small = SnapshotSeries(full.cfg, [full.epochs[i] for i in keep],
                           {k: v[keep] for k, v in full.params.items()}, full.train_info,
                           source=full.source)
    d = dynamics(small)
    fresh, given = gather(small), gather(small, measures=d)
    assert given["curves"] == fresh["curves"] and given["curves"]["epochs"] == small.epochs
    assert len(given["states"]) == 3 and given["states"][-1]["ablations"]
    other = SnapshotSeries(full.cfg, [full.epochs[i] for i in keep[:2]],
                           {k: v[keep[:2]] for k, v in full.params.items()}, full.train_info,
                           source=full.source)
    with pytest.raises(ValueError, match="not the series'"):
        gather(other, measures=d)
    with pytest.raises(TypeError, match="measures must be an analyses.dynamics.Dynamics"):
        gather(small, measures={"epochs": small.epochs})
    with pytest.raises(ValueError, match="with a series only"):
        gather(small[-1], measures=d)


def test_the_quick_finiteness_check_decides_as_the_full_one():
    from analyses.explorer.data import finite_logits
    from hooked_mlp.checks import LogitsOverflowError

    finite_logits(torch.randn(3, 5, 7), "x")
    huge = torch.full((4, 8), 3e38)  # finite, but their sum overflows: the full check passes
    finite_logits(huge, "x")
    for bad in (float("inf"), float("-inf"), float("nan")):
        lg = torch.randn(3, 5, 7)
        lg[1, 2, 3] = bad
        with pytest.raises(LogitsOverflowError, match="1 of 105 are infinite or NaN"):
            finite_logits(lg, "the ablated loss")


def test_states_of_a_series_at_once_equal_each_snapshots_own_analyses():
    """states_data computes fits, spectra, losses, dead neurons and checks for every snapshot
    at once (stacked): each equals what the plain analyses give for that snapshot alone."""
    from analyses.cosine_fit import dead_neurons, fit_neurons
    from analyses.explorer.data import check_pairs, states_data
    from analyses.fourier import neuron_spectra
    from hooked_mlp import load_snapshots
    from hooked_mlp.data import valid_mask
    from hooked_mlp.files.layout import PRETRAINED_DIR, SHIPPED_SERIES

    full = load_snapshots(PRETRAINED_DIR / SHIPPED_SERIES)
    models = [full[i] for i in (0, 5, 12, len(full) - 1)]
    torch.manual_seed(1)
    dead_one = HookedMLP(MLPConfig(p=113, d_hidden=100)).eval()  # a model with dead neurons
    with torch.no_grad():
        dead_one.W_in[:, :7] = -1.0
        dead_one.b_in[:7] = -1.0
    models.append(dead_one)
    states = states_data(models, [0, 1, 2, 3, None], dtype="f16",
                         detail=[False, False, False, False, False])
    pairs = all_pairs(113)
    labels, valid = labels_of(pairs, models[0].cfg), valid_mask(models[0].cfg)
    idx = check_pairs(pairs.shape[0]).tolist()
    for m, st in zip(models, states, strict=True):
        fits = fit_neurons(m)
        for s, f in (("a", fits.a), ("b", fits.b), ("out", fits.out)):
            assert st["cosine"][s]["k"] == f.k.tolist()
            for key in ("scale", "phase", "offset", "r2"):
                np.testing.assert_allclose(np.array(st["cosine"][s][key], dtype=float),
                                           getattr(f, key).double().numpy(), atol=2e-4,
                                           equal_nan=True)
        assert st["dead"] == dead_neurons(m).tolist() == fits.dead.tolist()
        assert st["frequency"] == neuron_spectra(m).input_frequency.tolist()
        with torch.no_grad():
            logits, cache = m.run_with_cache(pairs, names_filter="blocks.0.mlp.hook_post")
        loss = float(torch.nn.functional.cross_entropy(logits[valid], labels[valid]))
        acc = float((logits[valid].argmax(-1) == labels[valid]).double().mean())
        assert st["loss"] == pytest.approx(loss, abs=2e-5)
        assert st["acc"] == pytest.approx(acc, abs=1e-5)
        for c, i in zip(st["checks"], idx, strict=True):
            assert (c["a"], c["b"]) == tuple(pairs[i].tolist())
            np.testing.assert_allclose(c["post"], cache["blocks.0.mlp.hook_post"][i], atol=2e-6)
            np.testing.assert_allclose(c["logits"], logits[i], atol=1e-5)
    assert sum(states[-1]["dead"]) >= 7 and states[0]["acc"] < states[3]["acc"]
    with pytest.raises(ValueError, match="one configuration"):
        states_data([models[0], HookedMLP(MLPConfig(p=13, d_hidden=16))], [0, 1])


def test_a_model_with_hooks_attached_is_refused():
    """The page draws the model's weights: a hook that changes what the model computes (an
    ablation here) would not be drawn, so the explorer refuses the model while it is attached."""
    from analyses.explorer.data import model_data
    from analyses.patching import ablate

    model = HookedMLP(MLPConfig(p=11, d_hidden=16), seed=0)
    with ablate(model, [0, 1]), pytest.raises(ValueError, match=r"the explorer computes the "
                                              r"model's behaviour from its weights.*hooks on"):
        model_data(model)
    model.add_hook("blocks.0.mlp.hook_post", lambda value, hook: value * 0, is_permanent=True)
    with pytest.raises(ValueError, match=r"hooks on \['blocks\.0\.mlp\.hook_post'\]"):
        model_data(model)
    model.reset_hooks(including_permanent=True)
    assert model_data(model)["states"][0]["checks"]  # drawn again once the hooks are gone
