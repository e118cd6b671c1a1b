"""The explorer's front end (issue 22): the widget carries the data its views need, and the
static page, opened in headless Chromium, draws and answers as the model does."""

import pytest
import torch

from analyses.explorer import Explorer, explore
from analyses.explorer.data import decode
from hooked_mlp import HookedMLP, MLPConfig


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return HookedMLP(MLPConfig(p=11, d_hidden=12)).eval()


def test_widget_traitlets_carry_the_data(small):
    w = explore(small, title="small")
    assert isinstance(w, Explorer)
    assert "export default" in w._esm and "function render" in w._esm
    assert ".hmx" in w._css
    d = w.data
    assert d["kind"] == "model" and d["title"] == "small" and d["p"] == 11
    assert d["activation"] == "relu" and len(d["labels"]) == 121
    st = d["states"][0]
    # every view's inputs: factors, fits, spectra, forms, ablations, checks
    assert decode(st["W"]["a"], (12, 11)).shape == (12, 11)
    assert set(st["cosine"]) == {"a", "b", "out"} and set(st["spectrum"]) == {"a", "b", "out"}
    assert set(st["forms"]["a"]) == set(d["forms"]) and st["ablations"] and st["checks"]
    # the state the front end shows is synced both ways
    state = w.get_state()
    assert state["data"]["p"] == 11 and state["neuron"] == 0 and state["state"] == 0
    w.neuron = 5
    assert w.get_state()["neuron"] == 5


def test_widget_refuses_data_not_gathered():
    import traitlets

    with pytest.raises(traitlets.TraitError, match="analyses.explorer.gather"):
        Explorer(data={"p": 3})
    with pytest.raises(TypeError, match="explore takes"):
        explore(42)


# --------------------------------------------------------------------------- the static page
def test_page_inlines_module_and_data_and_replaces_only_its_own(small, tmp_path):
    import json
    import re

    from analyses.explorer import gather
    from analyses.pages.explorer import explorer_html, write_explorer_page

    path = write_explorer_page(small, tmp_path / "E", title="small </script> & co")
    html = path.read_text()
    assert '<meta name="generator" content="hooked-mlp explorer page">' in html
    offline = html.replace("http://www.w3.org/2000/svg", "")
    assert "http://" not in offline and "https://" not in offline
    # the data block parses back to what gather gave, the title unable to close the script
    block = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', html,
                      re.S).group(1)
    data = json.loads(block)
    assert data["title"] == "small </script> & co" and data["states"][0]["checks"]
    assert data["states"][0]["W"] == gather(small)["states"][0]["W"]
    # an earlier explorer page is replaced; a folder holding anything else is refused
    write_explorer_page(small, tmp_path / "E")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt"):
        write_explorer_page(small, tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    with pytest.raises(TypeError, match="gather returns"):
        explorer_html({"p": 3})
