"""Training: the state of a run, the trainer and its backends, run folders and snapshots.

`train` and `train_many` (the public API, also `hooked_mlp.train`) are imported on first use, so
that importing a module of this package stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hooked_mlp.training.api import train, train_many

__all__ = ["train", "train_many"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from hooked_mlp.training import api

        return getattr(api, name)
    raise AttributeError(f"module 'hooked_mlp.training' has no attribute {name!r}")
