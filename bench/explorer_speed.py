"""The explorer's static page (issue 22) for the shipped models: build seconds and page MB of
each (`analyses.pages.explorer.write_explorer_page`: gather + HTML), then in headless Chromium
(tests/_browser.py) the browser's own timing of opening it (navigation timing's load event, and
`performance.now()` when the page marks itself ready) and of switching a neuron (from the click
to two animation frames after it, so the paint is in), median of several switches.

Goals (issue 22): build <= 10 s, open <= 1 s, switch <= 1 s, <= 10 MB for the five shipped
models. Prints figures only (no asserts on time: the machine is shared and noisy).

    .venv/bin/python bench/explorer_speed.py [--seeds 0,1,2,3,4] [--series] [--switches 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4", help="shipped model seeds (comma list)")
    ap.add_argument("--series", action="store_true", help="also the shipped snapshot series")
    ap.add_argument("--switches", type=int, default=7, help="neuron switches to time")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    print(f"explorer_speed: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"browser {'yes' if browser_available() else 'no'}")
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
