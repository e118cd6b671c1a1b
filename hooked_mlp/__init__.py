"""hooked-mlp: mechanistic interpretability of small MLPs trained on modular arithmetic.

    from hooked_mlp import HookedMLP, MLPConfig, load_pretrained
    model = load_pretrained()
    logits, cache = model.run_with_cache(tokens)

Importing the package is light: torch and transformer-lens are imported on first use of a name
that needs them (transformer-lens alone takes seconds to import).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from hooked_mlp import _moved  # old module names, kept importable
from hooked_mlp.config import MLPConfig, TrainConfig

if TYPE_CHECKING:
    from hooked_mlp.files.checkpoints import load, load_pretrained, pretrained_seeds, save
    from hooked_mlp.files.format import CheckpointError
    from hooked_mlp.files.importers import import_mlp, load_linear_state_dict
    from hooked_mlp.files.series import load_snapshots
    from hooked_mlp.files.sweeps import load_sweep_model
    from hooked_mlp.jobs import resume_sweep, sweep
    from hooked_mlp.model import HookedMLP
    from hooked_mlp.train_info import TrainInfo
    from hooked_mlp.training import train, train_many
    from hooked_mlp.training.runs import RunLockedError, resume_run, train_run
    from hooked_mlp.training.trainer import TrainingDivergedError

_LAZY = {
    "HookedMLP": "hooked_mlp.model",
    "TrainInfo": "hooked_mlp.train_info",
    "train": "hooked_mlp.training",
    "train_many": "hooked_mlp.training",
    "train_run": "hooked_mlp.training.runs",
    "resume_run": "hooked_mlp.training.runs",
    "TrainingDivergedError": "hooked_mlp.training.trainer",
    "RunLockedError": "hooked_mlp.training.runs",
    "save": "hooked_mlp.files.checkpoints",
    "load": "hooked_mlp.files.checkpoints",
    "load_pretrained": "hooked_mlp.files.checkpoints",
    "pretrained_seeds": "hooked_mlp.files.checkpoints",
    "CheckpointError": "hooked_mlp.files.format",
    "import_mlp": "hooked_mlp.files.importers",
    "load_linear_state_dict": "hooked_mlp.files.importers",
    "load_snapshots": "hooked_mlp.files.series",
    "load_sweep_model": "hooked_mlp.files.sweeps",
    "sweep": "hooked_mlp.jobs",
    "resume_sweep": "hooked_mlp.jobs",
}

__all__ = [  # noqa: RUF022 - grouped by module
    "MLPConfig", "TrainConfig", "HookedMLP", "TrainInfo",
    "train", "train_many", "train_run", "resume_run", "TrainingDivergedError", "RunLockedError",
    "save", "load", "load_pretrained", "pretrained_seeds", "CheckpointError",
    "import_mlp", "load_linear_state_dict", "load_snapshots",
    "sweep", "resume_sweep", "load_sweep_model",
]
__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hooked_mlp' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
