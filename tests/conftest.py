"""Shared fixtures: the shipped model, small configurations, thread settings."""

from __future__ import annotations

import pytest
import torch

from hooked_mlp import MLPConfig, TrainConfig

torch.set_num_threads(1)  # the suite is run on 2 shared cores: keep it predictable


@pytest.fixture(scope="session")
def shipped():
    """The shipped seed-0 model (the default of `load_pretrained`)."""
    from hooked_mlp import load_pretrained

    return load_pretrained()


@pytest.fixture(scope="session")
def all_pairs_tokens() -> torch.Tensor:
    from hooked_mlp.data import all_pairs

    return all_pairs(113)


@pytest.fixture
def tiny_cfg() -> MLPConfig:
    return MLPConfig(p=23, d_hidden=32)


@pytest.fixture
def tiny_tcfg() -> TrainConfig:
    return TrainConfig(epochs=6, batch_size=64, seed=3)
