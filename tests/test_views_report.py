"""Figures, offline circuitsvis views, and the report (rendered in a real headless browser)."""

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _browser import require_chromium

from analyses.activations import activation_grids
from analyses.cosine_fit import fit_neurons
from analyses.pages.report import run_report
from analyses.pages.views import save_views_page, views_page
from analyses.views import (
    CircuitsVisView,
    bundle_script,
    figure_png,
    neuron_grid_view,
    plot_neuron_fit,
    top_inputs_view,
)
from hooked_mlp.cli import main

PNG = b"\x89PNG\r\n\x1a\n"

# the dictionaries section at a test's budget (the report's own: 150 steps of sizes 100, 200)
SMALL_DICTIONARIES = {"sizes": (16, 32), "steps": 20, "k": 8}


def _dump_dom(exe: str, page: Path, tmp_path: Path, budget_ms: int) -> str:
    """The DOM of `page` after `budget_ms` of virtual time in headless Chromium, offline."""
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
           "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}",
           f"--virtual-time-budget={budget_ms}", "--dump-dom", page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180).stdout


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return run_report(out, progress=False, synthetic_seeds=range(2), n_orders_scale=0.2,
                      dictionary_options=SMALL_DICTIONARIES)


def test_figures_are_png(shipped):
    fits = fit_neurons(shipped, [0, 1, 2])
    png = figure_png(plot_neuron_fit(shipped, fits, 1))
    assert png.startswith(PNG) and len(png) > 10_000
    with pytest.raises(ValueError, match="neuron must lie in \\[0, 99\\]"):
        plot_neuron_fit(shipped, fits, 100)
    with pytest.raises(ValueError, match="neuron 50 has no fit in `fits`"):
        plot_neuron_fit(shipped, fits, 50)


def test_circuitsvis_views_inline_the_bundle_once(shipped, tmp_path):
    grids = activation_grids(shipped, [3, 9])
    grid = neuron_grid_view(shipped, 3, grids)
    assert grid.component == "AttentionPattern"
    att = grid.props["attention"]
    assert len(att) == 113 and len(att[0]) == 113
    assert max(max(r) for r in att) == 1.0 and min(min(r) for r in att) >= 0.0
    top = top_inputs_view(shipped, [3, 9], k=5, grids=grids)
    assert top.component == "TopkTokens"
    assert len(top.props["topkVals"][0][0]) == 5 and len(top.props["topkVals"][0][0][0]) == 2
    best = top.props["topkIdxs"][0][0][0][0]  # the pair exciting neuron 3 most
    assert float(grids.grids[0].reshape(-1)[best]) == float(grids.grids[0].max())
    page = views_page([grid, top])
    assert page.count("var CircuitsVis=") == 1 and page.count("CircuitsVis.render(") == 2
    assert "unpkg.com" not in page and "</script" not in bundle_script()[8:-9]
    path = save_views_page([grid], tmp_path / "v.html")
    assert path.read_text().startswith("<!doctype html>")
    assert '<meta name="generator" content="hooked-mlp views page">' in path.read_text()[:4096]
    with pytest.raises(ValueError, match="k must be a positive integer"):
        top_inputs_view(shipped, [3], k=0)


def test_views_page_escapes_its_text_and_replaces_only_a_views_page(tmp_path):
    crafted = "<img src=x onerror=alert(1)> & co"
    view = CircuitsVisView("TopkTokens", {"tokens": [["</script><b>x</b>"]]}, title=crafted)
    page = views_page([view], title=crafted)
    # escaped in the <title>, the heading and the view's title; the props stay inside their JSON
    assert crafted not in page and page.count(html.escape(crafted, quote=False)) == 3
    assert "</script><b>" not in page
    assert page.count('id="cv-0"') == 1 and page.count("CircuitsVis.render(") == 1
    with pytest.raises(TypeError, match=r"views\[0\] must be an analyses.views.CircuitsVisView"):
        views_page(["<b>not a view</b>"])
    with pytest.raises(TypeError, match="title must be a string"):
        views_page([view], title=None)
    path = save_views_page([view], tmp_path / "v.html", title="first")
    assert save_views_page([view], path, title="second") == path  # its own page: replaced
    assert "<title>second</title>" in path.read_text()
    other = tmp_path / "notes.html"
    other.write_text("<html>my notes</html>")
    with pytest.raises(ValueError, match="exists and is not a hooked-mlp views page"):
        save_views_page([view], other)
    assert other.read_text() == "<html>my notes</html>"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["notes.html", "v.html"]


@pytest.mark.parametrize("name", ["views_page", "save_views_page"])
def test_the_old_views_page_names_still_import_with_one_warning(name):
    code = ("import warnings, analyses.views as v, analyses.pages.views as new\n"
            "warnings.simplefilter('always')\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            f"    a = v.{name}; b = v.{name}\n"
            "print(len(w)); print(w[0].message if w else ''); "
            f"print(a is b is new.{name})\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == "1" and f"analyses.pages.views.{name}" in out[1] and out[2] == "True", out


@pytest.mark.browser
def test_views_page_renders_offline_in_headless_chromium(shipped, tmp_path):
    exe = require_chromium()
    grids = activation_grids(shipped, [3, 9])
    path = save_views_page([neuron_grid_view(shipped, 3, grids),
                            top_inputs_view(shipped, [3, 9], k=5, grids=grids)],
                           tmp_path / "views.html")
    dom = _dump_dom(exe, path, tmp_path, budget_ms=10000)
    status = dict(re.findall(r'data-([a-z-]+)="(\d+)"', dom))
    assert status.get("views-total") == "2" and status.get("views-rendered") == "2", status
    assert "<canvas" in re.search(r'id="cv-0">(.*?)</canvas>', dom, flags=re.S).group(1)
    assert re.search(r">3\+35<", dom[dom.index('id="cv-1"'):])  # neuron 3's top pair


def test_report_files_and_numbers(report):
    html = report.html.read_text()
    data = json.loads(report.summary.read_text())
    assert data == json.loads(json.dumps(report.data))  # the file holds what was computed
    claims = {c["claim"][:2]: c for c in data["claims"]}
    assert set(claims) >= {"1.", "2.", "3.", "4.", "5.", "6."}
    agg = data["aggregate"]
    assert agg["val_acc"]["n"] == 5 and agg["val_acc"]["min"] >= 0.99
    assert agg["fits"]["frac_k_all_equal"]["mean"] >= 0.9
    assert 0.5 < agg["replacement_at_90"]["mean"] < 1.0
    assert agg["synthetic"]["512"]["mean"] >= 0.999
    assert html.count("var CircuitsVis=") == 1
    # the study's seven figures, and one for each figure a registered probe returns
    study = "training|activations|neuron_fit|fit_scatter|replacement|synthetic|frequencies"
    assert len(re.findall(rf'<img class="fig" id="fig-(?:{study})"', html)) == 7
    # the sections of issue 21: frequency ablation and He et al. 2026, with their figures
    for section, n_figures in (("frequency_ablation", 2), ("he2026", 2)):
        assert html.count(f'<section id="{section}">') == 1
        assert len(re.findall(rf'<img class="fig" id="fig-{section}-', html)) == n_figures
    assert set(data["frequency_ablation"]) == {f"seed {s}" for s in range(5)}
    assert all(r["acc"] >= 0.99 for r in data["frequency_ablation"].values())
    for r in data["frequency_ablation"].values():  # the shipped models spread over ~40
        assert min(r["loss_without"]) > r["loss"]  # frequencies: each one's removal costs loss,
        assert r["acc_keep"][0] < 0.1 and r["acc_keep"][-1] >= 0.99  # none computes it alone
    assert data["he2026"]["labels"] == [f"seed {s}" for s in range(5)]
    # the dictionaries section at the budget passed: SAEs and transcoders, three figures
    assert html.count('<section id="dictionaries">') == 1
    assert len(re.findall(r'<img class="fig" id="fig-dictionaries-', html)) == 3
    d = data["dictionaries"]
    assert d["settings"]["steps"] == 20 and d["settings"]["sizes"] == [16, 32]
    assert d["names"] == ["l1 16", "l1 32", "topk 16", "topk 32", "transcoder topk 16",
                          "transcoder topk 32"]
    assert d["summary"]["transcoder_best"].startswith("transcoder topk")
    assert d["summary"]["neurons"]["fraction_logits_on_own_frequency"] >= 0.95
    assert data["sections_failed"] == {}
    # the explorer page of the first model beside the report, linked from it
    assert 'id="explorer-link" href="explorer.html"' in html
    explorer = (report.html.parent / "explorer.html").read_text()
    assert '<meta name="generator" content="hooked-mlp explorer page">' in explorer
    assert "seed 0" in explorer
    # "What each neuron computes" (analyses.pages.forms): its figure and its numbers
    assert html.count('id="fig-forms-replacement"') == 1
    forms = data["neuron_forms"]
    assert forms["clock_pizza"]["trained_verdicts"] == ["clock"] * 5
    assert forms["replacement"]["by_form"]["best"]["at_1.0"]["mean"] > forms["replacement"][
        "by_form"]["cosine"]["at_1.0"]["mean"]
    assert len(re.findall(r'<img class="fig" id="fig-probe-frequencies', html)) == 1
    assert set(data["probes"]) >= {"frequencies", "cosine_fits", "dead_neurons"}
    assert not re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", html)  # nothing to fetch
    for name in ("training", "replacement", "synthetic", "neuron_fit"):
        assert (report.html.parent / "figures" / f"{name}.png").read_bytes().startswith(PNG)
    assert not list(report.html.parent.glob(".*.tmp"))


@pytest.mark.browser
def test_report_renders_offline_in_headless_chromium(report, tmp_path):
    exe = require_chromium()
    dom = _dump_dom(exe, report.html, tmp_path, budget_ms=20000)
    status = dict(re.findall(r'data-([a-z-]+)="(\d+)"', dom))
    total = len(re.findall(r'<img class="fig"', report.html.read_text()))
    assert status.get("figures-total") == str(total) == status.get("figures-loaded"), status
    assert status.get("views-total") == "4" and status.get("views-rendered") == "4", status
    # the grid views drew their canvas; the top-inputs view lists pairs such as "12+101"
    for i in range(3):
        view = re.search(rf'id="cv-{i}">(.*?)</canvas>', dom, flags=re.S)
        assert view and "<canvas" in view.group(1)
    top = dom[dom.index('id="cv-3"'):]
    assert re.search(r">\d+\+\d+<", top)


def test_cli_report_on_a_checkpoint_and_on_new_seeds(tmp_path, capsys):
    from hooked_mlp.files.checkpoints import pretrained_path

    code = main(["report", "--model", str(pretrained_path(1)), "--out", str(tmp_path / "r1"),
                 "--no-progress", "--dictionary-steps", "5"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "report.html" in out and (tmp_path / "r1" / "summary.json").exists()
    data = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert data["models"] == ["seed-1"] and data["aggregate"]["val_acc"]["n"] == 1
    assert data["dictionaries"]["settings"]["steps"] == 5
    code = main(["report", "--seeds", "0-1", "--epochs", "2", "--out", str(tmp_path / "r2"),
                 "--no-progress", "--dictionary-steps", "5"])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert (tmp_path / "r2" / "models" / "seed-1.safetensors").exists()
    data = json.loads((tmp_path / "r2" / "summary.json").read_text())
    assert data["aggregate"]["val_acc"]["mean"] < 0.5  # 2 epochs: a real, untrained-ish result
    code = main(["report", "--epochs", "3", "--out", str(tmp_path / "r3")])
    assert code == 2 and "--epochs applies only with --seeds" in capsys.readouterr().err
    code = main(["report", "--dictionary-steps", "0", "--out", str(tmp_path / "r3")])
    err = capsys.readouterr().err
    assert code == 2 and "--dictionary-steps" in err and len(err.strip().splitlines()) == 1
