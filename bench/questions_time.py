"""How long `hooked-mlp questions` takes: the default plan into a fresh cache (everything
trained), then again on the filled cache (nothing trained), against the 10-minute budget.

    .venv/bin/python bench/questions_time.py [--full] [--cache DIR] [--out DIR]

Prints the wall time of each part (training, measuring) and the ratio to the budget. With
`--cache DIR` an existing cache is reused, so the first figure then measures only what is
missing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import machine

BUDGET_S = 600.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the fuller plan")
    parser.add_argument("--cache", type=Path, default=None, help="reuse this cache folder")
    parser.add_argument("--out", type=Path, default=None,
                        help="keep the page written by the last call in this folder")
    args = parser.parse_args()

    from analyses.experiments.questions import DEFAULT_PLAN, FULL_PLAN, run_questions
    from analyses.pages.questions import write_questions_page

    plan = FULL_PLAN if args.full else DEFAULT_PLAN
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp) / "cache"
        for label in ("fresh cache" if args.cache is None else "given cache", "filled cache"):
            t0 = time.perf_counter()
            result = run_questions(cache, plan, log=lambda line: None)
            write_questions_page(result, args.out or Path(tmp) / "out",
                                 "python bench/questions_time.py")
            wall = time.perf_counter() - t0
            t = result.timings
            print(f"{plan.name} plan, {label:12s}: {wall:7.1f} s wall (training {t['train_s']:6.1f}"
                  f" s, measuring {t['measure_s']:6.1f} s)  {wall / BUDGET_S:.2f}x the "
                  f"{BUDGET_S:.0f} s budget")


if __name__ == "__main__":
    main()
