"""The explorer (issue 22): every view of a model, a snapshot series or a sweep, interactive.

- `gather(obj)` (`analyses.explorer.data`): the data the views draw from, compact and JSON-ready.
- `explore(obj)` (`analyses.explorer.widget`): the notebook widget, an `anywidget.AnyWidget`.
- The static page (`analyses.pages.explorer.write_explorer_page`, `hooked-mlp explore`): the
  same front end (`explorer.js`, `explorer.css`) inlined with its data in one offline file.
"""

from analyses.explorer.data import gather, model_data, series_data, state_data, sweep_data

__all__ = ["Explorer", "explore", "gather", "model_data", "series_data", "state_data",
           "sweep_data"]


def __getattr__(name: str):  # the widget imports anywidget: only when asked for
    if name in ("Explorer", "explore"):
        from analyses.explorer import widget

        return getattr(widget, name)
    raise AttributeError(f"module 'analyses.explorer' has no attribute {name!r}")
