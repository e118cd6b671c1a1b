"""The same trainer and model on CUDA (runs only where a GPU is present)."""

import pytest
import torch

from hooked_mlp import MLPConfig, TrainConfig, train_many
from hooked_mlp.training.trainer import BatchedTrainer

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@cuda
def test_cuda_matches_cpu_over_a_few_epochs():
    cfg, tcfg = MLPConfig(p=23, d_hidden=32), TrainConfig(epochs=4, batch_size=64)
    on_cpu = BatchedTrainer(cfg, tcfg, [0, 1])
    on_gpu = BatchedTrainer(cfg, tcfg, [0, 1], device="cuda")
    assert torch.equal(on_cpu.masks.cpu(), on_gpu.masks.cpu())  # same splits
    for e in range(4):  # same batches
        assert torch.equal(on_cpu._schedule(e)[0][0].cpu(), on_gpu._schedule(e)[0][0].cpu())
    for _ in range(4):
        on_cpu.run_epoch()
        on_gpu.run_epoch()
    for s in range(2):
        for name, value in on_cpu.params_of(s).items():
            torch.testing.assert_close(on_gpu.params_of(s)[name], value, rtol=1e-4, atol=1e-5)


@cuda
def test_cuda_models_run_and_cache():
    (model, history), = train_many(MLPConfig(p=11, d_hidden=8), TrainConfig(epochs=2),
                                   seeds=[0], device="cuda", progress=False)
    assert model.device.type == "cuda" and len(history["val_acc"]) == 2
    tokens = torch.tensor([[1, 2]], device="cuda")
    logits, cache = model.run_with_cache(tokens)
    assert logits.shape == (1, 11) and cache["blocks.0.mlp.hook_post"].device.type == "cuda"
    with pytest.raises(ValueError, match="tokens are on cpu but the model is on cuda"):
        model(tokens.cpu())
