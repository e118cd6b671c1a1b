"""Hooks never leak: after an exception anywhere, only permanent hooks remain."""

import pytest
import torch


def _live_hooks(model):
    return {name: len(hp._forward_hooks) for name, hp in model.hook_dict.items()
            if len(hp._forward_hooks)}


def boom(x, hook):
    raise RuntimeError("inside hook")


def test_exception_in_run_with_cache_hook_leaves_no_hooks(shipped, all_pairs_tokens):
    with pytest.raises(RuntimeError, match="inside hook"), shipped.hooks(
        fwd_hooks=[("blocks.0.mlp.hook_post", boom)]
    ):
        shipped.run_with_cache(all_pairs_tokens[:4])
    assert _live_hooks(shipped) == {}


def test_exception_in_forward_during_run_with_cache(shipped):
    with pytest.raises(ValueError, match="tokens must lie in"):
        shipped.run_with_cache(torch.tensor([[0, 500]]))
    assert _live_hooks(shipped) == {}


def test_permanent_hooks_survive_exceptions(shipped, all_pairs_tokens):
    calls = []

    def record(x, hook):
        calls.append(hook.name)

    shipped.hook_dict["blocks.0.mlp.hook_pre"].add_hook(record, is_permanent=True)
    try:
        with pytest.raises(RuntimeError, match="inside hook"):
            shipped.run_with_hooks(all_pairs_tokens[:2], fwd_hooks=[("hook_logits", boom)])
        assert _live_hooks(shipped) == {"blocks.0.mlp.hook_pre": 1}
        with pytest.raises(RuntimeError, match="inside hook"):
            shipped.run_with_cache(all_pairs_tokens[:2],
                                   names_filter=lambda n: boom(None, None))
        assert _live_hooks(shipped) == {"blocks.0.mlp.hook_pre": 1}
        shipped(all_pairs_tokens[:2])
        assert calls.count("blocks.0.mlp.hook_pre") >= 2  # it still runs
    finally:
        shipped.reset_hooks(including_permanent=True)
    assert _live_hooks(shipped) == {}


def test_names_filter_forms(shipped, all_pairs_tokens):
    t = all_pairs_tokens[:3]
    for names_filter, expected in (("blocks.0.mlp.hook_pre", ["blocks.0.mlp.hook_pre"]),
                                   (["blocks.0.mlp.hook_post", "hook_logits"],
                                    ["blocks.0.mlp.hook_post", "hook_logits"]),
                                   (lambda n: n.startswith("hook_embed"),
                                    ["hook_embed_a", "hook_embed_b"])):
        _, cache = shipped.run_with_cache(t, names_filter=names_filter)
        assert sorted(cache.keys()) == expected
    _, cache = shipped.run_with_cache(t)
    assert len(cache.keys()) == 5
    assert _live_hooks(shipped) == {}
