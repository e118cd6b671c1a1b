"""The explorer as a notebook widget: `explore(obj)` returns an `Explorer`, an
`anywidget.AnyWidget` whose front end is `explorer.js` (with `explorer.css`), the package's
one front-end module, shared with the static page (`analyses.pages.explorer`).

    from analyses.explorer import explore
    w = explore(load_pretrained(0))          # a HookedMLP, a snapshot series or a sweep folder
    w                                        # shown by Jupyter, JupyterLab, VS Code, marimo
    w.neuron                                 # the neuron picked in the page (synced back)

The data (`analyses.explorer.data.gather`) travels once, in the `data` traitlet; the views draw
from it in the browser, so picking a neuron, a pair, an epoch or a sweep cell needs no round
trip to the kernel. `neuron` and `state` (the snapshot or sweep cell shown) are synced both
ways: set them from Python to move the page.
"""

from __future__ import annotations

from typing import Any

import anywidget
import traitlets

from analyses.explorer.data import MAX_CELLS, gather
from analyses.explorer.front_end import front_end


class Explorer(anywidget.AnyWidget):
    """The explorer widget over `data` (the dict `gather` returns)."""

    _esm = traitlets.Unicode(front_end()[0]).tag(sync=True)
    _css = traitlets.Unicode(front_end()[1]).tag(sync=True)
    data = traitlets.Dict().tag(sync=True)
    neuron = traitlets.Int(0).tag(sync=True)
    state = traitlets.Int(0).tag(sync=True)

    @traitlets.validate("data")
    def _check_data(self, proposal: dict[str, Any]) -> dict[str, Any]:
        data = proposal["value"]
        missing = {"kind", "p", "d_hidden", "activation", "labels", "states"} - set(data)
        if missing or not data.get("states"):
            raise traitlets.TraitError(
                f"Explorer data must come from analyses.explorer.gather (missing "
                f"{sorted(missing) or ['states']})")
        return data


def explore(obj: Any, title: str | None = None, max_cells: int = MAX_CELLS) -> Explorer:
    """The explorer widget over a `HookedMLP`, a snapshot series (`hooked_mlp.load_snapshots`)
    or a sweep folder (a path); `max_cells`: how many of a sweep's cells carry their weights."""
    data = gather(obj, title, max_cells)
    last = len(data["states"]) - 1
    return Explorer(data=data, state=last if data["kind"] == "series" else 0)
