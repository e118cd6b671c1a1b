"""The explorer (issue 22): a model's, a snapshot series' or a sweep's data gathered compactly
for interactive views (`analyses.explorer.data`). The widget, its front end and the static page
are not built yet (see /work/notes/F-explorer.md)."""

from analyses.explorer.data import gather, model_data, series_data, state_data, sweep_data

__all__ = ["gather", "model_data", "series_data", "state_data", "sweep_data"]
