"""The same trainer and model on CUDA (runs only where a GPU is present)."""

import dataclasses

import pytest
import torch

from hooked_mlp import MLPConfig, TrainConfig, train_many
from hooked_mlp.training import train_stack
from hooked_mlp.training.trainer import BatchedTrainer

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@cuda
def test_cuda_matches_cpu_over_a_few_epochs():
    cfg, tcfg = MLPConfig(p=23, d_hidden=32), TrainConfig(epochs=4, batch_size=64)
    on_cpu = BatchedTrainer(cfg, tcfg, [0, 1], backend="torch")
    on_gpu = BatchedTrainer(cfg, tcfg, [0, 1], device="cuda")
    assert torch.equal(on_cpu.state.masks.cpu(), on_gpu.state.masks.cpu())  # same splits
    for e in range(4):  # same batches: group 0's first step
        assert torch.equal(on_cpu.impl.prepare(e)[0][0][0].cpu(),
                           on_gpu.impl.prepare(e)[0][0][0].cpu())
    for _ in range(4):
        on_cpu.run_epoch()
        on_gpu.run_epoch()
    for s in range(2):
        for name, value in on_cpu.params_of(s).items():
            torch.testing.assert_close(on_gpu.params_of(s)[name], value, rtol=1e-4, atol=1e-5)


@cuda
def test_a_stack_on_cuda_matches_the_cpu():
    cfg = MLPConfig(p=17, d_hidden=16)
    base = TrainConfig(epochs=3, batch_size=4096, lr=1e-2)
    runs = [(cfg, dataclasses.replace(base, weight_decay=wd, train_frac=f, seed=s))
            for wd in (0.1, 1.0) for f in (0.3, 0.6) for s in (0, 1)]
    on_gpu = train_stack(runs, device="cuda")
    on_cpu = train_stack(runs, backend="torch")
    for (pg, ig), (pc, _) in zip(on_gpu, on_cpu, strict=True):
        assert ig.provenance["device"].startswith("cuda")
        for name in pc:
            torch.testing.assert_close(pg[name].cpu(), pc[name], rtol=1e-4, atol=1e-5)
        assert len(ig.history["val_acc"]) == 3


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
