"""The one Jinja2 environment pages render through: autoescaped, strict about names, and its
filters (`analyses/pages/render.py`)."""

from __future__ import annotations

import jinja2
import pytest

from analyses.pages.render import environment, fixed, num, pct, png_uri


def _page(body: str, **context) -> str:
    source = ('{% extends "base.html.j2" %}{% import "macros.html.j2" as m %}'
              "{% block content %}" + body + "{% endblock %}")
    return environment().from_string(source).render(kind="test", **context)


def test_values_are_escaped_in_text_and_tables():
    html = _page("<p>{{ name }}</p>{{ m.table(['a'], [[name]]) }}", name="<script>x</script>")
    assert "<script>x</script>" not in html
    assert html.count("&lt;script&gt;x&lt;/script&gt;") == 2
    assert '<meta name="generator" content="hooked-mlp test page">' in html


def test_an_unknown_name_is_an_error_not_an_empty_string():
    with pytest.raises(jinja2.UndefinedError):
        _page("{{ missing }}")


def test_filters():
    assert pct(0.9731) == "97.3 %" and pct(None) == "n/a" and pct(float("nan")) == "n/a"
    assert num(3) == "3" and num(0.000123456) == "0.000123" and num(None) == "n/a"
    assert fixed(1.005, 1) == "1.0" and fixed(float("inf")) == "n/a"
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 4
    assert png_uri(png).startswith("data:image/png;base64,iVBORw0KGgo")
    with pytest.raises(TypeError, match="PNG"):
        png_uri(b"GIF89a")
