import pytest
import torch
import torch.nn.functional as F
from transformer_lens import ActivationCache

from hooked_mlp import HookedMLP, MLPConfig
from hooked_mlp.functional import hook_names


def test_contract_shapes(shipped, all_pairs_tokens):
    m = shipped
    assert m.W_in.shape == (226, 100) and m.b_in.shape == (100,)
    assert m.W_out.shape == (100, 113) and m.b_out.shape == (113,)
    assert list(m.hook_dict) == hook_names(m.cfg) == [
        "hook_embed_a", "hook_embed_b", "blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post",
        "hook_logits"]
    logits, cache = m.run_with_cache(all_pairs_tokens)
    assert isinstance(cache, ActivationCache)
    assert logits.shape == (12769, 113)
    for name in ("hook_embed_a", "hook_embed_b", "blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post"):
        assert cache[name].shape == (12769, 100)
    assert torch.equal(cache["hook_logits"], logits)


def test_hook_pre_is_row_lookup_for_all_pairs(shipped, all_pairs_tokens):
    m, t = shipped, all_pairs_tokens
    _, cache = m.run_with_cache(t)
    a, b = t[:, 0], t[:, 1]
    assert torch.equal(cache["hook_embed_a"], m.W_in[a].detach())
    assert torch.equal(cache["hook_embed_b"], m.W_in[113 + b].detach())
    expected = m.W_in[a] + m.W_in[113 + b] + m.b_in
    assert torch.equal(cache["blocks.0.mlp.hook_pre"], expected.detach())
    assert torch.equal(cache["blocks.0.mlp.hook_post"], torch.relu(expected).detach())


def test_forward_equals_one_hot_sequential(shipped, all_pairs_tokens):
    seq = shipped.to_sequential()
    x = torch.cat([F.one_hot(all_pairs_tokens[:, 0], 113), F.one_hot(all_pairs_tokens[:, 1], 113)],
                  dim=1).float()
    with torch.no_grad():
        ref = seq(x)
        ours = shipped(all_pairs_tokens)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert (ours.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9999


def test_linear_state_dict_round_trip(shipped):
    from hooked_mlp import import_mlp

    sd = shipped.to_linear_state_dict()
    assert sd["0.weight"].shape == (100, 226) and sd["2.weight"].shape == (113, 100)
    back = import_mlp(sd, activation="relu")
    assert back.cfg == shipped.cfg
    for name in ("W_in", "b_in", "W_out", "b_out"):
        assert torch.equal(getattr(back, name), getattr(shipped, name))


def test_zero_ablating_post_leaves_b_out(shipped, all_pairs_tokens):
    def zero(post, hook):
        return torch.zeros_like(post)

    logits = shipped.run_with_hooks(all_pairs_tokens[:50],
                                    fwd_hooks=[("blocks.0.mlp.hook_post", zero)])
    assert torch.equal(logits, shipped.b_out.detach().expand(50, -1))


def test_patching_one_neuron_changes_only_through_it(shipped, all_pairs_tokens):
    tok = all_pairs_tokens[:64]
    clean, cache = shipped.run_with_cache(tok)

    def patch(post, hook):
        post = post.clone()
        post[:, 7] = 0.0
        return post

    patched = shipped.run_with_hooks(tok, fwd_hooks=[("blocks.0.mlp.hook_post", patch)])
    expected = clean - cache["blocks.0.mlp.hook_post"][:, 7:8] * shipped.W_out[7].detach()
    torch.testing.assert_close(patched, expected, rtol=1e-5, atol=1e-5)


def test_hooks_removed_after_exception(shipped, all_pairs_tokens):
    def boom(x, hook):
        raise RuntimeError("inside hook")

    with pytest.raises(RuntimeError, match="inside hook"):
        shipped.run_with_hooks(all_pairs_tokens[:4], fwd_hooks=[("blocks.0.mlp.hook_pre", boom)])
    assert all(len(hp._forward_hooks) == 0 for hp in shipped.hook_dict.values())
    with pytest.raises(RuntimeError, match="inside hook"), shipped.hooks(
        fwd_hooks=[("hook_logits", boom)]
    ):
        shipped(all_pairs_tokens[:4])
    assert all(len(hp._forward_hooks) == 0 for hp in shipped.hook_dict.values())
    # the model computes exactly what it did before the failed runs
    expected = torch.addmm(shipped.b_out, torch.relu(
        shipped.W_in[all_pairs_tokens[:4, 0]] + shipped.W_in[113 + all_pairs_tokens[:4, 1]]
        + shipped.b_in), shipped.W_out)
    assert torch.equal(shipped(all_pairs_tokens[:4]), expected)


def test_names_filter_caches_only_what_was_asked(shipped, all_pairs_tokens):
    _, cache = shipped.run_with_cache(all_pairs_tokens[:8], names_filter=["blocks.0.mlp.hook_post"])
    assert list(cache.keys()) == ["blocks.0.mlp.hook_post"]
    _, cache = shipped.run_with_cache(all_pairs_tokens[:8], names_filter=lambda n: "embed" in n)
    assert sorted(cache.keys()) == ["hook_embed_a", "hook_embed_b"]


def test_int32_tokens_and_empty_batch():
    m = HookedMLP(MLPConfig(p=5, d_hidden=3))
    out = m(torch.tensor([[1, 4]], dtype=torch.int32))
    assert out.shape == (1, 5)
    assert m(torch.zeros(0, 2, dtype=torch.int64)).shape == (0, 5)


def test_init_matches_nn_linear_bounds():
    m = HookedMLP(MLPConfig(), seed=0)
    assert float(m.W_in.detach().abs().max()) <= 1 / 226**0.5
    assert float(m.W_out.detach().abs().max()) <= 1 / 100**0.5
    assert torch.equal(HookedMLP(MLPConfig(), seed=0).W_in, m.W_in)
    assert not torch.equal(HookedMLP(MLPConfig(), seed=1).W_in, m.W_in)
