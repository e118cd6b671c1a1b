"""Views in Jupyter: `_repr_html_` (the circuitsvis bundle sent once), axes named a and b, figures
that display without pyplot; the notebook HTML rendered in headless Chromium as a notebook
frontend inserts it."""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

import pytest
from _browser import require_chromium
from matplotlib.figure import Figure

from analyses import views
from analyses.activations import activation_grids
from analyses.cosine_fit import fit_neurons
from analyses.pages.views import views_page
from analyses.views import (
    READY_EVENT,
    CircuitsVisView,
    NotebookFigure,
    neuron_grid_view,
    notebook_setup,
    plot_activation_grids,
    plot_neuron_fit,
    top_inputs_view,
)

PNG = b"\x89PNG\r\n\x1a\n"
BUNDLE = "var CircuitsVis="  # the start of circuitsvis's bundle
VIEW_ID = re.compile(r'class="cv-view"[^>]*\bid="(hm-cv-[0-9a-f]{32})"')
NEURON = 3


@pytest.fixture
def fresh_notebook(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that has sent nothing to the notebook yet."""
    monkeypatch.setattr(views, "_NOTEBOOK", views._NotebookState())


@pytest.fixture(scope="module")
def grids(shipped):
    return activation_grids(shipped, [NEURON, 9])


@pytest.fixture(scope="module")
def grid(shipped, grids) -> CircuitsVisView:
    return neuron_grid_view(shipped, NEURON, grids)


@pytest.fixture(scope="module")
def top(shipped, grids) -> CircuitsVisView:
    return top_inputs_view(shipped, [NEURON, 9], k=5, grids=grids)


def test_the_bundle_goes_with_the_first_view_only(fresh_notebook, grid, top):
    first, second, again = grid._repr_html_(), top._repr_html_(), grid._repr_html_()
    assert first.count(BUNDLE) == 1 and "if (!window.CircuitsVis)" in first
    assert first.count(f"new Event({json.dumps(READY_EVENT)})") == 1
    assert BUNDLE not in second and BUNDLE not in again
    assert len(second) < 200_000 < 1_000_000 < len(first)
    ids = [VIEW_ID.findall(h) for h in (first, second, again)]
    assert all(len(i) == 1 for i in ids) and len({i[0] for i in ids}) == 3  # one fresh id each
    for (div_id,), h in zip(ids, (first, second, again), strict=True):
        assert h.count(json.dumps(div_id)) >= 1 and f'id="{div_id}-note"' in h
    # each view waits for the bundle, then says how to load it; without script, a static line
    assert "notebook_setup()" in second and "this page ran no script" in second
    assert "cv.TopkTokens" in second and "cv.AttentionPattern" in again
    bundle = re.search(r"<script>if \(!window\.CircuitsVis\).*?</script>", first, flags=re.S)
    assert bundle and BUNDLE in bundle.group(0)  # its script is not closed early by the bundle
    assert READY_EVENT in bundle.group(0) and "unpkg.com" not in first


def test_notebook_setup_loads_the_bundle_on_demand(fresh_notebook, grid, top):
    setup = notebook_setup()
    assert "display it in a notebook" in repr(setup)
    loaded = setup._repr_html_()
    assert loaded.count(BUNDLE) == 1 and "if (!window.CircuitsVis)" in loaded
    assert BUNDLE not in grid._repr_html_()  # the setup cell already sent it
    assert notebook_setup()._repr_html_().count(BUNDLE) == 1  # asked for: sent again
    notebook_setup(every_view=True)  # frontends that isolate each output
    assert grid._repr_html_().count(BUNDLE) == 1 and top._repr_html_().count(BUNDLE) == 1
    notebook_setup(every_view=False)
    assert BUNDLE not in top._repr_html_()
    assert top.notebook_html(include_bundle=True).count(BUNDLE) == 1


def test_the_grid_names_its_axes_a_and_b(shipped, grid, top):
    assert grid.axis_labels == ("a", "b") and grid.props["showAxisLabels"] is False
    p = shipped.cfg.p
    for h in (grid.fragment("cv-0"), grid.notebook_html(include_bundle=False)):
        rows = re.search(r'class="hm-axis-rows".*?</div>', h).group(0)
        cols = re.search(r'class="hm-axis-cols".*?</div>', h).group(0)
        assert re.findall(r"<span[^>]*>([^<]*)</span>", rows) == ["0", "a", str(p - 1)]
        assert re.findall(r"<span[^>]*>([^<]*)</span>", cols) == ["0", "b", str(p - 1)]
        assert "hm-readout" in h and "Source Token" not in h and "Destination" not in h
    assert top.axis_labels is None and "hm-axes" not in top.fragment("cv-1")
    page = views_page([grid, top])  # the report's page: unchanged apart from the frame
    assert page.count(BUNDLE) == 1 and page.count("CircuitsVis.render(") == 2
    assert re.search(r'<div class="cv-view"[^>]*id="cv-0"></div>', page)
    with pytest.raises(ValueError, match="div_id must be"):
        grid.fragment("0-starts-with-a-digit")
    with pytest.raises(ValueError, match="component must be"):
        CircuitsVisView("Topk<Tokens", {})
    assert len(repr(grid)) < 300 and "AttentionPattern" in repr(grid)  # text/plain stays short


def test_figures_display_in_jupyter_without_pyplot(shipped, grids):
    fits = fit_neurons(shipped, [NEURON])
    for fig in (plot_neuron_fit(shipped, fits, NEURON), plot_activation_grids(grids)):
        assert isinstance(fig, Figure) and isinstance(fig, NotebookFigure)
        png = fig._repr_png_()
        assert png.startswith(PNG) and len(png) > 5_000


# --------------------------------------------------------------------------- in a browser
# Before anything draws: record the text drawn on each canvas, by the id of its view.
SPY = """<script>
window.drawn = {};
(function () {
  var fillText = CanvasRenderingContext2D.prototype.fillText;
  CanvasRenderingContext2D.prototype.fillText = function (text) {
    var host = this.canvas.closest('[id]'), key = host ? host.id : '';
    (window.drawn[key] = window.drawn[key] || []).push(String(text));
    return fillText.apply(this, arguments);
  };
})();
</script>"""

# Insert an output as JupyterLab, VS Code and the classic notebook do: set it as innerHTML, then
# run its scripts (innerHTML runs none) in order, each as a fresh <script> element.
INSERT = """<script>
function insertOutput(text) {
  var box = document.createElement('div');
  box.className = 'jp-output';
  box.innerHTML = text;
  document.getElementById('notebook').appendChild(box);
  box.querySelectorAll('script').forEach(function (old) {
    var s = document.createElement('script');
    s.text = old.text;
    old.parentNode.replaceChild(s, old);
  });
}
function report(result) {
  var pre = document.createElement('pre');
  pre.id = 'result';
  pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
}
</script>"""


def _js_list(items: list[str]) -> str:
    return json.dumps(items).replace("<", "\\u003c")


def _render(exe: str, tmp_path: Path, name: str, body: str) -> tuple[dict, str]:
    page = tmp_path / f"{name}.html"
    page.write_text("<!doctype html><html><head><meta charset='utf-8'>" + SPY + INSERT +
                    "</head><body><div id='notebook'></div>" + body + "</body></html>")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
           "--disable-extensions", f"--user-data-dir={tmp_path / ('profile-' + name)}",
           "--window-size=1000,1400", "--virtual-time-budget=20000", "--dump-dom",
           page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=180).stdout
    found = re.search(r'<pre id="result">(.*?)</pre>', dom, flags=re.S)
    assert found, dom[-3000:]
    return json.loads(html.unescape(found.group(1))), dom


def _a_lopsided_cell(grid: CircuitsVisView) -> tuple[int, int]:
    """A bright cell whose mirror images (a flipped, a and b swapped) are dark: drawing it at the
    right place checks the orientation of the grid."""
    m = grid.props["attention"]
    n = len(m)
    cells = sorted(((v, a, b) for a, row in enumerate(m) for b, v in enumerate(row)), reverse=True)
    for v, a, b in cells:
        if v < 0.8:
            break
        if m[n - 1 - a][b] <= 0.3 and m[b][a] <= 0.3 and m[n - 1 - b][n - 1 - a] <= 0.3:
            return a, b
    raise AssertionError("no lopsided bright cell in this grid")


@pytest.mark.browser
def test_notebook_views_render_in_headless_chromium(fresh_notebook, grid, top, tmp_path):
    exe = require_chromium()
    n = len(grid.props["tokens"])
    a, b = _a_lopsided_cell(grid)
    dark = next((i, j) for i in range(n) for j in range(n) if grid.props["attention"][i][j] == 0)
    # a view with circuitsvis's own axes, to show that the spy sees "Source Token" when drawn
    control = CircuitsVisView("AttentionPattern", {"tokens": ["x", "y"], "attention": [[1, 0],
                              [0.5, 0.5]], "maskUpperTri": False})
    outputs = [grid._repr_html_(), top._repr_html_(), control._repr_html_()]
    assert outputs[0].count(BUNDLE) == 1 and all(BUNDLE not in o for o in outputs[1:])
    ids = [VIEW_ID.search(o).group(1) for o in outputs]
    body = f"""<script>
var outputs = {_js_list(outputs)}, ids = {json.dumps(ids)}, n = {n};
outputs.forEach(function (o, i) {{ setTimeout(function () {{ insertOutput(o); }}, 10 * i); }});
function at(canvas, a, b) {{  // the centre of cell (a, b): row a from the top, column b
  var r = canvas.getBoundingClientRect();
  return [r.left + (b + 0.5) * r.width / n, r.top + (a + 0.5) * r.height / n, r];
}}
function pixel(canvas, xy) {{
  var r = xy[2], x = Math.floor((xy[0] - r.left) * canvas.width / r.width),
      y = Math.floor((xy[1] - r.top) * canvas.height / r.height);
  return Array.prototype.slice.call(canvas.getContext('2d').getImageData(x, y, 1, 1).data, 0, 3);
}}
setTimeout(function () {{
  var grid = document.getElementById(ids[0]), canvas = grid.querySelector('canvas'), hover = null;
  var bright = null, zero = null;
  if (canvas) {{
    var xy = at(canvas, {a}, {b});
    bright = pixel(canvas, xy);
    zero = pixel(canvas, at(canvas, {dark[0]}, {dark[1]}));
    canvas.dispatchEvent(new MouseEvent('mousemove', {{clientX: xy[0], clientY: xy[1],
                                                      bubbles: true}}));
    hover = document.getElementById(ids[0] + '-at').textContent;
  }}
  report({{
    canvases: ids.map(function (id) {{
      var e = document.getElementById(id); return e ? e.querySelectorAll('canvas').length : -1;
    }}),
    notes: document.querySelectorAll('.hm-cv-note').length,
    drawn: ids.map(function (id) {{ return window.drawn[id] || []; }}),
    text: document.getElementById('notebook').innerText,
    hover: hover, bright: bright, zero: zero
  }});
}}, 4000);
</script>"""
    result, dom = _render(exe, tmp_path, "notebook", body)
    assert result["canvases"] == [1, 0, 1], result["canvases"]  # TopkTokens draws a table
    assert result["notes"] == 0  # every view rendered and removed its waiting line
    assert re.search(r"\b\d+\+\d+\b", result["text"])  # the top-inputs view lists pairs
    grid_text, _, control_text = result["drawn"]
    assert "Source Token" in control_text and "Destination Token" in control_text
    assert not {"Source Token", "Destination Token"} & set(grid_text)
    assert "Source Token" not in result["text"] and "Destination Token" not in result["text"]
    visible = re.sub(r"<script\b.*?</script>", "", dom.split('<pre id="result">')[0],
                     flags=re.S)
    assert "Source Token" not in visible
    text = " ".join(result["text"].split())
    assert f"0 a {n - 1}" in text and f"0 b {n - 1}" in text  # the frame: a down, b along
    value = grid.props["attention"][a][b]
    assert result["hover"] == f"a = {a}, b = {b}: {value:g}", result["hover"]
    red, green, blue = result["bright"]
    assert blue > 200 and red < 110 and green < 110, result["bright"]  # drawn where expected
    assert min(result["zero"]) > 235, result["zero"]  # a zero cell is white


@pytest.mark.browser
def test_a_view_without_the_bundle_says_so_then_renders_when_it_arrives(fresh_notebook, top,
                                                                          tmp_path):
    exe = require_chromium()
    view = top.notebook_html(include_bundle=False)  # e.g. the bundle's output was cleared
    (div_id,) = VIEW_ID.findall(view)
    setup = notebook_setup()._repr_html_()
    body = f"""<script>
var id = {json.dumps(div_id)}, hint = null, before = null;
insertOutput({_js_list([view])}[0]);
setTimeout(function () {{
  hint = document.getElementById(id + '-note').textContent;
  before = document.getElementById(id).children.length;
  insertOutput({_js_list([setup])}[0]);  // the user runs notebook_setup() in a cell
}}, 3000);
setTimeout(function () {{
  report({{hint: hint, before: before, after: document.getElementById(id).children.length,
           note: !!document.getElementById(id + '-note'),
           setup: document.querySelector('.hm-cv-setup').textContent,
           text: document.getElementById('notebook').innerText}});
}}, 5000);
</script>"""
    result, _ = _render(exe, tmp_path, "late", body)
    assert "circuitsvis is not loaded" in result["hint"] and "notebook_setup()" in result["hint"]
    assert result["before"] == 0 and result["after"] > 0 and not result["note"]
    assert "circuitsvis is loaded" in result["setup"]
    assert re.search(r"\b\d+\+\d+\b", result["text"])


def test_the_snippets_escape_what_they_show():
    """Titles, axis names and tokens are escaped in the HTML; in the scripts they stay JSON."""
    crafted = "<b>x</b>&'\""
    view = CircuitsVisView("AttentionPattern", {"tokens": [crafted, "</script>"],
                                                "attention": [[1.0, 0.0], [0.0, 1.0]]},
                           title=crafted, axis_labels=(crafted, "c<"))
    for h in (view.fragment("cv-0"), view.notebook_html(include_bundle=False)):
        assert "<b>x</b>" not in h and "</script>\"" not in h and "c<" not in h
        assert "&lt;b&gt;x&lt;/b&gt;&amp;" in h  # the axis name and the first token
        assert h.count("</script>") == 1  # the view's own script only
        props = re.search(r"props = (\{.*?\})[;,]", h).group(1)
        assert json.loads(props) == view.props  # the props as given, readable as JSON
    title = view.notebook_html(include_bundle=False).split("hm-cv-title")[1]
    assert title.split("</div>")[0].endswith("&lt;b&gt;x&lt;/b&gt;&amp;&#39;&#34;")
    img = views.img_html(PNG + b"rest", crafted, name="a&b", caption=True)
    assert img.count("&lt;b&gt;x&lt;/b&gt;") == 2 and 'id="fig-a&amp;b"' in img
    assert img.startswith("<figure><img class=\"fig\"") and img.endswith("</figcaption></figure>")
