"""Regenerate the shipped snapshots: seed 0 of the seed recipe, retrained with 64 snapshots.

    .venv/bin/python scripts/make_shipped_snapshots.py          # about a minute on 2 cores
    .venv/bin/python scripts/make_shipped_snapshots.py --from RUN   # from a run already made
    .venv/bin/python scripts/make_shipped_snapshots.py --measures-only  # the cache only

Trains `hooked-mlp train --seed 0 --snapshots log:63` (or reads the run folder RUN made that
way), keeps every other snapshot and the last (33), stores them as float16 in
`hooked_mlp/pretrained/snapshots-study-seed-0.safetensors` (about 2 MB), and writes
`hooked_mlp/pretrained/SNAPSHOTS.md`, which compares the retrained final weights with the
shipped `seed-0.safetensors`, and `snapshots-study-seed-0.dynamics.json`: the progress
measures of those snapshots as stored (`analyses.pages.dynamics.write_measures_cache`), which
the report's "How it formed" section reads instead of measuring them again.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "hooked_mlp" / "pretrained"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="run", type=Path, default=None,
                    help="a run folder trained with --seed 0 --snapshots log:63")
    ap.add_argument("--measures-only", action="store_true",
                    help="only measure the shipped snapshots again and rewrite their cache")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.measures_only:
        _write_cache()
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = Path(tmp) / "run"
            subprocess.run([sys.executable, "-m", "hooked_mlp.cli", "train", "--seed", "0",
                            "--snapshots", "log:63", "--out", str(run), "--no-progress"],
                           check=True, cwd=ROOT)
        return _ship(run)


def _write_cache() -> None:
    """Measure the shipped snapshots as stored (float16, widened) and write their cache."""
    import torch

    from analyses.dynamics import dynamics
    from analyses.pages.dynamics import SHIPPED_CACHE, write_measures_cache
    from hooked_mlp.files.layout import SHIPPED_SERIES
    from hooked_mlp.files.series import read_series

    torch.set_num_threads(1)
    path = DEST / SHIPPED_SERIES
    write_measures_cache(path, dynamics(read_series(path)), DEST / SHIPPED_CACHE)
    print(f"wrote {DEST / SHIPPED_CACHE}")


def _ship(run: Path) -> int:
    import torch

    from hooked_mlp import load_pretrained, load_snapshots
    from hooked_mlp.files.format import atomic_write_text
    from hooked_mlp.files.layout import SHIPPED_SERIES
    from hooked_mlp.files.series import SnapshotSeries, write_series

    full = load_snapshots(run, seed=0)
    if full.train_info.train_config.to_dict() != load_pretrained(0).train_info.train_config \
            .to_dict():
        raise SystemExit(f"{run} was not trained with the shipped seed-0 recipe")
    keep = sorted({*range(0, len(full), 2), len(full) - 1})
    series = SnapshotSeries(full.cfg, [full.epochs[i] for i in keep],
                            {k: v[keep] for k, v in full.params.items()}, full.train_info)
    path = DEST / SHIPPED_SERIES
    write_series(path, series, dtype="float16")
    shipped, final = load_pretrained(0), full[-1]
    diff = max(float((getattr(shipped, n) - getattr(final, n)).detach().abs().max())
               for n in ("W_in", "b_in", "W_out", "b_out"))
    same = diff == 0.0
    pv, m = full.train_info.provenance, full.train_info.metrics
    text = f"""# The shipped snapshots

`{SHIPPED_SERIES}`: {len(series)} snapshots (epochs {series.epochs[0]} to
{series.epochs[-1]}, every other one of `log:63`, and the last) of seed 0 trained with the seed
recipe (the shipped models' recipe and split), stored as float16
({path.stat().st_size / 2**20:.1f} MiB). Read them with
`hooked_mlp.load_snapshots("{path.relative_to(ROOT)}")`; `hooked-mlp dynamics` draws them.

The run's final weights are {"bit-identical to" if same else "NOT the same as"} the shipped
`seed-0.safetensors` (largest difference {diff:.3g}): {"" if same else
"the shipped file was trained by hooked-mlp 0.1.0, whose C kernel summed each batch's gradient "
"in two halves (see README.md); this run, by hooked-mlp " + str(pv.get("hooked_mlp")) + ", "
"starts from the same initialisation and batches and ends at a model of the same quality, "
"not the same bits. The series is therefore the history of its own final model (its last "
"snapshot), a twin of seed 0, not of the shipped file."}
That final model: train accuracy {m.get("train_acc", float("nan")):.4%}, validation accuracy
{m.get("val_acc", float("nan")):.4%}; trained on {pv.get("device")} with the
{pv.get("backend")} backend, torch {pv.get("torch")}, in {pv.get("wall_s", 0):.0f} s.

`snapshots-study-seed-0.dynamics.json` holds their progress measures (the report's "How it
formed" section reads them instead of measuring 33 snapshots again; it is used only while the
checksum the snapshot file records matches).

Regenerate with `python scripts/make_shipped_snapshots.py`.
"""
    atomic_write_text(DEST / "SNAPSHOTS.md", text)
    _write_cache()
    print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB) and {DEST / 'SNAPSHOTS.md'}; "
          f"final weights {'equal' if same else 'differ from'} the shipped seed 0 "
          f"(max |diff| {diff:.3g})")
    torch.set_num_threads(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
