"""The explorer's static page, `DIR/explorer.html`: every view of the explorer (issue 22) in one
offline file, the front end (`analyses/explorer/explorer.js`, `explorer.css`) and the data
(`analyses.explorer.gather`) inlined, no CDN and no server.

    from analyses.pages.explorer import write_explorer_page
    write_explorer_page(load_pretrained(0), "explore-seed-0")      # explore-seed-0/explorer.html
    write_explorer_page("S", "explore-S")                          # a sweep folder
    html = explorer_html(gather(model))                            # the page as text

The page is written through the one page writer (`analyses.pages.writer`): it replaces only an
earlier explorer page, atomically, and never a folder holding its inputs (a sweep folder).

A series read from a snapshots file `X.safetensors` takes its progress measures from the cache
`X.dynamics.json` beside it when that cache was written for that very file and fits the series
(`analyses.experiments.formation.read_measures_cache`, checked against the checksum the file
records): the shipped series' cache (`hooked_mlp/pretrained/snapshots-study-seed-0.dynamics.json`)
saves recomputing `analyses.dynamics.dynamics`, about half of its build.

The data are gathered on one torch thread by default (`threads=1`): the explorer's work is many
small tensor operations, which torch's default of one thread per core slowed down up to 25-fold
on this project's 2-core machine while other processes ran (bench/explorer_speed.py: a model's
page 1.5 s on one thread, 3.3 s on two, at load 4.5), and one fixed thread count gives the same
page on every machine.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from analyses.experiments.formation import read_measures_cache
from analyses.explorer.data import MAX_CELLS, gather
from analyses.explorer.front_end import front_end
from analyses.pages.render import markup, now, render
from analyses.pages.writer import PageKind, page_folder
from hooked_mlp.checks import check_threads
from hooked_mlp.training.trainer import torch_threads

PAGE_FILE = "explorer.html"
KIND = PageKind("explorer", files=(PAGE_FILE,))
WHAT = {"model": "one model", "series": "a snapshot series (the slider moves every view)",
        "sweep": "a sweep (click a phase-diagram cell to open its run)"}


def explorer_html(data: Mapping[str, Any], command: str | None = None) -> str:
    """The explorer page for `data` (what `analyses.explorer.gather` returns), as one HTML text
    carrying the `hooked-mlp explorer page` generator meta."""
    if not isinstance(data, Mapping) or "states" not in data or "kind" not in data:
        raise TypeError("explorer_html takes the dict analyses.explorer.gather returns")
    module, css = front_end()
    if "</script" in module.lower() or "</style" in css.lower():  # never inlined cut short
        raise RuntimeError("the explorer's front end may not contain a closing script tag")
    n = len(data["states"])
    what = WHAT.get(str(data["kind"]), str(data["kind"])) + (f", {n} states" if n > 1 else "")
    return render("explorer.html.j2", kind=KIND.name, title=str(data.get("title", "")),
                  what=what, written=now(), command=command, data=dict(data),
                  module=markup(module), css=markup(css))


def cached_measures(series: Any, inputs: Iterable[str | os.PathLike[str]]) -> Any | None:
    """The progress measures (`analyses.dynamics.Dynamics`) of `series` from the cache beside
    the snapshots file it was read from (`X.dynamics.json` beside `X.safetensors`, one of
    `inputs`), or None: not a series, no such cache, or one written for another file or not
    fitting the series (`read_measures_cache`)."""
    if not (hasattr(series, "epochs") and hasattr(series, "__len__")):
        return None
    for path in map(Path, inputs):
        cache = path.with_suffix(".dynamics.json")
        if path.is_file() and path.suffix == ".safetensors" and cache.is_file():
            found = read_measures_cache(series, path, cache)
            if found is not None:
                return found
    return None


def write_explorer_page(obj: Any, out_dir: str | os.PathLike[str], *, title: str | None = None,
                        max_cells: int = MAX_CELLS, command: str | None = None,
                        inputs: Iterable[str | os.PathLike[str]] = (),
                        measures: Any | None = None, threads: int | None = 1) -> Path:
    """Gather the explorer's data for `obj` (a `HookedMLP`, a snapshot series, or a sweep
    folder) and write `out_dir/explorer.html`; its path. The folder must be new, empty or an
    earlier explorer page's, and may not hold the sweep folder given as `obj` or any of
    `inputs` (the files a model or series was loaded from). A series' progress measures:
    `measures` (its `Dynamics` computed before), else the cache beside its snapshots file
    (`cached_measures`), else measured afresh. `threads`: torch's intra-op threads while
    gathering (restored afterwards; None: torch's own setting)."""
    inputs = [*inputs, *([obj] if isinstance(obj, (str, os.PathLike)) else [])]
    if threads is not None:
        check_threads(threads)  # before the folder is touched
    threads_now = torch_threads(threads) if threads is not None else contextlib.nullcontext()
    with page_folder(out_dir, KIND, inputs) as page:  # refused before minutes of gathering
        if measures is None:
            measures = cached_measures(obj, inputs)
        with threads_now:
            data = gather(obj, title, max_cells, measures)
        page.write(PAGE_FILE, explorer_html(data, command))
    return Path(out_dir) / PAGE_FILE


__all__ = ["KIND", "PAGE_FILE", "cached_measures", "explorer_html", "write_explorer_page"]
