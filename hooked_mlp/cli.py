"""`hooked-mlp`: the command line, a thin layer over `hooked_mlp` and `analyses`.

    hooked-mlp train --seeds 0-4 --out runs/seed-recipe     train (batched over seeds)
    hooked-mlp train --resume runs/seed-recipe              continue an interrupted run
    hooked-mlp train --recipe grokking --snapshots log:64 --out runs/grok   keep snapshots
    hooked-mlp dynamics runs/grok --out grok-dynamics       how the circuit formed
    hooked-mlp info [PATH ...]                              what a checkpoint holds
    hooked-mlp report [--model PATH ...] [--out DIR]        the reproduction report
    hooked-mlp probe NAME [--model PATH]                    run a probe (plugin) on a model
    hooked-mlp sweep --grid weight_decay=0.1,1 --grid train_frac=0.3,0.6 --seeds 0-1 --out S
                                                            a population of runs, phase diagram
    hooked-mlp explore [MODEL|RUN|SWEEP] --out DIR          the explorer, one offline page

Heavy libraries are imported inside the commands, so `--help` answers at once. Every error is
printed as one line on stderr and the exit status is non-zero (2 for a bad command line, 1 for
anything else).

Why this file is over 600 lines: it holds the parsers of eight commands, each with its help
text and its one-line refusals; the model and recipe flags are generated from the config's
fields, and each command's work is a function of `hooked_mlp.jobs` or of the analyses.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from hooked_mlp.checks import MAX_SEEDS, MAX_THREADS  # light: torch is loaded on first use
from hooked_mlp.config import PRESETS, MLPConfig, TrainConfig, flag_fields, recipe
from hooked_mlp.text import one_line, safe_text

PROG = "hooked-mlp"


class CommandLineError(Exception):
    """A bad command line: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sub = self.prog[len(PROG):].strip()
        raise CommandLineError(f"{sub + ': ' if sub else ''}{message} (see {self.prog} --help)")


def parse_seeds(text: str) -> list[int]:
    """`'0-4'`, `'0,2,7'` or `'0-3,8'` as a list of distinct seeds (decimal digits only; at
    most 100,000 seeds, checked before the list is built)."""
    def bad(why: str) -> argparse.ArgumentTypeError:
        return argparse.ArgumentTypeError(
            f"invalid seeds {_quote(text)}: {why}; use a list like '0-4', '0,2,7' or '0-3,8' "
            "of non-negative integers")

    spans: list[tuple[int, int]] = []
    for part in text.split(","):
        part = part.strip()
        lo_s, dash, hi_s = part.partition("-")
        if not lo_s.isascii() or not lo_s.isdigit() or (dash and not (
                hi_s.isascii() and hi_s.isdigit())) or len(part) > 40:
            raise bad(f"{_quote(part)} is not a seed or a range of seeds")
        lo = int(lo_s)
        hi = int(hi_s) if dash else lo
        if hi < lo:
            raise bad(f"the range {part} ends before it starts")
        spans.append((lo, hi))
    count = sum(hi - lo + 1 for lo, hi in spans)
    if count > MAX_SEEDS:
        raise bad(f"{count:,} seeds; one run takes at most {MAX_SEEDS:,}")
    seeds = [s for lo, hi in spans for s in range(lo, hi + 1)]
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"invalid seeds {_quote(text)}: a seed is listed twice")
    return seeds


def _quote(text: str) -> str:
    """A piece of the command line, quoted safely in an error message."""
    return repr(text if len(text) <= 60 else text[:60] + "...")


def _int_in(low: int, high: int, what: str):
    """An argparse type: a decimal integer in `[low, high]`, refused with `expected <what>`."""

    def parse(text: str) -> int:
        digits = text.strip()
        ok = digits.isascii() and digits.lstrip("-").isdigit() and len(digits) <= 20
        value = int(digits) if ok else low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {_quote(text)}")
        return value

    return parse


_positive_int = _int_in(1, 10**12, "a positive integer")
_non_negative_int = _int_in(0, 2**32 - 1, "a non-negative integer")
_threads = _int_in(1, MAX_THREADS, f"a positive integer of at most {MAX_THREADS} threads")
_seed = _int_in(0, 2**32 - 1, "a seed: an integer in [0, 4294967295]")


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "yes", "1", "on"):
        return True
    if value in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {_quote(text)}")


# Every recipe flag is a field of MLPConfig or TrainConfig (`hooked_mlp.config.flag_fields`):
# its name, type and help come from the field. Each defaults to None, so that `--resume` can tell
# a flag that was given from one that was not; the config's own default fills it in.
def recipe_flags() -> list[tuple[str, str, str, Any, str, Any]]:
    """`(flag, "model" | "train", field, type, help, default)` of each recipe flag."""
    out = []
    for which, cls in (("model", MLPConfig), ("train", TrainConfig)):
        for f in flag_fields(cls):
            kind = {bool: _bool, int: int, float: float}.get(_TYPES.get(f.type, str), str)
            out.append((f"--{f.name.replace('_', '-')}", which, f.name, kind,
                        f.metadata["help"], f.default))
    return out


_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _add_recipe_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and recipe (defaults: the source study)")
    for flag, _, name, kind, text, default in recipe_flags():
        extra: dict[str, Any] = {"nargs": "?", "const": True} if kind is _bool else {}
        g.add_argument(flag, type=kind, default=None, dest=name,
                       help=f"{text} (default {default})", **extra)
    g.add_argument("--seed", type=_seed, default=None,
                   help="seed of the initialisation and batch order (default 0)")
    g.add_argument("--seeds", type=parse_seeds, default=None,
                   help="train several seeds in one batched run, e.g. 0-15 or 0,3,7")
    g.add_argument("--split-seed", type=_seed, default=None,
                   help="seed of the train/validation split (default: each run's own seed)")


def _recipe(args: argparse.Namespace) -> tuple[MLPConfig, TrainConfig]:
    """The model and recipe of `--recipe` (the study by default) with the flags given."""
    given = {name: getattr(args, name) for _, _, name, _, _, _ in recipe_flags()
             if getattr(args, name) is not None}
    return recipe(getattr(args, "recipe", None), **given, seed=args.seed or 0,
                  split_seed=args.split_seed)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Train, inspect and interpret small MLPs on modular arithmetic.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    tr = sub.add_parser("train", help="train models (the source study's recipe by default)",
                        description="Train one model per seed into --out (seed-<s>.safetensors). "
                        "Several seeds train in one batched run.")
    _add_recipe_flags(tr)
    g = tr.add_argument_group("run")
    g.add_argument("--out", type=Path, default=None,
                   help="output folder (created; must not hold a run already)")
    g.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="continue the interrupted run in DIR (takes no recipe flags)")
    g.add_argument("--checkpoint-every", type=_non_negative_int, default=None, metavar="K",
                   help="write a resumable checkpoint every K epochs (default 50 with --out; "
                   "0: never)")
    g.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N")
    g.add_argument("--threads", type=_threads, default=None,
                   help="CPU threads (default: one per seed up to the cores here with the C "
                   "backend; see hooked_mlp.training.trainer.default_threads)")
    g.add_argument("--backend", choices=("auto", "c", "torch"), default=None,
                   help="auto (default: the C accelerator where it supports the run, else "
                   "the general torch path), c or torch; --resume keeps the run's own")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--snapshots", default=None, metavar="SPEC",
                   help="also keep the weights at chosen epochs (with epoch 0): log:N (N "
                   "log-spaced), every:K, or a list such as 0,10,100; one "
                   "snapshots-seed-<s>.safetensors per seed (see hooked-mlp dynamics)")
    g.add_argument("--recipe", choices=tuple(PRESETS), default=None,
                   help="; ".join(f"{name}: {preset.description}" for name, preset in
                                  PRESETS.items()) + " (default study; flags override it)")

    info = sub.add_parser("info", help="show what a checkpoint or run folder holds",
                          description="Config, provenance and accuracies of checkpoints "
                          "(default: the shipped models).")
    info.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                      help="checkpoint files or run folders (default: the shipped models)")
    info.add_argument("--json", action="store_true", help="print the metadata as JSON")

    rep = sub.add_parser("report", help="write the reproduction report (report.html, "
                         "summary.json)", description="Reproduce the source study on the "
                         "shipped models (default), on given checkpoints, or on newly trained "
                         "seeds, and write report.html and summary.json.")
    rep.add_argument("--model", type=Path, action="append", default=None, metavar="PATH",
                     help="a checkpoint to analyse (repeat for several)")
    rep.add_argument("--seeds", type=parse_seeds, default=None,
                     help="train these seeds with the seed recipe first (e.g. 0-4) and report "
                     "on them")
    rep.add_argument("--epochs", type=_positive_int, default=None,
                     help="epochs for --seeds (default: the seed recipe's 2000)")
    rep.add_argument("--out", type=Path, default=Path("report"),
                     help="output folder (default ./report)")
    rep.add_argument("--threads", type=_threads, default=None,
                     help="CPU threads for --seeds training and the analyses")
    rep.add_argument("--no-progress", action="store_true", help="no progress bar")
    rep.add_argument("--probe-time-limit", type=_number, default=None, metavar="SECONDS",
                     help="seconds each probe may take on one model before it is stopped and "
                     "its row says 'timed out' (default 300)")
    rep.add_argument("--dictionary-steps", type=_positive_int, default=None, metavar="N",
                     help="training steps of the sparse dictionaries section's SAEs and "
                     "transcoders (default 150, a short budget; the loss each reaches is shown)")

    pr = sub.add_parser("probe", help="run a registered probe on a checkpoint",
                        description="Run a probe (a plugin registered under the entry-point "
                        "group hooked_mlp.probes, built-in or from another installed package) "
                        "on a checkpoint and print its result.")
    pr.add_argument("name", nargs="?", help="the probe (see --list)")
    pr.add_argument("--list", action="store_true", help="list the installed probes")
    pr.add_argument("--model", type=Path, default=None, metavar="PATH",
                    help="the checkpoint to probe (default: the shipped seed-0 model)")
    pr.add_argument("--json", action="store_true", help="print the result's numbers as JSON")
    pr.add_argument("--figures", type=Path, default=None, metavar="DIR",
                    help="also write the probe's figures as PNG files into DIR")
    pr.add_argument("--probe-time-limit", type=_number, default=None, metavar="SECONDS",
                    help="stop the probe after SECONDS, an error (default: no limit)")
    dyn = sub.add_parser("dynamics", help="how the circuit formed: progress measures over a "
                         "run's snapshots (dynamics.html, dynamics.json)",
                         description="Measure every snapshot of a run (train --snapshots) or of "
                         "a folder of another codebase's checkpoints (one per epoch) and write "
                         "dynamics.html and dynamics.json into --out.")
    dyn.add_argument("source", type=Path, metavar="RUN_OR_FOLDER", nargs="?", default=None,
                     help="a run folder, a snapshots-seed-<s>.safetensors file, or a folder of "
                     "checkpoint files named by epoch (default: the shipped snapshots of seed "
                     "0 retrained with the study's recipe)")
    dyn.add_argument("--out", type=Path, default=Path("dynamics"),
                     help="output folder (default ./dynamics)")
    dyn.add_argument("--seed", type=_seed, default=None,
                     help="which seed of a run folder holding several")
    dyn.add_argument("--activation", default=None,
                     help="for other codebases' checkpoints: their activation (the importer's "
                     "activation=)")
    dyn.add_argument("--operation", default=None,
                     help="for other codebases' checkpoints: their operation (default add)")
    dyn.add_argument("--threads", type=_threads, default=None, help="CPU threads (default 1)")
    _add_questions_parser(sub)
    _add_sweep_parser(sub)
    _add_explore_parser(sub)
    return parser


def _add_questions_parser(sub: Any) -> None:
    q = sub.add_parser("questions", help="answer the study's open questions 1 and 3 "
                       "(questions.html, questions.json)",
                       description="Train the input encodings and 1-3 layer MLPs (reusing "
                       "finished runs in --cache), measure their neurons as functions of "
                       "(a, b) and predict output weights, and write questions.html and "
                       "questions.json into --out. The default plan takes under 10 minutes on "
                       "2 cores; --full runs the study's 2000 epochs on more seeds.")
    q.add_argument("--out", type=Path, default=Path("questions"),
                   help="output folder (default ./questions)")
    q.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="where trained runs are kept and reused (default OUT/cache)")
    q.add_argument("--full", action="store_true",
                   help="the fuller plan: 2000 epochs, 5 seeds, more recipes, finer curves")
    q.add_argument("--threads", type=_threads, default=None,
                   help="torch threads for the analyses (default: torch's own)")


def _version() -> str:
    from hooked_mlp import __version__

    return __version__


# --------------------------------------------------------------------------- train
def _cmd_train(args: argparse.Namespace) -> int:
    from hooked_mlp.training.runs import resume_run, train_run

    progress = not args.no_progress and sys.stderr.isatty()
    if args.resume is not None:
        given = [("--out", args.out), ("--seed", args.seed), ("--seeds", args.seeds),
                 ("--split-seed", args.split_seed), ("--snapshots", args.snapshots),
                 ("--recipe", args.recipe)]
        given += [(flag, getattr(args, name)) for flag, _, name, _, _, _ in recipe_flags()]
        given_flags = [flag for flag, value in given if value is not None]
        if given_flags:
            raise CommandLineError(
                f"train: --resume continues a run with its own recipe; drop "
                f"{', '.join(given_flags)}"
            )
        paths = resume_run(args.resume, device=args.device, threads=args.threads,
                           progress=progress, checkpoint_every=args.checkpoint_every,
                           backend=args.backend)
    else:
        if args.out is None:
            raise CommandLineError("train: --out DIR is required (or --resume DIR)")
        if args.seed is not None and args.seeds is not None:
            raise CommandLineError("train: give --seed or --seeds, not both")
        cfg, tcfg = _recipe(args)
        seeds = args.seeds if args.seeds is not None else [tcfg.seed]
        every = 50 if args.checkpoint_every is None else args.checkpoint_every
        if args.snapshots is not None:  # issue 10: the flag's own one-line error, before any work
            from hooked_mlp.training.snapshots import parse_snapshot_spec

            try:
                parse_snapshot_spec(args.snapshots, tcfg.epochs, name="--snapshots")
            except (TypeError, ValueError) as e:
                raise CommandLineError(f"train: {e}") from None
        command = shlex.join([PROG, *args.argv])
        paths = train_run(args.out, cfg, tcfg, seeds, checkpoint_every=every,
                          device=args.device or "cpu", threads=args.threads, progress=progress,
                          command=command, backend=args.backend or "auto",
                          snapshots=args.snapshots)

    from hooked_mlp.files.describe import describe, metrics_line

    for path in paths:
        print(f"{path}: {metrics_line(describe(path).get('metrics', {}))}")
    return 0


# --------------------------------------------------------------------------- info
def _cmd_info(args: argparse.Namespace) -> int:
    from hooked_mlp.files.describe import describe, format_description, info_targets

    described = [describe(p) for p in info_targets(args.paths)]
    if args.json:
        print(json.dumps(described, indent=2))
    else:
        print("\n".join(format_description(d) for d in described))
    return 0


# --------------------------------------------------------------------------- report
def _cmd_report(args: argparse.Namespace) -> int:
    from analyses.pages.report import run_report

    progress = not args.no_progress and sys.stderr.isatty()
    if args.model and args.seeds is not None:
        raise CommandLineError("report: give --model or --seeds, not both")
    if args.epochs is not None and args.seeds is None:
        raise CommandLineError("report: --epochs applies only with --seeds")
    limit = {} if args.probe_time_limit is None else {
        "probe_time_limit": _time_limit("report", args.probe_time_limit)}
    steps = {} if args.dictionary_steps is None else {"steps": args.dictionary_steps}
    result = run_report(out_dir=args.out, model_paths=args.model, seeds=args.seeds,
                        epochs=args.epochs, threads=args.threads, progress=progress,
                        dictionary_options=steps, **limit)
    print(f"wrote {result.html} and {result.summary} ({result.seconds:.1f} s)")
    return 0


def _number(text: str) -> float:
    """An argparse type: a decimal number (its range is checked by the command)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {_quote(text)}") from None


def _time_limit(command: str, seconds: float | None) -> float | None:
    """--probe-time-limit checked by `analyses.probes.check_time_limit`, in one line."""
    from analyses.probes import check_time_limit

    try:
        return check_time_limit(seconds, "--probe-time-limit")
    except ValueError as e:
        raise CommandLineError(f"{command}: {e}") from None


# --------------------------------------------------------------------------- probe
def _cmd_probe(args: argparse.Namespace) -> int:
    from analyses._common import to_jsonable
    from analyses.probes import get_probe, registered_probes, result_text, run_probe, stop_after

    if args.list:
        if args.name is not None:
            raise CommandLineError("probe: give a probe's name or --list, not both")
        for name, probe in registered_probes().items():
            print(f"{name:16s} {safe_text(probe.title)} ({safe_text(probe.source)})")
        return 0
    if args.name is None:
        raise CommandLineError("probe: name a probe (hooked-mlp probe --list shows them)")
    from hooked_mlp.files.checkpoints import load, pretrained_path

    limit = _time_limit("probe", args.probe_time_limit)
    probe = get_probe(args.name)
    model = load(args.model if args.model is not None else pretrained_path(0))
    with stop_after(limit, probe.name):
        result = run_probe(probe, model)
    if args.json:
        print(json.dumps(to_jsonable(result.to_dict()), indent=2, allow_nan=False))
    else:
        print(f"{probe.name}: {safe_text(probe.title)} ({safe_text(probe.source)})")
        for line in result_text(result).splitlines() or ["(no summary: --json shows the numbers)"]:
            print(f"  {safe_text(line)}")
    if args.figures is not None:
        from analyses.pages.writer import write_figures
        from analyses.views import figure_png

        figures = result.figures() if callable(getattr(result, "figures", None)) else {}
        pngs = {name: figure_png(fig) for name, fig in figures.items()}
        for path in write_figures(args.figures, pngs, f"hooked-mlp probe {probe.name}",
                                  prefix=args.name):
            print(f"wrote {safe_text(str(path))}")
    return 0


# --------------------------------------------------------------------------- dynamics
def _check_folder_arg(command: str, flag: str, path: Path) -> None:
    """A usage error (exit 2) when an output folder could never be made at `path`."""
    from hooked_mlp.checks import check_out_folder

    try:
        check_out_folder(path, flag)
    except ValueError as e:
        raise CommandLineError(f"{command}: {e}") from None


def _cmd_dynamics(args: argparse.Namespace) -> int:
    from analyses.pages.dynamics import write_dynamics_page
    from hooked_mlp.training.trainer import torch_threads

    options = {k: v for k, v in (("activation", args.activation),
                                 ("operation", args.operation)) if v is not None}
    _check_folder_arg("dynamics", "--out", args.out)
    source = args.source
    if source is None:
        from hooked_mlp.files.layout import PRETRAINED_DIR, SHIPPED_SERIES

        source = PRETRAINED_DIR / SHIPPED_SERIES
    with torch_threads(args.threads or 1):  # small tensors: one thread is fastest on a busy CPU
        page, data, d = write_dynamics_page(source, args.out, args.seed, **options)
    print(d.describe())
    print(f"wrote {page} and {data}")
    return 0


# --------------------------------------------------------------------------- questions
def _cmd_questions(args: argparse.Namespace) -> int:
    import torch

    from analyses.experiments.questions import DEFAULT_PLAN, FULL_PLAN, run_questions
    from analyses.pages.questions import write_questions_page

    _check_folder_arg("questions", "--out", args.out)
    cache = args.cache if args.cache is not None else args.out / "cache"
    _check_folder_arg("questions", "--cache", cache)  # before any training, not after a run
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = run_questions(cache, FULL_PLAN if args.full else DEFAULT_PLAN,
                           log=lambda line: print(line, file=sys.stderr))
    command = shlex.join([PROG, *args.argv])
    html_path, json_path = write_questions_page(result, args.out, command)
    print(f"wrote {html_path} and {json_path} ({result.timings['total_s']:.1f} s)")
    return 0


# --------------------------------------------------------------------------- sweep
def _add_sweep_parser(sub: Any) -> None:
    sw = sub.add_parser("sweep", help="train a grid of recipes (stacked) and draw its phase "
                        "diagram (results/*.parquet, sweep.html)",
                        description="Train every cell of a grid over model and recipe fields "
                        "for each seed into --out: one Parquet part and one stacked weights file "
                        "per group of runs, and the phase diagram sweep.html. The model and "
                        "recipe flags of `train` set every field the grid does not.")
    _add_recipe_flags(sw)
    g = sw.add_argument_group("sweep")
    g.add_argument("--grid", action="append", default=None, metavar="FIELD=V1,V2,...",
                   help="an axis: a field of the model or recipe and its values (repeat for "
                   "several axes; cells are their product)")
    g.add_argument("--out", type=Path, default=None, help="the sweep folder (created)")
    g.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="continue the interrupted sweep in DIR with its own spec")
    g.add_argument("--page", type=Path, default=None, metavar="DIR",
                   help="rebuild DIR/sweep.html from DIR's results (trains nothing)")
    g.add_argument("--axes", default=None, metavar="X,Y",
                   help="the two axes of the phase diagram (default: the first two)")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default: this machine's cores) or ray (a Ray cluster)")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="the Ray cluster's address (with --engine ray; default: start a local "
                   "Ray instance)")
    g.add_argument("--workers", type=_threads, default=None, metavar="N",
                   help="local processes (default: one per core); with Ray, the CPUs of one "
                   "task are the cores divided by N")
    g.add_argument("--snapshots", default=None, metavar="SPEC",
                   help="keep each run's weights at chosen epochs (log:N, every:K, or a list), "
                   "a run folder per cell under DIR/snapshots for hooked-mlp dynamics")
    g.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N")
    g.add_argument("--backend", choices=("auto", "c", "torch"), default=None,
                   help="the trainer's backend (default auto)")
    g.add_argument("--recipe", choices=tuple(PRESETS), default=None,
                   help="the preset the fixed values start from (default study)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _cmd_sweep(args: argparse.Namespace) -> int:
    from hooked_mlp.jobs import resume_sweep, sweep, sweep_page

    progress = not args.no_progress and sys.stderr.isatty()
    axes = None if args.axes is None else [a.strip() for a in args.axes.split(",")]
    if axes is not None and len(axes) != 2:
        raise CommandLineError(f"sweep: --axes takes two axis names X,Y, got {_quote(args.axes)}")
    modes = [flag for flag, v in (("--out", args.out), ("--resume", args.resume),
                                  ("--page", args.page)) if v is not None]
    if len(modes) != 1:
        raise CommandLineError("sweep: give one of --out DIR (a new sweep), --resume DIR or "
                               f"--page DIR{'' if not modes else ', not ' + ' and '.join(modes)}")
    recipe_given = [flag for flag, _, name, _, _, _ in recipe_flags()
                    if getattr(args, name) is not None]
    recipe_given += [flag for flag, v in (("--grid", args.grid), ("--seed", args.seed),
                                          ("--seeds", args.seeds), ("--recipe", args.recipe),
                                          ("--split-seed", args.split_seed),
                                          ("--snapshots", args.snapshots),
                                          ("--backend", args.backend)) if v is not None]
    run_flags = [flag for flag, v in (("--engine", None if args.engine == "local" else 1),
                                      ("--ray-address", args.ray_address),
                                      ("--workers", args.workers), ("--device", args.device))
                 if v is not None]
    if args.page is not None:
        if recipe_given or run_flags:
            raise CommandLineError(f"sweep: --page only redraws the page; drop "
                                   f"{', '.join(recipe_given + run_flags)}")
        print(f"wrote {sweep_page(args.page, axes)}")
        return 0
    engine = {"engine": args.engine, "workers": args.workers, "device": args.device or "cpu",
              "ray_address": args.ray_address, "progress": progress, "page": True,
              "page_axes": axes}
    if args.resume is not None:
        if recipe_given:
            raise CommandLineError(f"sweep: --resume continues a sweep with its own spec; drop "
                                   f"{', '.join(recipe_given)}")
        folder, table = args.resume, resume_sweep(args.resume, **engine)
    else:
        if not args.grid:
            raise CommandLineError("sweep: give at least one axis, --grid FIELD=V1,V2,...")
        if args.seed is not None and args.seeds is not None:
            raise CommandLineError("sweep: give --seed or --seeds, not both")
        from hooked_mlp.training.sweep import grid_from_text

        try:
            grid = grid_from_text(args.grid, "--grid")
        except ValueError as e:
            raise CommandLineError(f"sweep: {e}") from None
        cfg, tcfg = _recipe(args)
        seeds = args.seeds if args.seeds is not None else [tcfg.seed]
        folder = args.out
        table = sweep(grid, seeds, model=cfg, recipe=tcfg, out=folder,
                      snapshots=args.snapshots, backend=args.backend or "auto",
                      command=shlex.join([PROG, *args.argv]), **engine)
    counts = table["phase"].value_counts().to_dict() if "phase" in table else {}
    phases = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    print(f"{folder}: {len(table)} runs ({phases}); wrote {Path(folder) / 'sweep.html'}")
    return 0


# --------------------------------------------------------------------------- explore
def _add_explore_parser(sub: Any) -> None:
    ex = sub.add_parser("explore", help="write the explorer: every view interactive in one "
                        "offline page (explorer.html)",
                        description="Write DIR/explorer.html: neurons, logits, patching, the "
                        "epoch slider and the phase diagram of a model, a run's snapshots or a "
                        "sweep, in one self-contained page (no network, no server).")
    ex.add_argument("source", type=Path, nargs="?", default=None, metavar="MODEL|RUN|SWEEP",
                    help="a checkpoint, a snapshots file, a run folder or a sweep folder "
                    "(default: the shipped seed-0 model)")
    ex.add_argument("--out", type=Path, default=Path("explore"),
                    help="output folder (default ./explore)")
    ex.add_argument("--seed", type=_seed, default=None,
                    help="which seed of a run folder holding several (or of the shipped models)")
    ex.add_argument("--max-cells", type=_int_in(1, 4096, "a number of cells in [1, 4096]"),
                    default=16, help="a sweep's cells whose runs the page carries (default 16)")
    ex.add_argument("--title", default=None, help="the page's title (default: the source's name)")


def _cmd_explore(args: argparse.Namespace) -> int:
    from hooked_mlp.jobs import explore

    _check_folder_arg("explore", "--out", args.out)
    page = explore(args.source, args.out, seed=args.seed, title=args.title,
                   max_cells=args.max_cells, command=shlex.join([PROG, *args.argv]))
    print(f"wrote {safe_text(str(page))} ({page.stat().st_size / 1e6:.2f} MB)")
    return 0


COMMANDS = {"explore": _cmd_explore,
            "train": _cmd_train, "dynamics": _cmd_dynamics, "info": _cmd_info,
            "report": _cmd_report,
            "probe": _cmd_probe, "questions": _cmd_questions, "sweep": _cmd_sweep}




def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hooked-mlp` console script; returns the exit status."""
    parser = build_parser()
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(argv)
        args.argv = argv
        return COMMANDS[args.command](args)
    except CommandLineError as e:
        print(f"{PROG}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"{PROG}: error: out of memory (the command needed more memory than this process "
              "may use)", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError, RuntimeError) as e:
        print(f"{PROG}: error: {one_line(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # a bug: still one line, with a way to see the traceback
        if os.environ.get("HOOKED_MLP_DEBUG"):
            raise
        print(f"{PROG}: internal error: {type(e).__name__}: {one_line(e)} "
              "(set HOOKED_MLP_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
