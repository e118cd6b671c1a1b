import pytest
import torch
import torch.nn.functional as F
from transformer_lens import ActivationCache

from hooked_mlp import HookedMLP, MLPConfig
from hooked_mlp.model import HOOK_NAMES


def test_contract_shapes(shipped, all_pairs_tokens):
    m = shipped
    assert m.W_in.shape == (226, 100) and m.b_in.shape == (100,)
    assert m.W_out.shape == (100, 113) and m.b_out.shape == (113,)
    assert set(m.hook_dict) == set(HOOK_NAMES)
    logits, cache = m.run_with_cache(all_pairs_tokens)
    assert isinstance(cache, ActivationCache)
    assert logits.shape == (12769, 113)
    for name in ("hook_embed_a", "hook_embed_b", "hook_pre", "hook_post"):
        assert cache[name].shape == (12769, 100)
    assert torch.equal(cache["hook_logits"], logits)


def test_hook_pre_is_row_lookup_for_all_pairs(shipped, all_pairs_tokens):
    m, t = shipped, all_pairs_tokens
    _, cache = m.run_with_cache(t)
    a, b = t[:, 0], t[:, 1]
    assert torch.equal(cache["hook_embed_a"], m.W_in[a].detach())
    assert torch.equal(cache["hook_embed_b"], m.W_in[113 + b].detach())
    expected = m.W_in[a] + m.W_in[113 + b] + m.b_in
    assert torch.equal(cache["hook_pre"], expected.detach())
    assert torch.equal(cache["hook_post"], torch.relu(expected).detach())


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
    sd = shipped.to_linear_state_dict()
    assert sd["0.weight"].shape == (100, 226) and sd["2.weight"].shape == (113, 100)
    back = HookedMLP.from_linear_state_dict(sd)
    assert back.cfg == shipped.cfg
    for name in ("W_in", "b_in", "W_out", "b_out"):
        assert torch.equal(getattr(back, name), getattr(shipped, name))
    # and a real nn.Sequential's own state dict
    seq = torch.nn.Sequential(torch.nn.Linear(14, 9), torch.nn.ReLU(), torch.nn.Linear(9, 7))
    m = HookedMLP.from_linear_state_dict(seq.state_dict())
    assert (m.cfg.p, m.cfg.d_hidden) == (7, 9)
    tok = torch.tensor([[1, 2], [6, 0]])
    x = torch.cat([F.one_hot(tok[:, 0], 7), F.one_hot(tok[:, 1], 7)], 1).float()
    torch.testing.assert_close(m(tok), seq(x))


@pytest.mark.parametrize(
    ("state", "exc", "message"),
    [
        ({"0.weight": torch.zeros(3, 4)}, ValueError, "missing \\['0.bias', '2.weight'"),
        ({"0.weight": torch.zeros(3, 4), "0.bias": torch.zeros(3), "2.weight": torch.zeros(2, 3),
          "2.bias": torch.zeros(2), "4.weight": torch.zeros(2, 2)}, ValueError,
         "unexpected \\['4.weight'\\]"),
        ({"0.weight": torch.zeros(3, 5), "0.bias": torch.zeros(3), "2.weight": torch.zeros(2, 3),
          "2.bias": torch.zeros(2)}, ValueError, "must be \\[h, 2p\\]"),
        ({"0.weight": torch.zeros(3, 4), "0.bias": torch.zeros(3), "2.weight": torch.zeros(3, 3),
          "2.bias": torch.zeros(3)}, ValueError, "params\\['W_out'\\] must have shape \\[3, 2\\]"),
        ({"0.weight": [[1.0]], "0.bias": 1, "2.weight": 2, "2.bias": 3}, TypeError,
         "must be a tensor"),
        ([1, 2], TypeError, "state_dict must be a mapping"),
    ],
)
def test_from_linear_state_dict_rejects_bad_input(state, exc, message):
    with pytest.raises(exc, match=message):
        HookedMLP.from_linear_state_dict(state)


def test_zero_ablating_post_leaves_b_out(shipped, all_pairs_tokens):
    def zero(post, hook):
        return torch.zeros_like(post)

    logits = shipped.run_with_hooks(all_pairs_tokens[:50], fwd_hooks=[("hook_post", zero)])
    assert torch.equal(logits, shipped.b_out.detach().expand(50, -1))


def test_patching_one_neuron_changes_only_through_it(shipped, all_pairs_tokens):
    tok = all_pairs_tokens[:64]
    clean, cache = shipped.run_with_cache(tok)

    def patch(post, hook):
        post = post.clone()
        post[:, 7] = 0.0
        return post

    patched = shipped.run_with_hooks(tok, fwd_hooks=[("hook_post", patch)])
    expected = clean - cache["hook_post"][:, 7:8] * shipped.W_out[7].detach()
    torch.testing.assert_close(patched, expected, rtol=1e-5, atol=1e-5)


def test_hooks_removed_after_exception(shipped, all_pairs_tokens):
    def boom(x, hook):
        raise RuntimeError("inside hook")

    with pytest.raises(RuntimeError, match="inside hook"):
        shipped.run_with_hooks(all_pairs_tokens[:4], fwd_hooks=[("hook_pre", boom)])
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
    _, cache = shipped.run_with_cache(all_pairs_tokens[:8], names_filter=["hook_post"])
    assert list(cache.keys()) == ["hook_post"]
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
