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


# --------------------------------------------------------------------------- in Chromium
def _panel(b):
    return b.js("const q = (s) => document.querySelector(s);"
                "return {n: q('#hmx-neuron-number').textContent,"
                " k: q('#hmx-neuron-frequency').textContent,"
                " sum: Number(q('#hmx-grid').dataset.sum), state: q('#hmx').dataset.state}")


def _grid_sum(data, state, n):
    """The sum of neuron n's activation over every (a, b), from the gathered factors."""
    import numpy as np

    p, st = data["p"], data["states"][state]
    dt, d = st["dtype"], len(st["dead"])
    wa, wb = (decode(st["W"][s], (d, p), dt)[n] for s in ("a", "b"))
    b_in = decode(st["W"]["b_in"], (d,), dt)[n]
    return float(np.maximum(wa[:, None] + wb[None, :] + b_in, 0).sum())


def _open(b, page):
    b.open(page)
    b.wait_for("document.body.dataset.explorerReady", timeout=30)
    assert b.console_errors() == []
    assert b.js("return document.querySelector('#hmx-checks').textContent").startswith(
        "checks agree")


@pytest.fixture(scope="module")
def shipped_page(tmp_path_factory):
    from _browser import require_browser

    from analyses.explorer import gather
    from analyses.pages.explorer import explorer_html
    from hooked_mlp import load_pretrained

    require_browser()
    data = gather(load_pretrained(0), "seed 0")
    out = tmp_path_factory.mktemp("explorer") / "explorer.html"
    out.write_text(explorer_html(data))
    return out, data


def test_page_of_a_shipped_model_in_chromium(shipped_page, tmp_path):
    from _browser import Browser

    page, data = shipped_page
    st = data["states"][0]
    with Browser() as b:
        _open(b, page)
        first = _panel(b)
        assert first["n"] == "0" and first["k"] == str(st["frequency"][0])
        assert first["sum"] == pytest.approx(_grid_sum(data, 0, 0), rel=1e-5)
        b.click('#hmx-neuron-list li[data-n="43"]')
        b.wait_for("document.querySelector('#hmx-neuron-number').textContent === '43'")
        now = _panel(b)
        assert now["k"] == str(st["frequency"][43])
        assert now["sum"] != first["sum"]
        assert now["sum"] == pytest.approx(_grid_sum(data, 0, 43), rel=1e-5)
        b.screenshot(tmp_path / "neuron-43.png")
        # a bar of the frequency histogram lists that frequency's neurons and opens the first
        k = st["frequency"][43]
        b.click(f'#hmx-freq-hist rect[data-k="{k}"]')
        listed = b.js("return Array.from(document.querySelectorAll('#hmx-neuron-list li'), "
                      "li => Number(li.dataset.n))")
        assert listed == [i for i, f in enumerate(st["frequency"]) if f == k]
        assert _panel(b)["n"] == str(listed[0])
        # Logits: the argmax drawn here is the model's at that pair
        b.click("#hmx-tab-logits")
        b.js("const i = document.querySelector('#hmx-a'); i.value = '5';"
             "i.dispatchEvent(new Event('input'));"
             "const j = document.querySelector('#hmx-b'); j.value = '9';"
             "j.dispatchEvent(new Event('input'));")
        assert b.js("return document.querySelector('#hmx-logit-text').dataset.argmax") == "14"
        rows = b.js("return document.querySelectorAll('#hmx-contrib tr[data-n]').length")
        assert rows == data["d_hidden"]
        # Patching: each frequency ablated here gives the model's precomputed accuracy
        b.click("#hmx-tab-patching")
        worst = float(b.js("return document.querySelector('#hmx-ablations').dataset.worst"))
        assert worst < 2 / data["p"] ** 2  # at most one tie of 12,769 pairs decided otherwise
        ab = st["ablations"][3]
        b.click(f'#hmx-ablations input[data-k="{ab["k"]}"]')
        acc = float(b.js("return document.querySelector('#hmx-patch').dataset.acc"))
        assert acc == pytest.approx(ab["acc"], abs=2 / data["p"] ** 2)
        b.screenshot(tmp_path / "patching.png")
        assert b.console_errors() == []


@pytest.fixture(scope="module")
def series_page(tmp_path_factory):
    from _browser import require_browser

    from analyses.pages.explorer import write_explorer_page
    from hooked_mlp import TrainConfig, train

    require_browser()
    model, _ = train(MLPConfig(p=11, d_hidden=12), TrainConfig(epochs=40, lr=0.01),
                     snapshots="0,5,20,40", progress=False, threads=1)
    series = model.train_info.snapshots
    from analyses.explorer import gather

    page = write_explorer_page(series, tmp_path_factory.mktemp("series") / "E", title="tiny")
    return page, gather(series)


def test_the_epoch_slider_moves_every_view(series_page, tmp_path):
    from _browser import Browser

    page, data = series_page
    assert [s["epoch"] for s in data["states"]] == [0, 5, 20, 40]
    with Browser() as b:
        _open(b, page)
        last = _panel(b)
        assert last["state"] == "3" and last["sum"] == pytest.approx(_grid_sum(data, 3, 0), 1e-3)
        b.click('#hmx-neuron-list li[data-n="7"]')
        b.js("const s = document.querySelector('#hmx-epoch'); s.value = '1';"
             "s.dispatchEvent(new Event('input'));")
        moved = _panel(b)
        assert moved["state"] == "1" and moved["n"] == "7"
        assert moved["k"] == str(data["states"][1]["frequency"][7])
        assert moved["sum"] == pytest.approx(_grid_sum(data, 1, 7), rel=1e-3)
        assert moved["sum"] != pytest.approx(_grid_sum(data, 3, 7), rel=1e-3)
        assert "5 (snapshot 2 of 4)" in b.js(
            "return document.querySelector('#hmx-epoch-label').textContent")
        # the progress curves mark the slider's epoch; a click on them moves the slider
        b.click("#hmx-tab-dynamics")
        assert b.js("return document.querySelectorAll('#hmx-curve-acc line.hmx-marker').length")
        b.screenshot(tmp_path / "dynamics.png")
        assert b.console_errors() == []


@pytest.fixture(scope="module")
def sweep_page(tmp_path_factory):
    from _browser import require_browser

    from analyses.explorer import gather
    from analyses.pages.explorer import write_explorer_page
    from hooked_mlp import TrainConfig
    from hooked_mlp.jobs import sweep

    require_browser()
    folder = tmp_path_factory.mktemp("sweep") / "S"
    sweep({"weight_decay": [0.1, 1.0], "lr": [0.001, 0.01]}, model=MLPConfig(p=7, d_hidden=8),
          recipe=TrainConfig(epochs=5, batch_size=4096), out=folder, progress=False, page=False)
    page = write_explorer_page(folder, folder.parent / "E", max_cells=3)
    return page, gather(folder, max_cells=3)


def test_a_phase_diagram_cell_opens_its_run(sweep_page, tmp_path):
    from _browser import Browser

    page, data = sweep_page
    cells = data["sweep"]["cells"]
    assert len(cells) == 4 and sum(c["state"] is not None for c in cells) == 3
    with Browser() as b:
        _open(b, page)
        assert b.js("return document.querySelectorAll('#hmx-phase rect.hmx-cell').length") == 4
        i = max(i for i, c in enumerate(cells) if c["state"] is not None)
        b.click(f'#hmx-phase rect[data-cell="{i}"]')
        b.wait_for(f"document.querySelector('#hmx').dataset.state === '{cells[i]['state']}'")
        assert cells[i]["label"] in b.js("return document.querySelector('#hmx-cell').textContent")
        b.screenshot(tmp_path / "sweep.png")
        b.click("#hmx-tab-neurons")
        opened = _panel(b)
        assert opened["sum"] == pytest.approx(_grid_sum(data, cells[i]["state"], 0), rel=1e-3)
        assert opened["sum"] != pytest.approx(_grid_sum(data, 0, 0), rel=1e-3)
        assert b.console_errors() == []


# --------------------------------------------------------------------------- the command
def test_explore_command_writes_the_page_and_refuses_bad_input(tmp_path, capsys, small):
    from hooked_mlp import save
    from hooked_mlp.cli import main

    ckpt = tmp_path / "small.safetensors"
    save(small, ckpt)
    assert main(["explore", str(ckpt), "--out", str(tmp_path / "E")]) == 0
    html = (tmp_path / "E" / "explorer.html").read_text()
    assert "Explorer: small.safetensors" in html and "hooked-mlp explore" in html
    assert "explorer.html (" in capsys.readouterr().out
    # the page replaces its own earlier page, never the folder of its input or anything else
    assert main(["explore", str(ckpt), "--out", str(tmp_path / "E")]) == 0
    for argv, words in (
            (["explore", str(tmp_path / "missing"), "--out", str(tmp_path / "F")],
             "no such file or folder"),
            (["explore", str(ckpt), "--out", str(tmp_path)], "lies inside the output folder"),
            (["explore", str(ckpt), "--seed", "3", "--out", str(tmp_path / "F")],
             "one checkpoint"),
            (["explore", "--max-cells", "0"], "--max-cells"),
            (["explore", str(tmp_path / "E"), "--out", str(tmp_path / "F")],
             "holds no hooked-mlp model")):
        assert main(argv) != 0, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, (argv, err)
    assert not (tmp_path / "F").exists()


# --------------------------------------------------------------------------- cached measures
def _page_data(path):
    import json
    import re

    return json.loads(re.search(r'<script type="application/json" id="explorer-data">(.*?)'
                                r'</script>', path.read_text(), re.S).group(1))


def test_a_series_page_takes_the_measures_cached_beside_its_file(tmp_path, monkeypatch):
    """A series read from `X.safetensors` takes its measures from `X.dynamics.json` when that
    cache was written for that very file: the page holds the same numbers as one measured
    afresh, without measuring; a cache of another file is not used."""
    import analyses.dynamics
    from analyses.dynamics import dynamics
    from analyses.experiments.formation import write_measures_cache
    from analyses.pages.explorer import cached_measures, write_explorer_page
    from hooked_mlp import TrainConfig, load_snapshots, train
    from hooked_mlp.files.layout import PRETRAINED_DIR, SHIPPED_SERIES
    from hooked_mlp.files.series import write_series

    model, _ = train(MLPConfig(p=11, d_hidden=12), TrainConfig(epochs=30, lr=0.01),
                     snapshots="0,10,30", progress=False, threads=1)
    path = tmp_path / "snaps.safetensors"
    write_series(path, model.train_info.snapshots)
    series = load_snapshots(path)
    fresh = _page_data(write_explorer_page(series, tmp_path / "fresh", inputs=[path]))
    write_measures_cache(path, dynamics(series), tmp_path / "snaps.dynamics.json")
    assert cached_measures(series, [path]) is not None

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured although the cache fits")

    monkeypatch.setattr(analyses.dynamics, "dynamics", no_measuring)
    cached = _page_data(write_explorer_page(series, tmp_path / "cached", inputs=[path]))
    assert cached["curves"]["epochs"] == fresh["curves"]["epochs"] == [0, 10, 30]
    for name, values in fresh["curves"]["measures"].items():
        assert cached["curves"]["measures"][name] == pytest.approx(values, abs=1e-5,
                                                                    nan_ok=True), name
    assert cached["states"] == fresh["states"]
    # a cache written for another file (or none beside it) is not used
    other = tmp_path / "other.safetensors"
    write_series(other, model.train_info.snapshots, dtype="float16")
    (tmp_path / "other.dynamics.json").write_bytes((tmp_path / "snaps.dynamics.json").read_bytes())
    assert cached_measures(load_snapshots(other), [other]) is None
    assert cached_measures(series, [tmp_path]) is None and cached_measures(model, [path]) is None
    # the shipped series' cache is found beside it
    shipped = PRETRAINED_DIR / SHIPPED_SERIES
    d = cached_measures(load_snapshots(shipped), [shipped])
    assert d is not None and len(d.epochs) == 33


def test_the_page_is_gathered_on_the_threads_asked_and_torch_keeps_its_own(small, tmp_path,
                                                                        monkeypatch):
    import analyses.pages.explorer as page_module

    seen = []
    real = page_module.gather

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(page_module, "gather", spy)
    before = torch.get_num_threads()
    page_module.write_explorer_page(small, tmp_path / "E")
    page_module.write_explorer_page(small, tmp_path / "E", threads=None)
    assert seen == [1, before] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be an integer"):
        page_module.write_explorer_page(small, tmp_path / "F", threads=0)
    assert not (tmp_path / "F").exists()


def test_a_sweep_over_p_gives_each_cell_its_own_p_and_accuracy(tmp_path):
    """Cells whose p differs from the header's carry their own p and labels: each cell's
    accuracy is scored (in the data and by the page itself), not n/a."""
    from analyses.explorer import gather
    from analyses.pages.explorer import write_explorer_page
    from hooked_mlp import TrainConfig
    from hooked_mlp.data import all_pairs, labels_of, valid_mask
    from hooked_mlp.jobs import sweep

    folder = tmp_path / "S"
    sweep({"p": [5, 7]}, model=MLPConfig(p=5, d_hidden=8),
          recipe=TrainConfig(epochs=5, batch_size=4096), out=folder, progress=False, page=False)
    data = gather(folder)
    assert data["p"] == 5 and [c["label"] for c in data["sweep"]["cells"]] == ["p=5", "p=7"]
    first, second = data["states"]
    assert "labels" not in first and "p" not in first
    assert second["p"] == 7 and second["labels"] == labels_of(
        all_pairs(7), MLPConfig(p=7)).masked_fill(~valid_mask(MLPConfig(p=7)), -1).tolist()
    assert 0 <= first["acc"] <= 1 and 0 <= second["acc"] <= 1
    from _browser import Browser, browser_available

    if not browser_available():
        return
    page = write_explorer_page(folder, tmp_path / "E")
    with Browser() as b:
        _open(b, page)
        b.click('#hmx-phase rect[data-cell="1"]')
        b.wait_for("document.querySelector('#hmx').dataset.state === '1'")
        b.click("#hmx-tab-patching")
        acc = b.wait_for("document.querySelector('#hmx-patch') && "
                         "document.querySelector('#hmx-patch').dataset.acc")
        assert float(acc) == pytest.approx(second["acc"], abs=1e-5)
        b.click("#hmx-tab-logits")
        assert b.js("return document.querySelector('#hmx-a').max") == "6"
        assert b.console_errors() == []
