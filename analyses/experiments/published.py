"""The checkpoint in He et al.'s published layout that ships with the package, imported and checked.

He et al. 2026 (github.com/Y-Agent/modular-addition-feature-learning) save a run's final state as
`saved_models/<run>/final.pth`, a torch file holding `{'model': state_dict, 'train_loss',
'test_loss', 'train_losses', 'test_losses', 'grad_norms', 'param_norms', 'epoch', 'optimizer',
'scheduler'}` (one loss per epoch, no accuracies). Their one-hot `EmbedMLP`'s state dict is
`mlp.W_in [d_mlp, p]`, `mlp.W_out [p, d_mlp]` and the Fourier basis buffer `mlp.basis [p, p]`;
a learned embedding adds `embed.W_E [d_model, p]`. Their forward (facts of that codebase):

    x = e_a + e_b                  (one-hot, [p]; learned: W_E[:, a] + W_E[:, b])
    logits = W_out @ act(W_in @ x)

`PUBLISHED_CHECKPOINT` is such a file (p = 23, 128 ReLU neurons, trained by
`scripts/make_published_checkpoint.py`; 166,729 bytes). `imported_published()` reads it through
`hooked_mlp.import_mlp` (the importer a researcher uses on their files), checks the imported
model's logits on every pair against the published forward computed here from the raw state dict,
and returns the model with the file's loss curves (`history`: `train_loss`, `val_loss`) for the
stage detector. The file holds no record of its activation (their runs name it in the folder's
name only), so the activation is an argument.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hooked_mlp.files.layout import PRETRAINED_DIR

PUBLISHED_CHECKPOINT = PRETRAINED_DIR / "published-p23-relu.pth"
PUBLISHED_ACTIVATION = "relu"  # the run's act_type 'ReLU'
LABEL = "published layout (imported)"
TOLERANCE = 1e-4  # largest |logit difference| accepted, relative to the largest |logit|

# their act_type names -> the function their MLP applies
PUBLISHED_ACTS = {"ReLU": torch.relu, "GeLU": F.gelu, "Quad": torch.square,
                  "Id": lambda x: x}
# this toolkit's activation names for them
OUR_ACTIVATION = {"ReLU": "relu", "GeLU": "gelu", "Quad": "quad", "Id": "identity"}

__all__ = ["LABEL", "PUBLISHED_ACTS", "PUBLISHED_CHECKPOINT", "ImportedPublished",
           "imported_published", "published_logits"]


def published_logits(state: Mapping[str, Tensor], pairs: Tensor, act_type: str = "ReLU"
                     ) -> Tensor:
    """The published model's forward from its state dict: `pairs [batch, 2]` (int) -> logits
    `[batch, p]`, in float64 (a reference, not a fast path)."""
    if act_type not in PUBLISHED_ACTS:
        raise ValueError(f"act_type must be one of {list(PUBLISHED_ACTS)}, got {act_type!r}")
    w_in = state["mlp.W_in"].double()  # [d_mlp, d_model]
    w_out = state["mlp.W_out"].double()  # [p, d_mlp]
    p = w_out.shape[0]
    a, b = pairs[:, 0].long(), pairs[:, 1].long()
    if "embed.W_E" in state:
        w_e = state["embed.W_E"].double()  # [d_model, p]
        x = (w_e[:, a] + w_e[:, b]).T  # [batch, d_model]
    else:
        x = F.one_hot(a, p).double() + F.one_hot(b, p).double()  # [batch, p]
    return PUBLISHED_ACTS[act_type](x @ w_in.T) @ w_out.T


@dataclass
class ImportedPublished:
    """A published-layout checkpoint imported as a `HookedMLP` (`model`), with the file's
    curves (`history`: `train_loss`, `val_loss`, index i after epoch i + 1 as in a hooked-mlp
    history, so their value at initialisation is left out; empty when the file has none),
    its `epoch`, the largest |logit| difference between the imported model and the published
    forward on every pair (`max_abs_diff`, and the largest |logit|, `max_abs_logit`)."""

    path: Path
    model: Any
    history: dict[str, list[float]]
    epoch: int | None
    max_abs_diff: float
    max_abs_logit: float
    size_bytes: int

    def summary(self) -> dict[str, Any]:
        """The file, what it imported as, and how close its logits are to the published
        forward."""
        return {"file": self.path.name, "size_bytes": self.size_bytes, "epoch": self.epoch,
                "p": self.model.cfg.p, "d_hidden": self.model.cfg.d_hidden,
                "max_abs_diff": self.max_abs_diff, "max_abs_logit": self.max_abs_logit}

    def describe(self) -> str:
        return (f"{self.path.name} ({self.size_bytes / 1000:.0f} kB, He et al.'s final.pth "
                f"layout, epoch {self.epoch}): imported as p = {self.model.cfg.p}, "
                f"{self.model.cfg.d_hidden} neurons; logits equal the published forward on "
                f"every pair to {self.max_abs_diff:.1e} (largest |logit| "
                f"{self.max_abs_logit:.1f})")

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.path.name, "size_bytes": self.size_bytes, "epoch": self.epoch,
                "max_abs_diff": self.max_abs_diff, "max_abs_logit": self.max_abs_logit,
                "history_epochs": len(self.history.get("train_loss", []))}


def imported_published(path: str | os.PathLike[str] = PUBLISHED_CHECKPOINT,
                       activation: str = "ReLU") -> ImportedPublished:
    """Import `path` (a final.pth or `<epoch>.pth` in He et al.'s layout) with
    `hooked_mlp.import_mlp`, check its logits against `published_logits` on every pair (a
    `ValueError` if they differ by more than `TOLERANCE` of the largest logit) and read its
    loss curves. `activation`: their act_type (ReLU, GeLU, Quad, Id)."""
    from hooked_mlp import import_mlp
    from hooked_mlp.data import all_pairs
    from hooked_mlp.files.foreign import Refusal, read_file

    if activation not in OUR_ACTIVATION:
        raise ValueError(f"activation must be one of {list(OUR_ACTIVATION)} (their act_type "
                         f"names), got {activation!r}")
    path = Path(path)
    model = import_mlp(path, activation=OUR_ACTIVATION[activation])
    try:
        content, _ = read_file(path)
    except Refusal as e:  # import_mlp read it a moment ago: the file changed in between
        raise ValueError(f"{path}: {e.problem}") from None
    state = content["model"] if isinstance(content, Mapping) and "model" in content else content
    pairs = all_pairs(model.cfg.p)
    with torch.no_grad():
        ours = model(pairs).double()
    theirs = published_logits(state, pairs, activation)
    diff = float((ours - theirs).abs().max())
    scale = float(theirs.abs().max())
    if not diff <= TOLERANCE * max(scale, 1.0):
        raise ValueError(f"{path}: the imported model's logits differ from the published "
                         f"forward by {diff:.3g} (largest |logit| {scale:.3g})")
    history = {}
    if isinstance(content, Mapping):
        for ours_key, their_key in (("train_loss", "train_losses"), ("val_loss", "test_losses")):
            curve = content.get(their_key)
            if isinstance(curve, list | tuple) and len(curve) > 1:
                # theirs[i] is measured before update i + 1 (theirs[0] at initialisation);
                # a hooked-mlp history's [i] after update i + 1: drop their first value
                history[ours_key] = [float(v) for v in curve[1:]]
    epoch = content.get("epoch") if isinstance(content, Mapping) else None
    return ImportedPublished(path, model, history, epoch if isinstance(epoch, int) else None,
                             diff, scale, path.stat().st_size)
