"""The same numbers before and after a change: report, dynamics and questions side by side.

    .venv/bin/python bench/same_numbers.py --tree /path/to/previous/checkout --tree .

Runs, for each source tree (its C extension built in place: `python setup.py build_ext
--inplace`), in a fresh subprocess with that tree first on the path:

- `hooked-mlp report` on the shipped models -> `summary.json`;
- `hooked-mlp dynamics` on the shipped snapshots -> `dynamics.json`;
- the open questions on a small plan (p = 13, 40 epochs, two encodings, depths 1 and 2) ->
  `questions.json`;

then compares every number of the first tree's files with the others', apart from timings
(keys naming seconds, wall time, timings or dates), and prints each difference with its path.
The trees' outputs stay under `--out` for a closer look.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

QUESTIONS = r"""
import sys
from pathlib import Path
try:
    from analyses.experiments.questions import QuestionsPlan, run_questions
    from analyses.pages.questions import write_questions_page
except ImportError:
    from analyses.questions import QuestionsPlan, run_questions
    from analyses.questions_page import write_questions_page
out = Path(sys.argv[1])
plan = QuestionsPlan(name="tiny", p=13, d_hidden=32, epochs=40, seeds=(0, 1),
                     encodings=("one_hot", "circle"), depths=(1, 2),
                     retries=((("weight_decay", 0.05),),), fractions=(0.0, 0.5, 1.0),
                     n_orders=1, small_p=False)
result = run_questions(out / "cache", plan, log=lambda line: None)
write_questions_page(result, out / "page", None)
"""

TIMING_WORDS = ("seconds", "wall", "timing", "_s", "finished", "elapsed", "time")


def _is_timing(key: str) -> bool:
    k = key.lower()
    return k.endswith("_s") or any(w in k for w in TIMING_WORDS if w != "_s")


# Keys renamed on purpose, compared under their new name (issue 18: one aggregate mean, sd, n).
RENAMED = {"std": "sd"}


def _renamed(d: dict) -> dict:
    return {RENAMED.get(k, k) if isinstance(k, str) else k: v for k, v in d.items()}


def _diff(a: Any, b: Any, path: str, out: list[str], rtol: float) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        a, b = _renamed(a), _renamed(b)
        for k in sorted(set(a) | set(b), key=str):
            if _is_timing(str(k)):
                continue
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'the first' if k in a else 'the second'}")
                continue
            _diff(a[k], b[k], f"{path}/{k}", out, rtol)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} items against {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{path}[{i}]", out, rtol)
    elif isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        if not (a == b or (math.isnan(a) and math.isnan(b))
                or abs(a - b) <= rtol * max(abs(a), abs(b))):
            out.append(f"{path}: {a!r} against {b!r}")
    elif a != b:
        out.append(f"{path}: {str(a)[:80]!r} against {str(b)[:80]!r}")


def run_tree(tree: Path, out: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "HOOKED_MLP_DEBUG": "1"}
    out.mkdir(parents=True, exist_ok=True)
    steps = {
        "report": [sys.executable, "-m", "hooked_mlp.cli", "report", "--out",
                   str(out / "report"), "--no-progress"],
        "dynamics": [sys.executable, "-m", "hooked_mlp.cli", "dynamics", "--out",
                     str(out / "dynamics")],
        "questions": [sys.executable, "-c", QUESTIONS, str(out / "questions")],
    }
    times = {}
    for name, cmd in steps.items():
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=tree, env=env, stdout=subprocess.DEVNULL)
        times[name] = time.perf_counter() - t0
    return times


FILES = {"report": "report/summary.json", "dynamics": "dynamics/dynamics.json",
         "questions": "questions/page/questions.json"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, action="append", required=True,
                    help="a source tree (repeat: the first is the baseline)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/same-numbers"))
    ap.add_argument("--rtol", type=float, default=0.0,
                    help="relative tolerance for floats (default 0: equal)")
    ap.add_argument("--reuse", action="store_true", help="compare outputs already under --out")
    args = ap.parse_args()
    outs = [args.out / f"tree-{i}" for i in range(len(args.tree))]
    for tree, out in zip(args.tree, outs, strict=True):
        if not args.reuse:
            times = run_tree(tree.resolve(), out)
            print(f"{tree}: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    first = {k: json.loads((outs[0] / f).read_text()) for k, f in FILES.items()}
    for tree, out in zip(args.tree[1:], outs[1:], strict=True):
        for k, f in FILES.items():
            diffs: list[str] = []
            _diff(first[k], json.loads((out / f).read_text()), k, diffs, args.rtol)
            print(f"{tree} {f}: {'equal' if not diffs else f'{len(diffs)} differences'}")
            for d in diffs[:40]:
                print(f"    {d}")


if __name__ == "__main__":
    main()
