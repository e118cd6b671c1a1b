"""The views page: circuitsvis views in one self-contained HTML page (no network needed).

The page renders `templates/views.html.j2` (the base layout, the one stylesheet, autoescaped):
the circuitsvis bundle is inlined once and each view is its `CircuitsVisView.fragment` under
its title. `save_views_page` writes it through the one page writer (`analyses.pages.writer`):
atomically, replacing only an earlier views page (a file carrying the page's `generator` meta).
These two functions were `analyses.views.views_page` and `save_views_page` before 0.3; those
names still import, with one `DeprecationWarning` (the rows of `analyses/__init__.py`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from analyses.pages.render import markup, render
from analyses.pages.writer import PageKind, write_page_file
from analyses.views import CircuitsVisView, bundle_script

KIND = PageKind("views", files=("views.html",))
TEMPLATE = "views.html.j2"


def views_page(views: Sequence[CircuitsVisView], title: str = "hooked-mlp views") -> str:
    """A self-contained HTML page showing `views` (the circuitsvis bundle inlined once)."""
    views = list(views)
    for i, v in enumerate(views):
        if not isinstance(v, CircuitsVisView):
            raise TypeError(f"views[{i}] must be an analyses.views.CircuitsVisView, got "
                            f"{type(v).__name__}")
    if not isinstance(title, str):
        raise TypeError(f"title must be a string, got {type(title).__name__}")
    return render(TEMPLATE, kind=KIND.name, title=title, bundle=markup(bundle_script()),
                  views=[(v.title, markup(v.fragment(f"cv-{i}"))) for i, v in enumerate(views)])


def save_views_page(views: Sequence[CircuitsVisView], path: str | os.PathLike[str],
                    title: str = "hooked-mlp views") -> Path:
    """Write `views_page(views, title)` to `path` atomically; the path.

    An existing file there is replaced only when it is an earlier views page.
    """
    return write_page_file(path, KIND, views_page(views, title))


__all__ = ["KIND", "save_views_page", "views_page"]
