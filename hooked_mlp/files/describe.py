"""What a checkpoint, a run state or a run folder holds, for `hooked-mlp info`.

`describe(path)` reads a file's header (and, for a model, its tensors) and returns JSON-ready
data, the values as the file has them; `format_description` turns that into the lines `info`
prints, every value read from the file escaped for the terminal (`hooked_mlp.text.safe_text`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hooked_mlp.config import MLPConfig, TrainConfig, settings
from hooked_mlp.files import layout
from hooked_mlp.text import safe_text

PROG = "hooked-mlp"


def info_targets(paths: Sequence[Path]) -> list[Path]:
    from hooked_mlp.files.checkpoints import PRETRAINED_DIR, pretrained_seeds

    if not paths:
        return [layout.model_file(PRETRAINED_DIR, s) for s in pretrained_seeds()]
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = [f for _, f in layout.model_files(path)]
            if layout.state_file(path).exists():
                found.append(layout.state_file(path))
            if not found:
                raise ValueError(f"{path}: no checkpoints ({layout.MODEL_PREFIX}*"
                                 f"{layout.SUFFIX}) in this folder")
            out.extend(found)
        else:
            out.append(path)
    return out


def describe(path: Path) -> dict[str, Any]:
    """What `hooked-mlp info` shows of one file, as JSON-ready data (values from the file are
    as the file has them: `_format` escapes them for a terminal)."""
    from hooked_mlp.files.checkpoints import read_model
    from hooked_mlp.files.format import CheckpointError, config_from, read_header

    if path.name == layout.STATE_FILE:  # the header says all there is to say: no tensor is read
        doc = read_header(path).doc
        if doc.get("kind") != "train-state":
            raise CheckpointError(str(path), "is not a hooked-mlp train-state file")
        name = str(path)
        cfg = config_from(name, MLPConfig, doc.get("config"), "model config")
        tcfg = config_from(name, TrainConfig, doc.get("train_config"), "training config")
        return {"path": str(path), "kind": "train-state", "config": cfg.to_dict(),
                "train_config": tcfg.to_dict(), "seeds": doc.get("seeds"),
                "epoch": doc.get("epoch"), "command": doc.get("command")}
    ckpt = read_model(path)
    out: dict[str, Any] = {"path": str(path), "kind": "model", "config": ckpt.cfg.to_dict(),
                           "n_params": ckpt.cfg.n_params}
    if ckpt.info is not None:
        from hooked_mlp.data import split_indices

        train_idx, val_idx = split_indices(ckpt.cfg, ckpt.info.train_mask)
        out.update(train_config=ckpt.info.train_config.to_dict(), metrics=ckpt.info.metrics,
                   provenance=ckpt.info.provenance, n_train=len(train_idx), n_val=len(val_idx))
    if ckpt.embedding is not None:
        e = ckpt.embedding
        out["embedding"] = {"tables": sorted(e.tables), "combine": e.combine,
                            "d_embed": e.d_embed, "source_keys": e.source_keys}
    seed = ckpt.info.train_config.seed if ckpt.info is not None else None
    snapshots = _snapshots_beside(path, seed)
    if snapshots is not None:
        out["snapshots"] = snapshots
    return out


def _snapshots_beside(path: Path, seed: int | None) -> dict[str, Any] | None:
    """The snapshots a run keeps beside its `seed-<s>.safetensors` (the `snapshots-seed-<s>`
    file recording the model's seed), from the file's header alone: where, and how many; None
    when there are none."""
    from hooked_mlp.files.format import read_header
    from hooked_mlp.files.series import find_series

    if seed is None or layout.model_seed(path) is None:
        return None
    beside = find_series(path.parent, seed)
    if beside is None:
        return None
    shape = read_header(beside).table.get("epochs", {}).get("shape")
    count = shape[0] if isinstance(shape, list) and len(shape) == 1 else None
    return {"path": str(beside), "count": count}


def _number(value: Any, spec: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "n/a"
    try:
        return format(value, spec)
    except (ValueError, OverflowError):
        return "n/a"


def metrics_line(m: dict[str, Any]) -> str:
    line = (f"train acc {_number(m.get('train_acc'), '.4%')} loss "
            f"{_number(m.get('train_loss'), '.4g')}")
    if m.get("val_acc") is not None:
        line += (f" | val acc {_number(m.get('val_acc'), '.4%')} loss "
                 f"{_number(m.get('val_loss'), '.4g')}")
    else:
        line += " | no validation split"
    return f"{line} after {safe_text(m.get('epochs', 'n/a'))} epochs"


def format_description(d: dict[str, Any]) -> str:
    c = d["config"]
    lines = [safe_text(d["path"], 4096)]
    if d["kind"] == "train-state":
        t = d["train_config"]
        lines.append(f"  unfinished run: epoch {safe_text(d['epoch'])} of {t['epochs']}, seeds "
                     f"{safe_text(d['seeds'], 100)}; continue with: {PROG} train --resume "
                     f"{safe_text(str(Path(d['path']).parent), 4096)}")
        return "\n".join(lines)
    model = " ".join(f"{k}={v}" for k, v in settings(MLPConfig.from_dict(c)))
    lines.append(f"  model    {model} ({d['n_params']:,} parameters)")
    if "embedding" in d:
        e = d["embedding"]
        tables = "one table shared by a and b" if e["tables"] == ["shared"] else \
            "a table for a and one for b"
        lines.append(f"  embedding learned, {tables}, d_embed={safe_text(e['d_embed'])}, "
                     f"{'summed' if e['combine'] == 'sum' else 'side by side'} into the first "
                     "layer (folded into W_in; "
                     "model.learned_embedding)")
    if "train_config" not in d:
        lines.append("  (no training record: weights only)")
        return "\n".join(lines)
    t, m, pv = d["train_config"], d["metrics"], d["provenance"]
    split_seed = t["seed"] if t["split_seed"] is None else t["split_seed"]
    recipe = " ".join(f"{k}={v}" for k, v in settings(TrainConfig.from_dict(t))
                      if k not in ("train_frac", "split_seed"))  # on the split line
    lines.append(f"  recipe   AdamW {recipe}")
    lines.append(f"  split    {d['n_train']} train / {d['n_val']} validation pairs "
                 f"(train_frac={t['train_frac']}, split seed {split_seed})")
    lines.append(f"  final    {metrics_line(m)}")
    lines.append(f"  trained  {safe_text(m.get('epochs', '?'))} epochs in "
                 f"{_number(pv.get('wall_s'), '.1f')} s on {safe_text(pv.get('device'))} "
                 f"({safe_text(pv.get('backend', 'torch'))} backend, "
                 f"{safe_text(pv.get('threads'))} thread(s), batched seeds "
                 f"{safe_text(pv.get('batched_seeds'), 100)}), torch "
                 f"{safe_text(pv.get('torch'))}, hooked-mlp {safe_text(pv.get('hooked_mlp'))}, "
                 f"finished {safe_text(pv.get('finished'))}")
    if pv.get("command"):
        lines.append(f"  command  {safe_text(pv['command'], 2000)}")
    if "snapshots" in d:
        s = d["snapshots"]
        lines.append(f"  snapshots {safe_text(s['count'])} in {safe_text(s['path'], 4096)} "
                     f"(hooked_mlp.load_snapshots; {PROG} dynamics)")
    return "\n".join(lines)


