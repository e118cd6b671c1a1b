"""tests/_browser.py, the chromedriver driver the page tests use: it opens a page the project's
writer wrote (the sweep page of a tiny sweep), reads its DOM, clicks, waits, takes a PNG, names
a missing element and a condition that never came true, and always stops its processes."""

import struct

import pytest
from _browser import Browser, BrowserError, require_browser


@pytest.fixture(scope="module")
def sweep_page(tmp_path_factory):
    from analyses.pages.sweep import write_sweep_page
    from hooked_mlp import MLPConfig, TrainConfig
    from hooked_mlp.jobs import sweep

    require_browser()
    out = tmp_path_factory.mktemp("sweep") / "S"
    sweep({"weight_decay": [0.1, 1.0]}, model=MLPConfig(p=7, d_hidden=8),
          recipe=TrainConfig(epochs=5, batch_size=4096), out=out, progress=False)
    return write_sweep_page(out)


def test_the_driver_reads_clicks_and_photographs_a_written_page(sweep_page, tmp_path):
    with Browser() as b:
        b.open(sweep_page)
        # the page's own load check: every figure decoded in the browser
        loaded = b.wait_for("document.body.dataset.figuresTotal && "
                            "document.body.dataset.figuresLoaded === "
                            "document.body.dataset.figuresTotal && "
                            "Number(document.body.dataset.figuresTotal)")
        assert loaded >= 2  # the phase diagram and the validation accuracy at least
        assert b.js("return document.querySelector('meta[name=generator]').content") == \
            "hooked-mlp sweep page"
        assert b.js("return document.querySelector('h1').textContent") == "Sweep: 2 of 2 runs"
        runs = b.js("return Array.from(document.querySelectorAll('#runs tr[data-run]'), "
                    "r => [r.dataset.run, r.children[1].textContent])")
        assert runs == [["0", "0.1"], ["1", "1"]]
        assert b.js("return arguments[0] * arguments[1].x", 3, {"x": 14}) == 42
        assert b.js("return innerWidth") == 1400
        # a click is a real pointer event on the element, scrolled into view first
        b.js("const r = document.querySelector('#runs tr[data-run=\"1\"]');"
             "r.addEventListener('click', e => { r.dataset.clicked = e.isTrusted; });")
        b.click('#runs tr[data-run="1"]')
        assert b.wait_for("document.querySelector('#runs tr[data-run=\"1\"]')"
                          ".dataset.clicked") == "true"
        png = b.screenshot(tmp_path / "sweep.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24])
        assert width == 1400 and 500 < height <= 1000
        with pytest.raises(BrowserError, match="no element matches '#no-such-thing'"):
            b.click("#no-such-thing")
        with pytest.raises(TimeoutError, match="window.never"):
            b.wait_for("window.never", timeout=0.2)
        with pytest.raises(FileNotFoundError, match="no such page file"):
            b.open(tmp_path)
        b.js("console.error('planted error')")
        assert any("planted error" in e for e in b.console_errors())


def test_the_driver_stops_chromedriver_even_when_the_block_raises():
    require_browser()
    with pytest.raises(RuntimeError, match="inside"), Browser() as b:
        driver = b._driver
        assert b.js("return 1 + 1") == 2
        raise RuntimeError("inside")
    assert driver.poll() is not None and b.session is None
    with pytest.raises(BrowserError, match="not started"):
        b.js("return 1")
