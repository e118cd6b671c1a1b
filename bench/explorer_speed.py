"""The explorer's static page (issue 22) for the shipped models: build seconds and page MB of
each (`analyses.pages.explorer.write_explorer_page`: gather + HTML + the atomic write, what
`hooked-mlp explore` does after loading its input), then in headless Chromium
(tests/_browser.py) the browser's own timing of opening it (navigation timing's load event, and
`performance.now()` when the page marks itself ready) and of switching a neuron (from the click
to two animation frames after it, so the paint is in), median of several switches.

`--compare TREE` times the builds side by side instead: each round runs one fresh process per
tree (`PYTHONPATH=TREE`, e.g. a `git worktree` of an earlier commit, and this checkout), in
alternating order, each building every page once after loading the models (imports and loading
not timed, the first build of the process included, as the command line has it); medians over
`--rounds`. `--threads N` sets torch's intra-op threads (default: torch's own, the cores).

Goals (issue 22): build <= 10 s, open <= 1 s, switch <= 1 s, <= 10 MB for the five shipped
models. Prints figures only (no asserts on time: the machine is shared and noisy).

    .venv/bin/python bench/explorer_speed.py [--seeds 0,1,2,3,4] [--series] [--switches 7]
    .venv/bin/python bench/explorer_speed.py --series --compare /tmp/before --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from _browser import Browser, browser_available  # noqa: E402

from analyses.pages.explorer import write_explorer_page  # noqa: E402
from hooked_mlp import load_pretrained, load_snapshots  # noqa: E402
from hooked_mlp.files.layout import PRETRAINED_DIR, SHIPPED_SERIES  # noqa: E402

# one neuron switch: click a neuron of the list, then wait two animation frames (painted)
SWITCH = """const done = arguments[arguments.length - 1];
const li = document.querySelector('#hmx-neuron-list li[data-n="' + arguments[0] + '"]');
if (!li) { done(-1); return; }
const t0 = performance.now();
li.click();
requestAnimationFrame(() => requestAnimationFrame(() => {
  const shown = document.querySelector('#hmx-neuron-number').textContent;
  done(shown === String(arguments[0]) ? performance.now() - t0 : -2);
}));"""


def build(obj, out: Path, inputs=()) -> tuple[float, float, Path]:
    t = time.perf_counter()
    page = write_explorer_page(obj, out, inputs=inputs)
    return time.perf_counter() - t, page.stat().st_size / 1e6, page


def in_browser(b: Browser, page: Path, switches: int, d_hidden: int) -> dict[str, float]:
    t = time.perf_counter()
    b.open(page)
    ready = b.wait_for("document.body.dataset.explorerReady && performance.now()", timeout=60)
    wall = time.perf_counter() - t
    nav = b.js("const n = performance.getEntriesByType('navigation')[0];"
               "return [n.domContentLoadedEventEnd, n.loadEventEnd];")
    errors = b.console_errors()
    times = []
    for i in range(switches):
        ms = b.js_async(SWITCH, (7 + 13 * i) % d_hidden)
        if ms < 0:
            raise RuntimeError(f"neuron switch {i} failed ({ms}): the page's ids changed?")
        times.append(ms)
    return {"dcl_ms": nav[0], "load_ms": nav[1], "ready_ms": ready, "open_wall_s": wall,
            "switch_ms": statistics.median(times), "switch_max_ms": max(times),
            "errors": len(errors)}


# one process's builds, run under PYTHONPATH=<tree>: only names every tree has
CHILD = """import json, sys, tempfile, time
from pathlib import Path
import torch
from analyses.pages.explorer import write_explorer_page
from hooked_mlp import load_pretrained, load_snapshots
from hooked_mlp.files.layout import PRETRAINED_DIR, SHIPPED_SERIES
seeds, series, threads = json.loads(sys.argv[1])
if threads:
    torch.set_num_threads(threads)
jobs = [(f"seed-{s}", load_pretrained(s), ()) for s in seeds]
if series:
    path = PRETRAINED_DIR / SHIPPED_SERIES
    jobs.append(("series", load_snapshots(path), (path,)))
out = {}
with tempfile.TemporaryDirectory() as tmp:
    for name, obj, inputs in jobs:
        t = time.perf_counter()
        page = write_explorer_page(obj, Path(tmp) / name, inputs=inputs)
        out[name] = [time.perf_counter() - t, page.stat().st_size / 1e6]
print(json.dumps(out))
"""


def compare(trees: list[Path], seeds: list[int], series: bool, threads: int | None,
            rounds: int) -> None:
    """Build seconds of each tree, side by side (see the module's docstring)."""
    times: dict[str, dict[str, list[float]]] = {str(t): {} for t in trees}
    sizes: dict[str, dict[str, float]] = {str(t): {} for t in trees}
    for r in range(rounds):
        for tree in (trees if r % 2 == 0 else trees[::-1]):
            env = dict(os.environ, PYTHONPATH=str(tree))
            done = subprocess.run([sys.executable, "-c", CHILD, json.dumps([seeds, series,
                                   threads])], env=env, cwd=tree, capture_output=True,
                                  text=True, check=False)
            if done.returncode:
                raise RuntimeError(f"{tree}: the build failed:\n{done.stderr[-2000:]}")
            for name, (secs, mb) in json.loads(done.stdout.splitlines()[-1]).items():
                times[str(tree)].setdefault(name, []).append(secs)
                sizes[str(tree)][name] = mb
    names = list(times[str(trees[0])])
    print(f"build seconds, median of {rounds} fresh processes per tree (threads "
          f"{threads or 'default'}; load now {os.getloadavg()[0]:.1f}):")
    print(f"{'page':8s} " + "  ".join(f"{t.name[:22]:>22s}" for t in trees) + "   ratio")
    for name in [*names, "5 models"]:
        if name == "5 models":
            med = [statistics.median([sum(x) for x in zip(*(times[str(t)][n] for n in names
                                                               if n != "series"), strict=True)])
                   for t in trees]
        else:
            med = [statistics.median(times[str(t)][name]) for t in trees]
        mb = "" if name == "5 models" else "  " + " / ".join(
            f"{sizes[str(t)][name]:.2f} MB" for t in trees)
        print(f"{name:8s} " + "  ".join(f"{m:20.2f} s" for m in med)
              + f"   {med[0] / med[-1]:5.2f}x{mb}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4", help="shipped model seeds (comma list)")
    ap.add_argument("--series", action="store_true", help="also the shipped snapshot series")
    ap.add_argument("--switches", type=int, default=7, help="neuron switches to time")
    ap.add_argument("--compare", type=Path, action="append", default=[],
                    help="an earlier tree to time the builds beside this one's (repeatable)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of --compare")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    print(f"explorer_speed: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"browser {'yes' if browser_available() else 'no'}")
    if args.compare:
        compare([*(t.resolve() for t in args.compare), ROOT], seeds, args.series, args.threads,
                args.rounds)
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    jobs = [(f"seed-{s}", load_pretrained(s), ()) for s in seeds]
    if args.series:
        path = PRETRAINED_DIR / SHIPPED_SERIES
        jobs.append(("series", load_snapshots(path), (path,)))
    with tempfile.TemporaryDirectory() as tmp:
        built = []
        for name, obj, inputs in jobs:
            secs, mb, page = build(obj, Path(tmp) / name, inputs)
            d_hidden = obj.cfg.d_hidden
            built.append((name, secs, mb, page, d_hidden))
            print(f"{name:8s} build {secs:6.2f} s  page {mb:6.2f} MB")
        models = [b for b in built if b[0] != "series"]
        print(f"{len(models)} models: build {sum(b[1] for b in models):.2f} s in all, "
              f"{sum(b[2] for b in models):.2f} MB in all (goals for five: 10 s, 10 MB)")
        if not browser_available():
            print("no chromium/chromedriver: browser timings skipped")
            return
        with Browser() as br:
            for name, _, _, page, d_hidden in built:
                r = in_browser(br, page, args.switches, d_hidden)
                print(f"{name:8s} open: DOMContentLoaded {r['dcl_ms']:.0f} ms, load "
                      f"{r['load_ms']:.0f} ms, ready {r['ready_ms']:.0f} ms (wall "
                      f"{r['open_wall_s']:.2f} s); switch a neuron: median "
                      f"{r['switch_ms']:.0f} ms, max {r['switch_max_ms']:.0f} ms over "
                      f"{args.switches}; console errors {r['errors']}")


if __name__ == "__main__":
    main()
