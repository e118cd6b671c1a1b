"""The one page writer and its output-folder rule (`analyses/pages/writer.py`)."""

from __future__ import annotations

import io
import json

import pytest

from analyses.pages.render import environment
from analyses.pages.writer import (
    PageKind,
    mark_png,
    page_folder,
    png_owner,
    safe_name,
    write_figures,
    write_page,
    write_page_file,
)

KIND = PageKind("demo", files=("demo.html", "demo.json"), folders={"figures": "*.png"},
                marker=("demo.json", ("numbers",)))
ONE = PageKind("single", files=("single.html",))


def _html(kind: str) -> str:
    return environment().from_string('{% extends "base.html.j2" %}').render(kind=kind)


def _png() -> bytes:
    from matplotlib.figure import Figure

    buf = io.BytesIO()
    Figure(figsize=(1, 1)).savefig(buf, format="png", dpi=20)
    return buf.getvalue()


def _files(n: int) -> dict[str, str | bytes]:
    return {"demo.html": _html("demo"), "demo.json": json.dumps({"numbers": n})}


def test_a_folder_page_is_written_and_replaces_only_an_earlier_page(tmp_path):
    out = tmp_path / "page"
    write_page(out, KIND, _files(1) | {"figures/a.png": _png()})
    assert sorted(p.name for p in out.iterdir()) == ["demo.html", "demo.json", "figures"]
    write_page(out, KIND, _files(2))  # replaced whole: the old figure is gone
    assert json.loads((out / "demo.json").read_text())["numbers"] == 2
    assert not (out / "figures").exists()

    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt"):
        write_page(out, KIND, _files(3))
    assert (out / "notes.txt").read_text() == "mine"


def test_below_the_top_level_and_links_are_checked(tmp_path):
    out = tmp_path / "page"
    write_page(out, KIND, _files(1) | {"figures/a.png": _png()})
    (out / "figures" / "data.csv").write_text("x")
    with pytest.raises(ValueError, match="figures/data.csv"):
        write_page(out, KIND, _files(2))
    (out / "figures" / "data.csv").unlink()
    (out / "figures" / "b.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(ValueError, match="figures/b.png"):
        write_page(out, KIND, _files(2))


def test_a_folder_with_the_names_but_no_marker_is_refused(tmp_path):
    out = tmp_path / "page"
    out.mkdir()
    (out / "demo.json").write_text('{"other": 1}')
    with pytest.raises(ValueError, match="not a hooked-mlp demo page"):
        write_page(out, KIND, _files(1))


def test_never_a_folder_holding_an_input(tmp_path):
    out = tmp_path / "page"
    out.mkdir()
    model = out / "model.safetensors"
    model.write_bytes(b"x")
    with pytest.raises(ValueError, match="lies inside the output folder"):
        write_page(out, KIND, _files(1), inputs=[model])
    assert model.read_bytes() == b"x"


def test_a_failure_in_the_body_leaves_the_old_page_and_comes_out_as_raised(tmp_path):
    out = tmp_path / "page"
    write_page(out, KIND, _files(1))
    with pytest.raises(FileNotFoundError, match="no such model") as info, page_folder(
            out, KIND) as page:
        page.write("demo.html", _html("demo"))
        raise FileNotFoundError(2, "no such model")
    assert "writing" not in str(info.value)  # not dressed up as a failure to write the page
    assert json.loads((out / "demo.json").read_text())["numbers"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["page"]  # no temporary folder left


def test_a_page_writes_only_the_names_of_its_kind(tmp_path):
    with pytest.raises(ValueError, match="not 'other.txt'"), page_folder(tmp_path / "p",
                                                                       KIND) as page:
        page.write("other.txt", "x")
    with pytest.raises(ValueError, match="not '../x.png'"), page_folder(tmp_path / "p",
                                                                      KIND) as page:
        page.write("../x.png", b"x")
    with pytest.raises(RuntimeError, match="would not be recognised"), page_folder(
            tmp_path / "p", KIND) as page:
        page.write("demo.html", _html("demo"))  # no marker written
    assert not (tmp_path / "p").exists()


def test_a_one_file_page_replaces_only_a_page_of_its_kind(tmp_path):
    path = tmp_path / "sweep" / "single.html"
    write_page_file(path, ONE, _html("single"))
    write_page_file(path, ONE, _html("single"))
    assert ONE.generator in path.read_text()
    other = tmp_path / "other.html"
    other.write_text("<html>someone's page</html>")
    with pytest.raises(ValueError, match="not a hooked-mlp single page"):
        write_page_file(other, ONE, _html("single"))
    with pytest.raises(ValueError, match="not a hooked-mlp other page"):  # another kind's
        write_page_file(path, PageKind("other", files=("x.html",)), _html("other"))
    with pytest.raises(ValueError, match="generator meta"):
        write_page_file(tmp_path / "new.html", ONE, "<html></html>")
    assert other.read_text() == "<html>someone's page</html>"


def test_figure_names_are_made_safe_and_foreign_files_are_kept(tmp_path):
    assert safe_name("../../x") == "x" and safe_name("a b/c") == "a_b_c"
    assert safe_name("...") == "figure" and safe_name("\x1b[2Jx") == "2Jx"
    out = tmp_path / "figs"
    paths = write_figures(out, {"../../x": _png(), "a/b": _png(), "a b": _png()}, "probe demo",
                          prefix="demo")
    assert [p.name for p in paths] == ["demo-x.png", "demo-a_b.png", "demo-a_b-2.png"]
    assert all(p.parent == out for p in paths)
    assert not (tmp_path / "x.png").exists()
    assert png_owner(paths[0]) == "probe demo"
    write_figures(out, {"../../x": _png()}, "probe demo", prefix="demo")  # its own: replaced

    foreign = out / "demo-y.png"
    foreign.write_bytes(_png())  # a PNG, but not written by this command
    with pytest.raises(ValueError, match="not written by probe demo"):
        write_figures(out, {"x": _png(), "y": _png()}, "probe demo", prefix="demo")
    assert png_owner(foreign) is None


def test_a_marked_png_still_decodes():
    from matplotlib.image import imread

    png = mark_png(_png(), "probe demo")
    assert imread(io.BytesIO(png)).shape[:2] == (20, 20)
    with pytest.raises(ValueError, match="PNG"):
        mark_png(b"GIF89a", "x")
