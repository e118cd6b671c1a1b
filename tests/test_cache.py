"""Issue 21, caches that last: `cache.save(path)` and `MLPActivationCache.load(path, model)`."""

import pytest
import torch

from hooked_mlp import HookedMLP, MLPConfig
from hooked_mlp.cache import MLPActivationCache
from hooked_mlp.data import all_pairs
from hooked_mlp.files.format import CheckpointError


@pytest.fixture(scope="module")
def tokens():
    return all_pairs(113)[::97]


def _same(a, b):
    assert list(a.keys()) == list(b.keys())
    for name in a.cache_dict:
        assert torch.equal(a[name], b[name]), name
    assert torch.equal(a.tokens, b.tokens) and a.fingerprint == b.fingerprint
    assert a.has_batch_dim == b.has_batch_dim and a.hooks == b.hooks


def test_a_cache_round_trips_with_its_gradients_and_tokens(shipped, tokens, tmp_path):
    _, cache = shipped.run_with_cache(tokens, return_type="loss", incl_bwd=True)
    shipped.zero_grad(set_to_none=True)
    assert "blocks.0.mlp.hook_post_grad" in cache.cache_dict
    cache.save(tmp_path / "clean.safetensors")
    back = MLPActivationCache.load(tmp_path / "clean.safetensors", shipped)
    assert type(back) is MLPActivationCache and back.model is shipped
    _same(cache, back)
    assert torch.equal(back["post_grad", 0], cache["blocks.0.mlp.hook_post_grad"])
    # the MLP methods work on the loaded cache
    torch.testing.assert_close(back.stack_neuron_results().sum(0) + shipped.b_out,
                               back["hook_logits"], atol=1e-4, rtol=0)
    # a slice, and a cache without a batch axis, round-trip too
    one = cache.apply_slice_to_batch_dim(3)
    one.save(tmp_path / "one.safetensors")
    _same(one, MLPActivationCache.load(tmp_path / "one.safetensors", shipped))


def test_a_cache_of_another_model_is_refused(shipped, tokens, tmp_path):
    _, cache = shipped.run_with_cache(tokens)
    cache.save(path := tmp_path / "c.safetensors")
    other = HookedMLP.from_params(shipped.cfg, shipped.state_tensors())
    MLPActivationCache.load(path, other)  # the same weights: the same model
    with torch.no_grad():
        other.W_out[0, 0] += 1e-3
    with pytest.raises(CheckpointError, match="holds the activations of another model"):
        MLPActivationCache.load(path, other)
    with pytest.raises(CheckpointError, match="another model"):
        MLPActivationCache.load(path, HookedMLP(MLPConfig(p=113, d_hidden=100)))
    with pytest.raises(TypeError, match="model must be a HookedMLP"):
        MLPActivationCache.load(path, object())


def test_a_damaged_cache_file_is_refused(shipped, tokens, tmp_path):
    _, cache = shipped.run_with_cache(tokens)
    cache.save(path := tmp_path / "c.safetensors")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    (bad := tmp_path / "bad.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        MLPActivationCache.load(bad, shipped)
    (cut := tmp_path / "cut.safetensors").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CheckpointError):
        MLPActivationCache.load(cut, shipped)
    with pytest.raises(CheckpointError):
        MLPActivationCache.load(tmp_path / "missing.safetensors", shipped)
    # a model file is not a cache
    from hooked_mlp import save

    save(shipped, model_file := tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError):
        MLPActivationCache.load(model_file, shipped)


def test_what_cannot_be_checked_is_not_saved(shipped, tokens, tmp_path):
    _, cache = shipped.run_with_cache(tokens)
    odd = MLPActivationCache({**cache.cache_dict, "mine": torch.zeros(len(tokens), 3)},
                             shipped, tokens=tokens)
    with pytest.raises(ValueError, match="'mine' is not a hook point of the model"):
        odd.save(tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
