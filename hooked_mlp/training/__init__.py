"""Training: the state of a run, the trainer and its backends, run folders and snapshots.

`train`, `train_many`, `train_stack` and `stack_key` (the public API; the first two are also
`hooked_mlp.train`, `hooked_mlp.train_many`) are imported on first use, so that importing a module
of this package stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hooked_mlp.training.api import stack_key, train, train_many, train_stack

__all__ = ["stack_key", "train", "train_many", "train_stack"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from hooked_mlp.training import api

        return getattr(api, name)
    raise AttributeError(f"module 'hooked_mlp.training' has no attribute {name!r}")
