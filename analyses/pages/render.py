"""The one Jinja2 environment every page renders through, and the filters its templates use.

Templates live in `analyses/pages/templates/` (package data): `base.html.j2` is the one layout
(head, the one stylesheet `style.css` inlined, heading, meta line, content), `macros.html.j2`
holds the pieces pages share (`figure`, `table`, `note`, `pre`), `section.html.j2` frames a
report section, and each page or section has a template of its own. Autoescaping is on for
every `*.html.j2` (Jinja's default `select_autoescape()` would leave a `.j2` name unescaped, so
the extensions are named here) and undefined names are errors, so a template can neither print
an unescaped value nor silently miss one. Page code passes values, never HTML.
"""

from __future__ import annotations

import base64
import math
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

AUTOESCAPED = ("html", "htm", "xml", "html.j2")


def png_uri(png: bytes) -> str:
    """PNG bytes as a `data:` URI (figures are embedded, so a page opens with no network)."""
    if not isinstance(png, (bytes, bytearray)) or not bytes(png[:8]) == b"\x89PNG\r\n\x1a\n":
        raise TypeError("png_uri takes the bytes of a PNG image (analyses.views.figure_png)")
    return "data:image/png;base64," + base64.b64encode(bytes(png)).decode("ascii")


def _real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def pct(x: Any, digits: int = 1) -> str:
    """A share as a percentage (`0.9731` -> `97.3 %`); `n/a` for None or NaN."""
    return f"{100 * x:.{digits}f} %" if _real(x) else "n/a"


def num(x: Any, digits: int = 3) -> str:
    """A number with `digits` significant digits; `n/a` for None or NaN; integers as they are."""
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    return f"{x:.{digits}g}" if _real(x) else "n/a"


def fixed(x: Any, digits: int = 2) -> str:
    """A number with `digits` decimals; `n/a` for None or NaN."""
    return f"{x:.{digits}f}" if _real(x) else "n/a"


def now() -> str:
    """The time a page is written, in UTC (the one value on a page that no input decides)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The environment (templates from the package, autoescaped, strict about names)."""
    env = Environment(loader=PackageLoader("analyses.pages", "templates"),
                      autoescape=select_autoescape(AUTOESCAPED), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(png_uri=png_uri, pct=pct, num=num, fixed=fixed)
    from hooked_mlp import __version__

    env.globals.update(version=__version__)
    return env


def render(template: str, **context: Any) -> str:
    """The template `template` (a name under `templates/`) rendered with `context`."""
    return environment().get_template(template).render(**context)


def markup(html: str) -> Markup:
    """HTML that a page module produced from a template of its own (a rendered section, a
    circuitsvis view's fragment), marked safe so that an enclosing template inserts it as is.
    Never pass a value read from a model, a file or a user here: pass it to a template."""
    return Markup(html)


__all__ = ["environment", "fixed", "markup", "now", "num", "pct", "png_uri", "render"]
