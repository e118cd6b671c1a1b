"""The tutorial notebook (docs/tutorial.ipynb) runs end to end, so it cannot rot."""

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "tutorial.ipynb"


def test_the_tutorial_runs_end_to_end(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "the tutorial is stored without outputs"
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "attribution" in text
    # the last cell trains a GELU model of a - b: it learns
    small = re.findall(r"validation accuracy ([0-9.]+) \|", text)
    assert small and float(small[-1]) >= 0.98, text[-300:]
    html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(html) == 2 and len(pngs) == 2  # two circuitsvis views, two figures
    assert sum(h.count("var CircuitsVis=") for h in html) == 1  # the bundle, once
