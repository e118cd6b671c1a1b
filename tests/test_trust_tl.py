"""Issue 20, TransformerLens users: what TL's own hook and cache tests, ported to this model, found
(each test failed on the code before the fix)."""

import pytest
import torch
from transformer_lens.utilities import Slice

from hooked_mlp import HookedMLP, MLPConfig
from hooked_mlp.cache import MLPActivationCache
from hooked_mlp.data import all_pairs, labels_of


@pytest.fixture(scope="module")
def run(shipped):
    tokens = all_pairs(113)[torch.randperm(113 * 113, generator=torch.Generator().manual_seed(1))
                            [:40]]
    logits, cache = shipped.run_with_cache(tokens)
    return tokens, logits, cache


def test_apply_slice_to_batch_dim_keeps_the_mlp_cache(shipped, run):
    tokens, _, cache = run
    part = cache.apply_slice_to_batch_dim((5, 15))  # TL's Slice syntax: 5:15
    assert type(part) is MLPActivationCache and part.has_batch_dim
    assert torch.equal(part["post", 0], cache["post", 0][5:15])
    assert torch.equal(part.tokens, tokens[5:15]) and part.fingerprint == cache.fingerprint
    # the MLP methods and the clear refusals are still there
    stack = part.stack_neuron_results()
    assert stack.shape == (100, 10, 113)
    with pytest.raises(ValueError, match="has no residual stream"):
        part.accumulated_resid()
    chosen = cache.apply_slice_to_batch_dim([3, 1, 3])
    assert torch.equal(chosen["hook_logits"], cache["hook_logits"][[3, 1, 3]])
    one = cache.apply_slice_to_batch_dim(7)  # an int removes the batch axis, as in TL
    assert not one.has_batch_dim and one["post", 0].shape == (100,)
    assert torch.equal(one.tokens, tokens[7])
    with pytest.raises(ValueError, match="batch_slice selects 40, outside an axis of 40"):
        cache.apply_slice_to_batch_dim([0, 40])
    with pytest.raises(ValueError, match="no batch axis"):
        one.apply_slice_to_batch_dim(0)


def test_remove_batch_dim_says_what_is_wrong(shipped, run):
    _, _, cache = run
    with pytest.raises(ValueError, match="needs a cache of one input, this one holds 2"):
        cache.apply_slice_to_batch_dim((0, 2)).remove_batch_dim()
    single = cache.apply_slice_to_batch_dim([4]).remove_batch_dim()
    assert single["post", 0].shape == (100,) and single.tokens.shape == (2,)


@pytest.mark.parametrize("chosen, neurons", [
    (Slice([2, 7, 99]), [2, 7, 99]),
    (Slice((3,)), [0, 1, 2]),
    (Slice(5), [5]),
    ([4, -1], [4, 99]),
    (torch.tensor([10, 11]), [10, 11]),
    (slice(95, None, 2), [95, 97, 99]),
])
def test_neuron_slice_takes_every_form_tl_takes(run, chosen, neurons):
    _, _, cache = run
    results = cache.get_neuron_results(0, neuron_slice=chosen)
    torch.testing.assert_close(results, cache.get_neuron_results(0)[:, neurons])
    stack, labels = cache.stack_neuron_results(neuron_slice=chosen, return_labels=True)
    assert labels == [f"L0N{n}" for n in neurons] and stack.shape[0] == len(neurons)


def test_bad_neuron_slices_are_refused_clearly(run):
    _, _, cache = run
    with pytest.raises(ValueError, match="neuron_slice selects 100, outside an axis of 100"):
        cache.get_neuron_results(0, neuron_slice=Slice([1, 100]))
    with pytest.raises(ValueError, match="neuron_slice must hold integers"):
        cache.get_neuron_results(0, neuron_slice=[0.5])
    with pytest.raises(ValueError, match="neuron_slice must be None, an int"):
        cache.get_neuron_results(0, neuron_slice="3")
    with pytest.raises(ValueError, match="project_output_onto must be a tensor \\[113\\]"):
        cache.get_neuron_results(0, project_output_onto=torch.ones(7))


def test_logit_attrs_takes_a_batch_slice(shipped, run):
    tokens, logits, cache = run
    stack = cache.stack_neuron_results()  # [100, 40, 113]
    labels = labels_of(tokens, shipped.cfg)
    full = cache.logit_attrs(stack, labels)
    part = cache.logit_attrs(stack, labels[10:20], batch_slice=(10, 20))
    torch.testing.assert_close(part, full[:, 10:20])
    one = cache.logit_attrs(stack, labels[3], batch_slice=3)
    torch.testing.assert_close(one, full[:, 3])
    assert float((one.sum() + shipped.b_out[labels[3]]).detach()) == pytest.approx(
        float(logits[3, labels[3]].detach()), abs=1e-3)
    # a stack without a batch axis, as TL's has_batch_dim=False
    torch.testing.assert_close(cache.logit_attrs(stack[:, 3], int(labels[3]),
                                                 has_batch_dim=False), full[:, 3])
    with pytest.raises(ValueError, match="one per batch element \\(10\\), got 40"):
        cache.logit_attrs(stack, labels, batch_slice=(10, 20))
    with pytest.raises(ValueError, match="takes no pos_slice"):
        cache.logit_attrs(stack, labels, pos_slice=0)


def test_names_filter_must_name_hook_points(shipped, run):
    tokens, _, _ = run
    _, cache = shipped.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_post")
    assert list(cache.keys()) == ["blocks.0.mlp.hook_post"]
    _, cache = shipped.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pre"))
    assert list(cache.keys()) == ["blocks.0.mlp.hook_pre"]
    with pytest.raises(ValueError, match="unknown hook name 'blocks.0.mlp.hook_psot'"):
        shipped.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_psot")
    with pytest.raises(ValueError, match="'hook_post' is now 'blocks.0.mlp.hook_post'"):
        shipped.run_with_cache(tokens, names_filter=["hook_logits", "hook_post"])
    with pytest.raises(ValueError, match="names_filter picks none of this model's hook points"):
        shipped.run_with_cache(tokens, names_filter=lambda n: "attn" in n)
    with pytest.raises(TypeError, match="names_filter must be a hook name"):
        shipped.run_with_cache(tokens, names_filter=3)
    assert not any(h._forward_hooks for h in shipped.hook_dict.values())  # nothing left behind


def test_models_are_in_eval_mode_so_tl_patching_takes_them(shipped):
    from transformer_lens.patching import generic_activation_patch, make_df_from_ranges

    fresh = HookedMLP(MLPConfig(p=7, d_hidden=4))
    assert not shipped.training and not fresh.training
    assert not any(m.training for m in shipped.modules())
    tokens = all_pairs(7)
    _, cache = fresh.run_with_cache(tokens)
    out = generic_activation_patch(
        fresh, tokens, cache, lambda logits: logits.sum(), lambda act, index, clean: act,
        "post", index_df=make_df_from_ranges([1], ["layer"]))
    assert out.shape == (1,)


def test_a_cache_name_from_a_transformer_says_so(run):
    _, _, cache = run
    with pytest.raises(KeyError, match="has no residual stream, attention"):
        cache["blocks.0.hook_resid_pre"]
    with pytest.raises(KeyError, match="has no residual stream, attention"):
        cache["blocks.0.hook_mlp_out"]
