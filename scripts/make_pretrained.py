"""Regenerate the shipped models: the seed recipe, seeds 0-4, trained by `hooked-mlp train`.

    .venv/bin/python scripts/make_pretrained.py            # about a minute on 2 cores

Trains into a temporary folder with the CLI (one batched run), copies the checkpoints into
`hooked_mlp/pretrained/`, and rewrites `hooked_mlp/pretrained/README.md` from their metadata.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from hooked_mlp.files.layout import model_files  # noqa: E402 - after the path it needs

DEST = ROOT / "hooked_mlp" / "pretrained"
SEEDS = "0-4"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "pretrained-run"
        cmd = [sys.executable, "-m", "hooked_mlp.cli", "train", "--seeds", SEEDS,
               "--out", str(run), "--no-progress"]
        subprocess.run(cmd, check=True, cwd=ROOT)
        for _, old in model_files(DEST):
            old.unlink()
        for _, f in model_files(run):
            shutil.copy2(f, DEST / f.name)
    from hooked_mlp.files.describe import describe
    from hooked_mlp.files.format import atomic_write_text

    rows, first = [], None
    for _, f in model_files(DEST):
        d = describe(f)
        first = first or d
        m = d["metrics"]
        rows.append(f"| {f.name} | {d['train_config']['seed']} | {m['train_acc']:.4%} | "
                    f"{m['val_acc']:.4%} | {m['train_loss']:.4f} | {m['val_loss']:.4f} | "
                    f"{d['n_train']} / {d['n_val']} |")
    pv, t = first["provenance"], first["train_config"]
    text = f"""# The shipped models

Five models trained by this project's own trainer with the source study's recipe: p = 113,
100 hidden ReLU neurons, one-hot `a` and `b`; AdamW lr {t['lr']}, weight decay
{t['weight_decay']}, betas ({t['beta1']}, {t['beta2']}), eps {t['eps']}; batch {t['batch_size']};
{t['epochs']} epochs; {t['train_frac']:.0%} of the 12,769 pairs for training, split by each
model's own seed. Accuracies and losses are measured from the weights on the whole split.

| file | seed | train acc | val acc | train loss | val loss | train / val pairs |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Provenance (also in each file's metadata, shown by `hooked-mlp info`): hooked-mlp
{pv['hooked_mlp']}, torch {pv['torch']}, {pv['device']}, {pv.get('backend', 'torch')} backend,
{pv['threads']} thread(s), seeds
{pv['batched_seeds']} trained in one batched run in {pv['wall_s']:.0f} s, finished
{pv['finished']}. Command (the output folder was a temporary one):

    {pv['command']}

Regenerate all of them with `python scripts/make_pretrained.py`. The same command on another
machine, BLAS or torch build, or with another version of hooked-mlp's kernels, gives the same
recipe, splits and batch order but not bit-identical weights (floating-point kernels differ);
on the same machine, version and backend it is bit-identical, whatever the thread count.
"""
    atomic_write_text(DEST / "README.md", text)
    print(f"wrote {len(rows)} models and {DEST / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
