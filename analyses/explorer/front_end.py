"""The explorer's front end as text: the ES module `explorer.js` and its stylesheet
`explorer.css` (package data), read once. The widget (`analyses.explorer.widget`) hands them to
anywidget; the static page (`analyses.pages.explorer`) inlines them."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files


@lru_cache(maxsize=1)
def front_end() -> tuple[str, str]:
    """`(module, stylesheet)`: the texts of `explorer.js` and `explorer.css`."""
    here = files("analyses.explorer")
    return (here.joinpath("explorer.js").read_text(encoding="utf-8"),
            here.joinpath("explorer.css").read_text(encoding="utf-8"))
