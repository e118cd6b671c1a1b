"""Lines of source per layer and the longest files, for one or more source trees side by side.

    .venv/bin/python bench/layout_stats.py --tree /path/to/previous/checkout --tree .

A layer is what `tests/test_layout.py` calls one (core, files, training, analyses,
experiments, pages, top); a tree from before the restructuring is read with the same rules
applied to its old module names (`hooked_mlp/io.py` counts as files, `hooked_mlp/trainer.py` as
training, `analyses/report.py` as pages, ...). Counts are physical lines of `.py` and `.c` files
under `hooked_mlp/` and `analyses/`, with templates (`.j2`, `.css`, `.js`) counted apart.
"""

from __future__ import annotations

import argparse
from pathlib import Path

OLD_FILES = {"io", "importers", "snapshots"}
OLD_TRAINING = {"trainer", "backends", "cpu_kernel", "_cpu_kernel", "runs", "training"}
OLD_EXPERIMENTS = {"study", "questions", "construction"}
OLD_PAGES = {"report", "dynamics_page", "questions_page", "forms_report"}


def layer(rel: Path) -> str:
    parts = rel.with_suffix("").parts
    top, rest = parts[0], parts[1:]
    if top == "hooked_mlp":
        if rest[0] in ("cli", "jobs"):
            return "top"
        if rest[0] == "files":
            return "core" if rest[-1] == "format" else "files"
        if rest[0] == "training" or rest[0] in OLD_TRAINING:
            return "training"
        if rest[0] in OLD_FILES:
            return "files"
        return "core"
    if rest[0] in ("experiments",) or rest[0] in OLD_EXPERIMENTS:
        return "experiments"
    if rest[0] == "pages" or rest[0] in OLD_PAGES:
        return "pages"
    return "analyses"


def stats(tree: Path) -> tuple[dict[str, int], dict[str, int], list[tuple[int, str]]]:
    code: dict[str, int] = {}
    templates: dict[str, int] = {}
    files = []
    for package in ("hooked_mlp", "analyses"):
        for path in sorted((tree / package).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            rel = path.relative_to(tree)
            n = len(path.read_text(errors="replace").splitlines()) if path.suffix in (
                ".py", ".c", ".j2", ".css", ".js") else 0
            if path.suffix in (".py", ".c"):
                code[layer(rel)] = code.get(layer(rel), 0) + n
                files.append((n, str(rel)))
            elif path.suffix in (".j2", ".css", ".js"):
                templates[layer(rel)] = templates.get(layer(rel), 0) + n
    return code, templates, sorted(files, reverse=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, action="append", required=True)
    ap.add_argument("--longest", type=int, default=10)
    args = ap.parse_args()
    order = ("core", "files", "training", "analyses", "experiments", "pages", "top")
    results = [stats(t) for t in args.tree]
    print(f"{'layer':12s}" + "".join(f"{str(t)[-28:]:>30s}" for t in args.tree))
    for name in order:
        print(f"{name:12s}" + "".join(
            f"{r[0].get(name, 0):>22d}" + (f" (+{r[1][name]} tpl)" if r[1].get(name) else
                                           " " * 8) for r in results))
    print(f"{'total':12s}" + "".join(f"{sum(r[0].values()):>22d}" + " " * 8 for r in results))
    for tree, r in zip(args.tree, results, strict=True):
        print(f"\nlongest files in {tree}:")
        for n, name in r[2][: args.longest]:
            print(f"  {n:6d}  {name}")


if __name__ == "__main__":
    main()
