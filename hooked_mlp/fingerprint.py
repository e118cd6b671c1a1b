"""A model's fingerprint: one SHA-256 of its configuration and of its parameters' values.

Trust checks compare fingerprints: a saved activation cache belongs to the model it was computed
on, the last snapshot of a series is the model it claims to be, fits and cached experiments are
reused only on the model they were made from, and a probe is caught when it changed its model.

Two models have the same fingerprint exactly when their `MLPConfig`s are equal (every field but
`device`) and their parameters are bit-identical as float32 (the dtype every `HookedMLP` holds);
where the model lives, its hooks, its training mode and its training record are not part of it.

    fingerprint(model.cfg, model.param_dict())   # 'sha256:3f1c...'; model.fingerprint() too
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import torch
from torch import Tensor

from hooked_mlp.config import MLPConfig
from hooked_mlp.functional import param_shapes

# What the hash starts from: a new definition of the fingerprint changes this tag, so that a
# fingerprint of one definition is never compared equal to one of another.
_TAG = b"hooked-mlp model fingerprint v1\0"


def fingerprint(cfg: MLPConfig, params: Mapping[str, Tensor]) -> str:
    """`"sha256:<64 hex digits>"` of `cfg` and `params` (named and shaped as
    `functional.param_shapes(cfg)`; any floating dtype, any device: hashed as little-endian
    float32, in the order of `param_shapes`, each with its name and shape)."""
    if not isinstance(cfg, MLPConfig):
        raise TypeError(f"cfg must be an MLPConfig, got {type(cfg).__name__}")
    shapes = param_shapes(cfg)
    if not isinstance(params, Mapping) or set(params) != set(shapes):
        got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(f"params must hold exactly the parameters {list(shapes)} of this "
                         f"config, got {got}")
    h = hashlib.sha256(_TAG)
    h.update(json.dumps(cfg.to_dict(), sort_keys=True, separators=(",", ":")).encode())
    for name, shape in shapes.items():
        value = params[name]
        if not isinstance(value, Tensor) or not value.dtype.is_floating_point or tuple(
                value.shape) != tuple(shape):
            raise ValueError(f"params[{name!r}] must be a floating-point tensor of shape "
                             f"{list(shape)}, got {getattr(value, 'dtype', type(value).__name__)} "
                             f"{list(getattr(value, 'shape', []))}")
        data = value.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}{list(shape)}\0".encode())
        h.update(data.numpy().astype("<f4", copy=False).tobytes())
    return "sha256:" + h.hexdigest()
