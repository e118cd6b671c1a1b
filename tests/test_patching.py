"""Issue 21, ablation and patching: `analyses.patching` against hand-written hook loops."""

import pytest
import torch

from analyses.patching import ablate, attribution_patching, neuron_patching, path_patching
from hooked_mlp import HookedMLP, MLPConfig
from hooked_mlp.data import all_pairs, labels_of
from hooked_mlp.helpers import accuracy

POST = "blocks.0.mlp.hook_post"


def _pairs(p, n, seed):
    g = torch.Generator().manual_seed(seed)
    clean = all_pairs(p)[torch.randperm(p * p, generator=g)[:n]]
    corrupt = clean.clone()
    corrupt[:, 1] = torch.randint(0, p, (n,), generator=g)
    return clean, corrupt


@pytest.fixture(scope="module")
def pairs():
    return _pairs(113, 60, 0)


@pytest.fixture(scope="module")
def deep():
    """A two-layer model with random weights (p = 11, 6 neurons per layer)."""
    return HookedMLP(MLPConfig(p=11, d_hidden=6, n_layers=2), seed=4)


def _no_hooks_left(model):
    return not any(h._forward_hooks or h.fwd_hooks for h in model.hook_dict.values()) and \
        not model._forward_pre_hooks


def _label_logit(tokens, cfg):
    labels = labels_of(tokens, cfg)
    return lambda logits: logits.gather(1, labels[:, None]).mean()


def _hand_patch(model, clean, corrupt, metric, layer, neuron):
    """The loop a user writes: one run_with_hooks per neuron."""
    name = f"blocks.{layer}.mlp.hook_post"
    _, cache = model.run_with_cache(clean)

    def hook(post, hook):
        post = post.clone()
        post[:, neuron] = cache[name][:, neuron]
        return post

    with torch.no_grad():
        return float(metric(model.run_with_hooks(corrupt, fwd_hooks=[(name, hook)])))


# ------------------------------------------------------------------------------------ ablate
def test_zero_and_mean_ablation_equal_hand_hooks(shipped, all_pairs_tokens):
    neurons = [0, 5, 38, 99]
    _, cache = shipped.run_with_cache(all_pairs_tokens)
    mean = cache[POST].mean(0)

    def zero(post, hook):
        post = post.clone()
        post[:, neurons] = 0
        return post

    def by_mean(post, hook):
        post = post.clone()
        post[:, neurons] = mean[neurons]
        return post

    tokens = all_pairs_tokens[::7]
    for how, hand in (("zero", zero), ("mean", by_mean)):
        want = shipped.run_with_hooks(tokens, fwd_hooks=[(POST, hand)])
        with ablate(shipped, neurons, how=how) as model:
            assert model is shipped
            torch.testing.assert_close(shipped(tokens), want, rtol=0, atol=1e-5)
        assert _no_hooks_left(shipped)
    torch.testing.assert_close(shipped(tokens), cache["hook_logits"][::7])


def test_every_analysis_sees_the_ablation(shipped):
    before = accuracy(shipped)
    with ablate(shipped, range(100)):
        assert accuracy(shipped) == pytest.approx(1 / 113, abs=0.02)  # constant logits: b_out
        with pytest.raises(ValueError, match="permanent hooks|hook"):
            from analyses.replacement import replacement_curve
            replacement_curve(shipped, fractions=[0.5])
    assert accuracy(shipped) == before


def test_resample_is_seeded_and_per_pair(shipped, all_pairs_tokens):
    neurons = list(range(0, 100, 3))
    _, cache = shipped.run_with_cache(all_pairs_tokens)
    src = torch.randperm(113 * 113, generator=torch.Generator().manual_seed(5))

    def hand(post, hook):  # pair i = a p + b gets the activations of pair src[i]
        post = post.clone()
        pair = tokens[:, 0] * 113 + tokens[:, 1]
        post[:, neurons] = cache[POST][src[pair]][:, neurons]
        return post

    tokens = all_pairs_tokens[torch.randperm(113 * 113)[:300]]
    want = shipped.run_with_hooks(tokens, fwd_hooks=[(POST, hand)])
    with ablate(shipped, neurons, how="resample", seed=5):
        got = shipped(tokens)
        # a pair's value does not depend on the pairs beside it in the batch
        torch.testing.assert_close(shipped(tokens[:17]), got[:17])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    with ablate(shipped, neurons, how="resample", seed=6):
        assert not torch.allclose(shipped(tokens), got)
    assert _no_hooks_left(shipped)


def test_ablation_hook_is_removed_after_an_exception(shipped):
    with pytest.raises(RuntimeError, match="inside"), ablate(shipped, [1], how="resample"):
        raise RuntimeError("inside")
    assert _no_hooks_left(shipped)


def test_ablate_refuses_bad_arguments(shipped):
    for kwargs, match in ((dict(how="mode"), "how must be one of"),
                          (dict(layer=1), "layer must be an integer in \\[-1, 0\\]"),
                          (dict(seed=-1), "seed must be")):
        with pytest.raises(ValueError, match=match), ablate(shipped, [0], **kwargs):
            pass
    with pytest.raises(ValueError, match="neurons must lie in \\[0, 99\\]"), \
            ablate(shipped, [100]):
        pass
    assert _no_hooks_left(shipped)


# ------------------------------------------------------------------------------------ patching
def test_neuron_patching_equals_the_hook_loop(shipped, pairs):
    clean, corrupt = pairs
    metric = _label_logit(clean, shipped.cfg)
    result = neuron_patching(shipped, clean, corrupt, metric)
    assert result.values.shape == (1, 100)
    hand = torch.tensor([_hand_patch(shipped, clean, corrupt, metric, 0, n) for n in range(100)],
                        dtype=torch.float64)
    torch.testing.assert_close(result.values[0], hand, rtol=0, atol=2e-5)
    assert result.corrupt == pytest.approx(float(metric(shipped(corrupt).detach())), abs=1e-6)
    assert result.clean == pytest.approx(float(metric(shipped(clean).detach())), abs=1e-6)
    assert result.effect.abs().max() > 0.05  # the sweep measures something
    assert set(result.figures()) == {"patching"} and "L0N" in result.describe()
    (l0, n0, e0), = result.top(1)
    assert result.summary()["strongest"] == {"layer": l0, "neuron": n0, "effect": e0}
    # a metric vmap cannot take gives the same numbers, one call per copy
    slow = neuron_patching(shipped, clean, corrupt, lambda lg: float(metric(lg).item()))
    torch.testing.assert_close(slow.values, result.values)


def test_neuron_patching_of_every_layer_of_a_deep_model(deep):
    clean, corrupt = _pairs(11, 40, 1)
    ce = lambda lg: -torch.nn.functional.cross_entropy(lg, labels_of(clean, deep.cfg))  # noqa: E731
    result = neuron_patching(deep, clean, corrupt, ce, max_rows=100)  # several chunks
    hand = torch.tensor([[_hand_patch(deep, clean, corrupt, ce, layer, n) for n in range(6)]
                         for layer in range(2)], dtype=torch.float64)
    torch.testing.assert_close(result.values, hand, rtol=0, atol=1e-5)
    # hooks of the user's own are seen (the last layer then runs the general path)
    deep.add_hook("hook_logits", lambda x, hook: 2 * x)
    try:
        doubled = neuron_patching(deep, clean, corrupt, lambda lg: lg.mean(), layers=[1])
        plain_hand = [_hand_patch(deep, clean, corrupt, lambda lg: lg.mean(), 1, n)
                      for n in range(6)]
    finally:
        deep.reset_hooks()
    assert doubled.values[0].isnan().all()
    torch.testing.assert_close(doubled.values[1], torch.tensor(plain_hand, dtype=torch.float64))


def test_attribution_equals_activation_patching_where_the_model_is_linear(shipped, deep, pairs):
    clean, corrupt = pairs
    metric = _label_logit(clean, shipped.cfg)  # linear in the logits, which are linear in post
    act = neuron_patching(shipped, clean, corrupt, metric)
    attr = attribution_patching(shipped, clean, corrupt, metric)
    torch.testing.assert_close(attr.values, act.values, rtol=0, atol=2e-5)
    agreement = act.agreement(attr)
    assert agreement["pearson"] > 0.99999 and agreement["top10_overlap"] == 1.0
    # the cross-entropy is not linear: close, not equal
    ce = lambda lg: -torch.nn.functional.cross_entropy(lg, labels_of(clean, shipped.cfg))  # noqa: E731
    loose = neuron_patching(shipped, clean, corrupt, ce).agreement(
        attribution_patching(shipped, clean, corrupt, ce))
    assert 0.9 < loose["pearson"] < 0.99999 and loose["max_abs_diff"] > 1e-4
    # a deep model's last layer is linear in its post too; its first layer is not
    c, k = _pairs(11, 40, 2)
    m = _label_logit(c, deep.cfg)
    a, b = neuron_patching(deep, c, k, m), attribution_patching(deep, c, k, m)
    torch.testing.assert_close(b.values[1], a.values[1], rtol=0, atol=1e-5)
    assert not torch.allclose(b.values[0], a.values[0], atol=1e-4)
    assert shipped.W_in.grad is None  # the parameters' gradients are left alone


def test_path_patching_equals_the_hook_loop(deep):
    clean, corrupt = _pairs(11, 30, 3)
    metric = _label_logit(clean, deep.cfg)
    result = path_patching(deep, clean, corrupt, metric, max_rows=70)
    assert result.values.shape == (6, 6)
    _, cc = deep.run_with_cache(clean)
    _, kc = deep.run_with_cache(corrupt)
    delta = cc[POST] - kc[POST]
    for n, m in ((0, 0), (2, 5), (5, 1)):
        def hook(pre, hook, n=n, m=m):
            pre = pre.clone()
            pre[:, m] += delta[:, n] * deep.W_hidden[0][n, m]
            return pre

        with torch.no_grad():
            want = float(metric(deep.run_with_hooks(
                corrupt, fwd_hooks=[("blocks.1.mlp.hook_pre", hook)])))
        assert float(result.values[n, m]) == pytest.approx(want, abs=1e-5)
    assert "L0N" in result.describe() and set(result.figures()) == {"path_patching"}
    s = result.summary()["strongest"]
    assert abs(s["effect"]) == pytest.approx(float(result.effect.abs().max()))


def test_paths_add_up_to_the_neuron_in_a_linear_model():
    """With x -> x and a metric linear in the logits, a sender's effect is the sum of its
    edges' effects (every path passes through the next layer)."""
    model = HookedMLP(MLPConfig(p=11, d_hidden=5, n_layers=3, activation="identity"), seed=2)
    clean, corrupt = _pairs(11, 25, 4)
    metric = _label_logit(clean, model.cfg)
    whole = neuron_patching(model, clean, corrupt, metric)
    for sender in (0, 1):
        paths = path_patching(model, clean, corrupt, metric, sender_layer=sender)
        torch.testing.assert_close(paths.effect.sum(dim=1), whole.effect[sender], rtol=0,
                                   atol=1e-5)


def test_patching_refuses_bad_arguments(shipped, deep, pairs):
    clean, corrupt = pairs
    metric = _label_logit(clean, shipped.cfg)
    with pytest.raises(ValueError, match="same shape"):
        neuron_patching(shipped, clean, corrupt[:5], metric)
    with pytest.raises(TypeError, match="metric must be a function"):
        neuron_patching(shipped, clean, corrupt, 3)
    with pytest.raises(ValueError, match="metric must return a scalar"):
        neuron_patching(shipped, clean, corrupt, lambda lg: lg)
    with pytest.raises(ValueError, match="layers must be an integer"):
        neuron_patching(shipped, clean, corrupt, metric, layers=[2])
    with pytest.raises(ValueError, match="differentiable"):
        attribution_patching(shipped, clean, corrupt, lambda lg: 1.0)
    with pytest.raises(ValueError, match="has one"):
        path_patching(shipped, clean, corrupt, metric)
    with pytest.raises(ValueError, match="sender_layer must be in \\[0, 0\\]"):
        c, k = _pairs(11, 5, 0)
        path_patching(deep, c, k, _label_logit(c, deep.cfg), sender_layer=1)


# ------------------------------------------------------------------------------ the experiment
def test_frequency_ablation_equals_ablating_by_hand(shipped, all_pairs_tokens):
    from analyses.experiments.ablation import frequency_ablation
    from analyses.groups import by_frequency

    result = frequency_ablation(shipped, keep_k=[1, 5, 44])
    groups = by_frequency(shipped)
    labels = labels_of(all_pairs_tokens, shipped.cfg)
    k = result.ranking[0]
    mask = torch.ones(100)
    mask[groups[k]] = 0
    with torch.no_grad():
        logits = shipped.run_with_hooks(all_pairs_tokens,
                                        fwd_hooks=[(POST, lambda x, hook: x * mask)])
    i = result.frequencies.index(k)
    assert result.loss_without[i] == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits.double(), labels)), abs=1e-6)
    assert result.loss_without[i] == max(result.loss_without)
    assert result.acc_keep[-1] == result.acc and result.loss_keep[-1] == pytest.approx(
        result.loss)  # every neuron has a frequency: keeping all 44 ablates nothing
    assert result.acc_keep[0] < 0.1 < result.acc_keep[1] < result.acc_keep[2]
    assert _no_hooks_left(shipped) and set(result.figures()) == {"ablation"}
    with pytest.raises(ValueError, match="keep_k must be a non-empty list of integers in "
                                         "\\[1, 44\\]"):
        frequency_ablation(shipped, keep_k=[45])


# --------------------------------------------------------------------------- TL's own patching
def test_tl_generic_activation_patch_runs_on_a_hooked_mlp(deep):
    from transformer_lens.patching import generic_activation_patch, make_df_from_ranges

    from analyses.patching import layer_neuron_patch_setter, layer_patch_setter, tl_index_df

    clean, corrupt = _pairs(11, 30, 5)
    metric = _label_logit(clean, deep.cfg)
    _, clean_cache = deep.run_with_cache(clean)
    out = generic_activation_patch(deep, corrupt, clean_cache, metric,
                                   layer_neuron_patch_setter, "post", index_df=tl_index_df(deep))
    ours = neuron_patching(deep, clean, corrupt, metric)
    torch.testing.assert_close(out.double(), ours.values.flatten(), rtol=0, atol=1e-5)
    whole = generic_activation_patch(deep, corrupt, clean_cache, metric, layer_patch_setter,
                                     "post", index_df=make_df_from_ranges([2], ["layer"]))
    assert float(whole[1]) == pytest.approx(ours.clean, abs=1e-5)  # the last layer is all of it
    assert list(tl_index_df(deep, layers=[1], neurons=[0, 5]).itertuples(index=False)) == [
        (1, 0), (1, 5)]


def test_tl_transformer_patching_functions_cannot_apply(deep):
    """They read attention heads and hook points an MLP has not: documented, and they fail
    rather than patching something silently."""
    from transformer_lens import patching

    clean, corrupt = _pairs(11, 8, 6)
    _, clean_cache = deep.run_with_cache(clean)
    for fn in (patching.get_act_patch_mlp_out, patching.get_act_patch_resid_pre,
               patching.get_act_patch_attn_out):
        with pytest.raises(AttributeError, match="no n_heads: a HookedMLP has no attention"):
            fn(deep, corrupt, clean_cache, lambda lg: lg.mean())
