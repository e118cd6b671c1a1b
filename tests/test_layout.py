"""The shape of the code: imports point one way, there is no import cycle, files stay readable,
and the names that moved in 0.3 still import (with one warning naming the new place)."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hooked_mlp", "analyses")

# the layers, lowest first: a module may import its own layer and those below it, never above.
# `hooked_mlp.files.format` (the one safetensors reader and writer, importing nothing of the
# project) and `hooked_mlp.text` belong to the core, which saves through them; `hooked_mlp.jobs`
# (whole jobs callable from Python: they compute and write pages) sits beside the CLI.
TOP = ("hooked_mlp.cli", "hooked_mlp.jobs")
LAYERS = (
    ("core", lambda m: m == "hooked_mlp.files.format" or (
        m.startswith("hooked_mlp.") and m.split(".")[1] not in ("files", "training")
        and m not in TOP)),
    ("files", lambda m: m.startswith("hooked_mlp.files")),
    ("training", lambda m: m.startswith("hooked_mlp.training")),
    ("analyses", lambda m: m.startswith("analyses.") and m.split(".")[1] not in (
        "experiments", "pages")),
    ("experiments", lambda m: m.startswith("analyses.experiments")),
    ("pages", lambda m: m.startswith("analyses.pages")),
    ("top", lambda m: m in TOP),
)

def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _layer(module: str) -> int:
    if module in PACKAGES:
        return 0
    for i, (_, test) in enumerate(LAYERS):
        if test(module):
            return i
    raise AssertionError(f"{module} belongs to no layer")


def _imports(path: Path, module: str) -> set[str]:
    """The project's modules `path` imports, at module level or inside functions (a lazy import
    is still an arrow)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {i for i in _imports(p, m) if i in modules and i != m}
            for m, p in modules.items()}


def test_imports_point_one_way():
    wrong = []
    for module, imported in _graph().items():
        if module in PACKAGES:
            continue  # the package's public names, each imported on first use
        for other in imported:
            if other in PACKAGES:
                continue  # a package's own __init__ (the public names, loaded lazily)
            if _layer(other) > _layer(module):
                wrong.append(f"{module} ({LAYERS[_layer(module)][0]}) imports {other} "
                             f"({LAYERS[_layer(other)][0]})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycle_at_module_level():
    """Module-level imports form no cycle (a cycle makes the import order matter)."""
    modules = _modules()
    graph = {}
    for m, path in modules.items():
        top = ast.parse(path.read_text()).body
        names = set()
        for node in top:
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        graph[m] = {n for n in names if n in modules and n != m and n not in PACKAGES}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, m, n]))
            if n not in state:
                visit(n, [*stack, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


@pytest.mark.parametrize("old, name, new", [
    ("hooked_mlp.io", "load", "hooked_mlp.files.checkpoints"),
    ("hooked_mlp.io", "atomic_write_text", "hooked_mlp.files.format"),
    ("hooked_mlp.importers", "import_mlp", "hooked_mlp.files.importers"),
    ("hooked_mlp.trainer", "BatchedTrainer", "hooked_mlp.training.trainer"),
    ("hooked_mlp.runs", "train_run", "hooked_mlp.training.runs"),
    ("analyses.report", "run_report", None),
    ("analyses.study", "study", None),
])
def test_moved_names_import_and_warn_once(old, name, new):
    code = (
        "import warnings, importlib\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        f"    module = importlib.import_module({old!r})\n"
        f"    value = getattr(module, {name!r})\n"
        f"    getattr(module, {name!r})\n"
        "moved = [str(x.message) for x in w if issubclass(x.category, DeprecationWarning)]\n"
        "print(len(moved)); print(moved[0] if moved else ''); print(value.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.splitlines()
    assert out[0] == "1", out  # one warning, however often the name is used
    assert old in out[1] and "moved to" in out[1]
    if new is not None:
        assert out[2] == new


@pytest.mark.parametrize("old, new", [
    ("analyses._common.accuracy", "hooked_mlp.helpers.accuracy"),
    ("analyses.fourier.frequency_power", "analyses.fourier.power_spectrum"),
    ("analyses.dynamics.frequency_power", "analyses.frequency_losses.logit_frequency_power"),
    ("analyses.dynamics.measure", "analyses.dynamics.snapshot_measures"),
    ("analyses.experiments.study.measure", "analyses.experiments.study.measure_study_model"),
    ("analyses.study.measure", "analyses.experiments.study.measure_study_model"),
])
def test_renamed_names_give_the_new_object_and_warn_once(old, new):
    """A name renamed in 0.3 (three pairs of names collided) is the new name's object, with one
    DeprecationWarning naming the new name however often it is read."""
    module, _, name = old.rpartition(".")
    new_module, _, new_name = new.rpartition(".")
    code = (
        "import warnings, importlib\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        f"    value = getattr(importlib.import_module({module!r}), {name!r})\n"
        f"    again = getattr(importlib.import_module({module!r}), {name!r})\n"
        f"new = getattr(importlib.import_module({new_module!r}), {new_name!r})\n"
        "renamed = [str(x.message) for x in w if issubclass(x.category, DeprecationWarning)\n"
        "           and 'renamed' in str(x.message)]\n"
        "print(len(renamed)); print(renamed[0] if renamed else ''); print(value is new is again)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.splitlines()
    assert out[0] == "1", out
    assert new in out[1], out
    assert out[2] == "True"
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        importlib.import_module(module).not_a_name  # noqa: B018 (the lookup is the test)


def test_hand_built_models_live_in_analyses_models_and_keep_their_old_homes():
    """The models set by a formula are built in analyses.models; their old import paths give
    the same objects (no warning: analyses.synthetic measures them and re-exports them)."""
    from analyses import synthetic
    from analyses.experiments import construction
    from analyses.models import constructions, cosine

    for name in ("random_cosine_model", "random_cosine_params", "cosine_weights",
                 "random_cosine_config"):
        assert getattr(synthetic, name) is getattr(cosine, name)
    for name in ("quad_construction", "quad_construction_neurons", "pizza_construction"):
        assert getattr(synthetic, name) is getattr(constructions, name)
    assert construction.random_phase_quad_model is constructions.random_phase_quad_model
    assert cosine.random_cosine_model.__module__ == "analyses.models.cosine"


# a source file over this many lines says why in its docstring (issue 18), in these words
MAX_LINES = 600
WHY_LONG = re.compile(r"Why this file is over 600 lines: \S+(?: \S+){3,}")
SOURCE_FOLDERS = ("hooked_mlp", "analyses", "bench", "scripts", "tests")


def _opening_text(path: Path) -> str:
    """The module docstring of a Python file, the first /* */ comment of a C file, the
    opening // lines of a JavaScript file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        return ast.get_docstring(ast.parse(text)) or ""
    if path.suffix == ".js":
        lines = text.splitlines()
        head = next((i for i, line in enumerate(lines) if not line.startswith("//")), len(lines))
        return " ".join(line[2:] for line in lines[:head])
    start, end = text.find("/*"), text.find("*/")
    return text[start:end] if 0 <= start < end else ""


def _long_files(root: Path) -> dict[str, int]:
    """Every .py, .c and .js file below the source folders (and setup.py) over `MAX_LINES`
    lines, with its line count."""
    paths = [root / "setup.py", *(p for folder in SOURCE_FOLDERS for suffix in ("py", "c", "js")
                                  for p in sorted((root / folder).rglob(f"*.{suffix}")))]
    out = {}
    for p in paths:
        if p.exists() and ".venv" not in p.parts and "build" not in p.parts:
            n = len(p.read_text(encoding="utf-8").splitlines())
            if n > MAX_LINES:
                out[str(p.relative_to(root))] = n
    return out


def test_no_source_file_over_600_lines_without_saying_why():
    """A file over 600 lines has a sentence in its docstring (a C file: its first comment)
    saying why, beginning "Why this file is over 600 lines: "."""
    long_files = _long_files(ROOT)
    assert long_files, "the check reads no file over 600 lines: is it reading the tree?"
    silent = {f: n for f, n in long_files.items()
              if not WHY_LONG.search(" ".join(_opening_text(ROOT / f).split()))}
    assert not silent, (f"over {MAX_LINES} lines with no 'Why this file is over 600 lines: "
                        f"...' sentence in the docstring: {silent}")


def test_the_long_file_check_can_fail(tmp_path):
    """The check above finds a long file that does not say why, and accepts one that does."""
    (tmp_path / "analyses").mkdir()
    body = "x = 1\n" * (MAX_LINES + 1)
    (tmp_path / "analyses" / "long.py").write_text('"""A module."""\n' + body)
    (tmp_path / "analyses" / "why.py").write_text(
        '"""A module.\n\nWhy this file is over 600 lines: it holds one table of many rows."""\n'
        + body)
    (tmp_path / "analyses" / "short.py").write_text('"""A module."""\nx = 1\n')
    found = _long_files(tmp_path)
    assert found == {"analyses/long.py": MAX_LINES + 2, "analyses/why.py": MAX_LINES + 4}
    assert not WHY_LONG.search(_opening_text(tmp_path / "analyses" / "long.py"))
    assert WHY_LONG.search(" ".join(_opening_text(tmp_path / "analyses" / "why.py").split()))
