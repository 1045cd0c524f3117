r"""The command line: `gdkernel run` (one problem) and `gdkernel sweep` (a grid of them).

A thin layer over `gradient_descent` and `sweep`:

    gdkernel run --function quadratic --x0 8 --lr 0.001 --precision 1e-5 --max-iter 500
    gdkernel run --function rosenbrock --out run.json --plot run.png
    gdkernel sweep --function rosenbrock --lr 1e-4:1e-2:32 --x0 -2:2:64 --out results.csv
    gdkernel sweep --plot sweep.png
    gdkernel sweep --method adam --hyperparam b1=0.8:0.99:5 --out adam.csv --plot adam.png

`--function` is a built-in name (`gdkernel.functions.BUILTINS`) or `module:attribute`, the
user's own importable cost (imported with `importlib`; no text is ever evaluated). Ranges are
`lo:hi:n`: learning rates log-spaced (`numpy.geomspace`), starting points linear
(`numpy.linspace`). For a vector `x`, `--x0` takes comma-separated coordinates, each a number
or a range; ranges are combined into a mesh, and coordinates left out take the built-in's
default starting point (so `--x0 -2:2:64` for Rosenbrock varies `x[0]` with `x[1] = 1`), as a
one-line note on stderr says.

`--method` takes gdkernel's own rules or an optax optimizer by name; `--hyperparam
NAME=VALUE` (repeatable) passes the optimizer's keywords. In a sweep, `--momentum`,
`--precision`, `--grad-tol` and each `--hyperparam` may be a range too: each range is a grid
axis, linear unless both ends are positive and two decades or more apart (then log-spaced),
or as `lo:hi:n:log` / `lo:hi:n:linear` says.

`--out` writes `.csv`, `.json` (the values run, one record per member, a column per grid
axis) or `.npz`, the file of `sweep(..., out=...)`; `gdkernel.load_sweep` reads all three
back with their axes (a run is a grid of one member). `--plot` draws any format Matplotlib
writes. Bad arguments, output files included, exit with
status 2 and one line on stderr before any work starts; library messages name the flags.

Example:
    >>> from gdkernel.cli import main
    >>> main(["run", "--function", "quadratic", "--lr", "0.1"])
    Minimum occurs at x-value: 0.33338478
    Slope at the minimum is: 0.00030875206
    Cost at the minimum is: -3.3333333
    Iterations: 13
    Status: CONVERGED (converged: the step fell below `--precision`)
    0
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import jax
import numpy as np

from . import __version__, _export, _optimizers
from ._batch import in_callers_settings
from ._cli_args import (
    DEFAULT_FUNCTION,
    DEFAULT_MAX_ITER,
    DEFAULTS,
    Axis,
    Problem,
    UsageError,
    compute_dtype,
    describe_guesses,
    describe_range,
    fill,
    filled_note,
    grid_guesses,
    hyperparam,
    hyperparam_value,
    hyperparams,
    learning_rate,
    learning_rates,
    momentum_value,
    momentum_values,
    need,
    nonnegative_int,
    nonnegative_values,
    one_nonnegative_float,
    output_path,
    output_paths,
    plot_suffixes,
    positive_int,
    resolve_function,
    starting_array,
    starting_point,
    starting_points,
)
from ._cli_progress import Display
from ._kernel import DIVERGENCE
from ._result import Status, SweepResult, _many
from ._solve import gradient_descent
from ._sweep import sweep
from ._validate import MOMENTUM, ONE_NUMBER
from .functions import BUILTINS

# Options that take a value which may start with "-" (e.g. `--x0 -2:2:64`).
_VALUE_OPTIONS = (
    "--function",
    "--x0",
    "--lr",
    "--precision",
    "--max-iter",
    "--grad-tol",
    "--momentum",
    "--chunk-size",
)
_NEGATIVE = re.compile(r"^-(\d|\.\d)")


# ---------------------------------------------------------------------------- the commands


def _show(value: Any) -> str:
    """Full precision: a number, or `[a, b]` for a vector."""
    value = np.asarray(value)
    if value.ndim == 0:
        return _export.number(value)
    return "[" + ", ".join(_export.number(v) for v in value.ravel()) + "]"


def _brief(value: Any) -> str:
    """Six significant digits: a number, or `[a, b]` for a vector."""
    value = np.asarray(value, dtype=np.float64)
    if value.ndim == 0:
        return f"{float(value):.6g}"
    return "[" + ", ".join(f"{float(v):.6g}" for v in value.ravel()) + "]"


def _given(value: Any) -> Any:
    """A flag's value as the library takes it (a range: the axis's values)."""
    return value.value() if isinstance(value, Axis) else value


def _solver_options(ns: argparse.Namespace, problem: Problem) -> dict[str, Any]:
    """The library's keyword options from the flags, checked before any work."""
    max_iter = ns.max_iter
    if max_iter is None:
        max_iter = problem.defaults.max_iter if problem.defaults else DEFAULT_MAX_ITER
    precision, grad_tol = _given(ns.precision), _given(ns.grad_tol)
    if precision is None:
        precision = problem.defaults.precision if problem.defaults else 1e-4
    if grad_tol is None and ns.precision is None and problem.defaults:
        grad_tol = problem.defaults.grad_tol
    options = {
        "precision": precision,
        "max_iter": max_iter,
        "norm": ns.norm,
        "grad_tol": grad_tol,
        "method": ns.method,
    }
    if ns.method in ("momentum", "nesterov"):  # the value used, so that a JSON file records it
        options["momentum"] = MOMENTUM if ns.momentum is None else _given(ns.momentum)
    elif ns.momentum is not None:
        own = (
            " (an optax method takes its own as `--hyperparam NAME=VALUE`, e.g. b1=0.9)"
            if ns.method in _optimizers.OPTAX
            else ""
        )
        raise UsageError(
            "`--momentum` is used only by `--method momentum` or `--method nesterov`; "
            f"`--method {ns.method}` would ignore it{own}"
        )
    given = hyperparams(ns.hyperparam, ns.method)
    if given:
        options["hyperparams"] = given
    return options


def _specs(ns: argparse.Namespace) -> dict[str, Axis]:
    """The ranges typed for the settings a sweep grids, by the name of their axis."""
    specs = {"momentum": ns.momentum, "precision": ns.precision, "grad_tol": ns.grad_tol}
    specs.update((h.name, h.value) for h in ns.hyperparam)
    return {k: v for k, v in specs.items() if isinstance(v, Axis) and v.is_range}


def _note(ns: argparse.Namespace, message: str | None) -> None:
    if message is not None:
        print(f"gdkernel {ns.command}: note: {message}", file=sys.stderr)


def _plot_path(ns: argparse.Namespace) -> Path | None:
    """`--plot`, checked before any work (Matplotlib can write its suffix)."""
    if ns.plot is None:
        return None
    return output_path(ns.plot, "--plot", plot_suffixes())


def _meta(problem: Problem, grid: SweepResult, options: dict[str, Any]) -> dict[str, Any]:
    """What a JSON file records about the run: the values run, never the text typed (a
    grid axis: its values in the run's dtype)."""
    run = dict(zip(grid.grid_axes.names, grid.grid_axes.values, strict=True))

    def recorded(name: str, value: Any) -> Any:
        if name in run:
            return [_export.json_value(v) for v in np.asarray(run[name])]
        return _export.json_value(value) if isinstance(value, np.ndarray) else value

    recorded_options = {k: recorded(k, v) for k, v in options.items() if k != "hyperparams"}
    if "hyperparams" in options:
        recorded_options["hyperparams"] = {
            k: recorded(k, v) for k, v in options["hyperparams"].items()
        }
    return {
        "function": problem.name,
        "dtype": str(np.asarray(grid.cost).dtype),
        "axes": list(grid.axes),
        "learning_rates": [_export.json_value(v) for v in np.asarray(grid.learning_rate)],
        "x0": [_export.json_value(v) for v in np.asarray(grid.initial_guess)],
        "options": recorded_options,
    }


def _write(grid: SweepResult, paths: list[Path], meta: dict[str, Any], out: TextIO) -> None:
    for path in paths:
        _export.write(grid, path, meta)
        print(f"wrote {path}", file=out)


def command_run(ns: argparse.Namespace, out: TextIO) -> int:
    """`gdkernel run`: one `gradient_descent`, printed as the tutorial prints it."""
    problem = resolve_function(ns.function)
    given = ns.x0 if ns.x0 is not None else need(problem.x0, "--x0", problem)
    coords = fill(given, problem)
    x0: Any = starting_array(coords)
    if problem.dim == 1 or (problem.dim is None and len(coords) == 1):
        x0 = x0[0]
    lr = ns.lr if ns.lr is not None else need(problem.lr, "--lr", problem)
    outs = output_paths(ns.out, "--out", _export.SUFFIXES)
    plot_path = _plot_path(ns)
    if ns.x0 is not None:
        _note(ns, filled_note(ns.x0, problem))

    options = _solver_options(ns, problem)
    res = gradient_descent(problem.fn, x0, lr, history=plot_path is not None, **options)
    status = Status(int(res.status))
    print(f"Minimum occurs at x-value: {_show(res.x)}", file=out)
    print(f"Slope at the minimum is: {_show(res.grad)}", file=out)
    print(f"Cost at the minimum is: {_show(res.cost)}", file=out)
    print(f"Iterations: {int(res.iterations)}", file=out)
    print(f"Status: {status.name} ({in_cli_terms(status.message)})", file=out)
    if outs:
        grid = _export.as_grid(res, lr, x0)
        _write(grid, outs, _meta(problem, grid, options), out)
    if plot_path is not None:
        _plot_run(res, problem, plot_path)
        print(f"wrote {plot_path}", file=out)
    return 0


def command_sweep(ns: argparse.Namespace, out: TextIO) -> int:
    """`gdkernel sweep`: a learning rate x starting point grid and a summary."""
    problem = resolve_function(ns.function)
    d = problem.defaults
    lr_axis = ns.lr if ns.lr is not None else learning_rates(need(d, "--lr", problem).lr)
    x0_axes = ns.x0 if ns.x0 is not None else starting_points(need(d, "--x0", problem).x0)
    guesses, axes = grid_guesses(x0_axes, problem)
    lrs = lr_axis.values.astype(compute_dtype())
    options = _solver_options(ns, problem)
    outs = output_paths(ns.out, "--out", _export.SUFFIXES)
    plot_path = _plot_path(ns)
    if ns.x0 is not None:
        _note(ns, filled_note(ns.x0, problem))
    # The first .npz is streamed there by `sweep` itself: a grid too big for memory still runs.
    npz = next((path for path in outs if path.suffix.lower() == ".npz"), None)

    # The display only on a terminal: without a progress callback the sweep runs as one call.
    display = Display(enabled=not ns.quiet and sys.stderr.isatty())
    start = time.perf_counter()
    try:
        grid = sweep(
            problem.fn,
            guesses,
            lrs,
            chunk_size=ns.chunk_size,
            progress=display if display.enabled else None,
            out=npz,
            **options,
        )
        grid = jax.tree.map(np.asarray, grid)  # waits for the whole grid
    finally:
        display.close()
    wall = time.perf_counter() - start

    calls = display.chunks if display.enabled else None
    print(_summary(grid, problem, lr_axis, axes, _specs(ns), options, wall, calls), file=out)
    if npz is not None:
        print(f"wrote {npz}", file=out)
    meta = _meta(problem, grid, options) if outs else {}
    for path in outs:
        if npz is not None and path.suffix.lower() == ".npz" and path != npz:
            shutil.copyfile(npz, path)  # the same file again, under another name
            print(f"wrote {path}", file=out)
        elif path.suffix.lower() != ".npz":
            _write(grid, [path], meta, out)
    if plot_path is not None:
        _plot(grid, axes, problem, plot_path)
        print(f"wrote {plot_path}", file=out)
    return 0


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _plot_run(res: Any, problem: Problem, path: Path) -> None:
    """The run's path over its cost (one or two coordinates) beside its cost per iteration."""
    plt = _pyplot()
    from . import plot

    if np.size(res.x) <= 2:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
        plot.trajectory(res, problem.fn, ax=left)
    else:
        fig, right = plt.subplots(figsize=(6, 4.2), layout="constrained")
    plot.convergence(res, ax=right)
    status = Status(int(res.status))
    fig.suptitle(f"{problem.name}: {status.name} after {int(res.iterations)} iterations")
    fig.savefig(path, dpi=150)
    plt.close(fig)


def _plot(grid: SweepResult, axes: list[Axis], problem: Problem, path: Path) -> None:
    """`plot.sweep_map(grid)` saved to `path`. When only one coordinate of a vector starting
    point varies, the map's starting-point axis shows that coordinate's values.

    A grid with more axes (`--momentum`, `--hyperparam`, ... ranges) gets a panel per axis
    beside that map: learning rate x that axis, the fraction of members converged over the
    starting points (and any other axis). The first map shows, per learning rate and starting
    point, the fewest iterations over those axes among the converged members.
    """
    plt = _pyplot()
    from . import plot

    varying = [k for k, a in enumerate(axes) if a.values.size > 1]
    shown = grid
    if len(axes) > 1 and len(varying) == 1:
        (k,) = varying
        shown = grid._replace(initial_guess=np.asarray(grid.initial_guess)[:, k])
    extra = grid.grid_axes.names
    if extra:
        figure, panels = plt.subplots(
            1, 1 + len(extra), figsize=(6.4 * (1 + len(extra)), 4.8), layout="constrained"
        )
        ax = plot.sweep_map(shown, ax=panels[0])
        for panel, name in zip(panels[1:], extra, strict=True):
            plot.sweep_map(shown, y=name, value="converged", ax=panel)
        figure.suptitle(f"{problem.name}: {' x '.join(grid.axes)}")
    else:
        ax = plot.sweep_map(shown)
    if shown is not grid:
        ax.set_ylabel(f"starting point x[{k}] ({problem.name})")
    figure = ax.get_figure(root=True)
    assert figure is not None  # an axes drawn by gdkernel.plot
    figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)


def _method(options: dict[str, Any], specs: dict[str, Axis]) -> str:
    """The method and the settings it shares with every member: `adam (eps=1e-08)`."""
    shared = {k: v for k, v in options.get("hyperparams", {}).items() if k not in specs}
    if "momentum" in options and "momentum" not in specs:
        shared = {"momentum": options["momentum"], **shared}
    text = ", ".join(
        f"{k}={v}" if isinstance(v, bool | str) else f"{k}={v:g}" for k, v in shared.items()
    )
    return f"{options['method']} ({text})" if text else str(options["method"])


def _summary(
    grid: SweepResult,
    problem: Problem,
    lr_axis: Axis,
    axes: list[Axis],
    specs: dict[str, Axis],
    options: dict[str, Any],
    wall: float,
    calls: int | None,
) -> str:
    shape = np.shape(grid.status)
    n_lr, n_g = shape[0], shape[-1]
    names = grid.grid_axes.names
    sizes = [_many(n_lr, "learning rate")]
    sizes += [f"{n} {name}" for name, n in zip(names, shape[1:-1], strict=True)]
    sizes.append(_many(n_g, "starting point"))
    dtype = np.asarray(grid.cost).dtype
    width = max([15, *(len(name) + 2 for name in names)])  # the labels of the lines below

    def line(label: str, text: str, extra: int) -> str:
        return f"  {label:<{width + extra}}{text}"

    lines = [f"{problem.name}: {' x '.join(sizes)} = {_many(math.prod(shape), 'member')} ({dtype})"]
    if options["method"] not in ("gd", "sgd"):
        lines.append(line("method", _method(options, specs), 2))
    lines.append(line("learning rates", describe_range(lr_axis, "log-spaced"), 2))
    for name, values in zip(names, grid.grid_axes.values, strict=True):
        spec = specs.get(name)
        if spec is None:  # not typed as a range: the values run
            text = ", ".join(f"{float(v):g}" for v in np.asarray(values))
        else:
            text = describe_range(spec, "log-spaced" if spec.spacing == "log" else "linear")
        lines.append(line(name, text, 2))
    lines += [
        line("starting points", describe_guesses(axes), 2),
        "",
        f"{'status':<10} {'members':>8}",
    ]
    lines += [f"{s.name:<10} {c:>8}" for s, c in grid.counts().items()]
    lines.append("")
    best = None
    for among in ("converged", "finite"):
        try:
            best = grid.best(among=among)
            break
        except ValueError:
            continue
    if best is None:
        lines.append(
            "best member: none (every member diverged, had invalid input or ended with a "
            "non-finite cost)"
        )
    else:
        res = best.result
        lines += [
            f"best member (lowest cost among {among}):",
            line("learning rate", _brief(best.learning_rate), 0),
            *(line(name, _brief(best.coords[name]), 0) for name in names),
            line("x0", _brief(best.initial_guess), 0),
            line("x", _brief(res.x), 0),
            line("cost", _brief(res.cost), 0),
            line("iterations", str(int(res.iterations)), 0),
            line("status", Status(int(res.status)).name, 0),
        ]
    calls_note = "" if calls is None else "1 call, " if calls == 1 else f"{calls} calls, "
    lines += ["", f"wall time  {wall:.2f} s ({calls_note}compilation included)"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the parser


class _Parser(argparse.ArgumentParser):
    """Errors in one line: `gdkernel sweep: error: ... (see --help)`, exit status 2."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _add_common(p: argparse.ArgumentParser, sweep: bool) -> None:
    p.add_argument(
        "--function",
        "-f",
        default=DEFAULT_FUNCTION if sweep else "quadratic",
        metavar="NAME",
        help=f"a built-in ({', '.join(BUILTINS)}) or module:attribute, your own cost "
        f"`f(x) -> scalar` (default: %(default)s)",
    )
    if sweep:
        p.add_argument(
            "--lr",
            type=learning_rates,
            metavar="LO:HI:N",
            help="learning rates: a number or a log-spaced range lo:hi:n "
            "(default for a built-in: see below)",
        )
        p.add_argument(
            "--x0",
            type=starting_points,
            metavar="LO:HI:N[,...]",
            help="starting points: a number or a linear range lo:hi:n per coordinate, "
            "comma-separated; ranges form a mesh; coordinates left out take the built-in's "
            "default (e.g. -2:2:64 for rosenbrock: x[0] from -2 to 2, x[1] = 1; "
            "default for a built-in: see below)",
        )
    else:
        p.add_argument(
            "--x0",
            type=starting_point,
            metavar="X[,X...]",
            help="the starting point: a number, or comma-separated numbers for a vector "
            "(default for a built-in: see below)",
        )
        p.add_argument(
            "--lr",
            type=learning_rate,
            metavar="LR",
            help="the learning rate > 0 (default for a built-in: see below)",
        )
    ranges = " (or a range lo:hi:n, a grid axis)" if sweep else ""
    p.add_argument(
        "--precision",
        type=nonnegative_values if sweep else one_nonnegative_float,
        help=f"stop once the step is below this{ranges} (default: 1e-4; rosenbrock: 1e-5 "
        "with --grad-tol 1e-2 unless --precision is given)",
    )
    p.add_argument(
        "--max-iter",
        type=nonnegative_int,
        metavar="N",
        help=f"iteration cap (default for a built-in: see below; else {DEFAULT_MAX_ITER})",
    )
    p.add_argument(
        "--norm",
        choices=("l1", "l2", "max"),
        default="l1",
        help="the norm of the step compared with --precision (default: %(default)s)",
    )
    p.add_argument(
        "--grad-tol",
        type=nonnegative_values if sweep else one_nonnegative_float,
        metavar="TOL",
        help=f"report a step-rule stop with a gradient norm above TOL as STALLED{ranges}",
    )
    p.add_argument(
        "--method",
        choices=_optimizers.NAMES,
        default="gd",
        metavar="NAME",
        help=f"the update rule: gdkernel's {', '.join(_optimizers.BUILTIN)} (sgd is gd), or "
        f"an optax optimizer ({', '.join(_optimizers.OPTAX)}; needs optax) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--momentum",
        type=momentum_values if sweep else momentum_value,
        help=f"for the momentum methods, in [0, 1){ranges} (default: {MOMENTUM})",
    )
    value = "a number, a range lo:hi:n[:log|:linear] (a grid axis), " if sweep else "a number, "
    p.add_argument(
        "--hyperparam",
        type=hyperparam if sweep else hyperparam_value,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"a keyword of the optax optimizer, e.g. b1=0.9; VALUE {value}or true/false; "
        "may be repeated",
    )
    p.add_argument("--x64", action="store_true", help="compute in float64 (default float32)")


def _add_outputs(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--out",
        action="append",
        default=[],
        metavar="FILE",
        help=f"write {what} to FILE: .csv, .json, or .npz (read back with "
        "gdkernel.load_sweep); may be repeated",
    )


def _defaults_table() -> str:
    rows = [("function", "run --x0", "run --lr", "sweep --lr", "sweep --x0", "--max-iter")]
    for name, d in DEFAULTS.items():
        b = BUILTINS[name]
        rows.append(
            (
                name,
                ",".join(f"{v:g}" for v in b.x0),
                f"{b.learning_rate:g}",
                d.lr,
                d.x0,
                str(d.max_iter),
            )
        )
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "defaults for the built-in functions:\n  " + "\n  ".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The `gdkernel` argument parser with its `run` and `sweep` commands."""
    parser = _Parser(
        prog="gdkernel",
        description="Gradient descent as a jit-compiled, vmappable JAX kernel.",
    )
    parser.add_argument("--version", action="version", version=f"gdkernel {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,sweep}")
    run = commands.add_parser(
        "run",
        epilog=_defaults_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="minimise one function from one starting point",
        description="Minimise one function from one starting point and print where the "
        "minimum is, the slope there, the iterations and the status.",
    )
    _add_common(run, sweep=False)
    _add_outputs(run, "the run (one member, as a sweep writes it)")
    run.add_argument(
        "--plot",
        metavar="FILE",
        help="draw the run's path over the cost and its cost per iteration to FILE (.png, "
        ".pdf, .svg, ...); the run records its history for it",
    )
    run.set_defaults(handler=command_run)
    sw = commands.add_parser(
        "sweep",
        epilog=_defaults_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="every learning rate x every starting point",
        description="Run every learning rate from every starting point in one compiled "
        "program and print a summary. Without options: Rosenbrock, 32 x 64 members. A range "
        "lo:hi:n given to --momentum, --precision, --grad-tol or --hyperparam adds a grid "
        "axis: linear, or log-spaced when both ends are positive and two decades or more "
        "apart (lo:hi:n:log or lo:hi:n:linear says which).",
    )
    _add_common(sw, sweep=True)
    _add_outputs(sw, "every member")
    sw.add_argument(
        "--plot",
        metavar="FILE",
        help="draw the sweep map (gdkernel.plot.sweep_map) to FILE (.png, .pdf, .svg, ...)",
    )
    sw.add_argument(
        "--chunk-size",
        type=positive_int,
        metavar="N",
        help="members per compiled call (default: as many as fit in memory)",
    )
    sw.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    sw.set_defaults(handler=command_sweep)
    return parser


def _join_negative_values(argv: Sequence[str]) -> list[str]:
    """`--x0 -2:2:64` -> `--x0=-2:2:64`, so argparse does not read the value as an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _VALUE_OPTIONS and i + 1 < len(argv) and _NEGATIVE.match(argv[i + 1]):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
        else:
            out.append(arg)
            i += 1
    return out


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# The library's argument names and the flags that set them, for its messages.
_FLAGS = {
    "cost_fn": "--function",
    "initial_guess": "--x0",
    "initial_guesses": "--x0",
    "learning_rate": "--lr",
    "learning_rates": "--lr",
    "precision": "--precision",
    "max_iter": "--max-iter",
    "grad_tol": "--grad-tol",
    "norm": "--norm",
    "method": "--method",
    "momentum": "--momentum",
    "hyperparams": "--hyperparam",
    "chunk_size": "--chunk-size",
    "out": "--out",
}
_NAMED = re.compile(r"`(\w+)(?:=(?:'([^'`]*)'|([^`]*)))?`")
_METHOD = re.compile(r"\bmethod='(\w+)'")  # the library's `method=...` in plain words
_HYPERPARAM = re.compile(r"`hyperparams\['(\w+)'\]`")
_X64 = re.compile(r"jax\.config\.update\('jax_enable_x64', True\)|\bjax_enable_x64\b")
# a history's spacing has no flag: the command line records every iteration
_HISTORY = re.compile(r"raise `history_every` or lower `max_iter`")
# nor has the divergence rule's factor: the command line keeps the default
_DIVERGENCE = re.compile(r"`divergence` times")


def in_cli_terms(message: str) -> str:
    """A library message with its argument names written as the flags that set them.

    Example:
        >>> in_cli_terms("stream it to a file with `out='sweep.npz'`")
        'stream it to a file with `--out sweep.npz`'
    """

    def flag(match: re.Match[str]) -> str:
        name, quoted, bare = match.groups()
        if name not in _FLAGS:
            return match.group(0)
        value = quoted if quoted is not None else bare
        return f"`{_FLAGS[name]}`" if value is None else f"`{_FLAGS[name]} {value}`"

    message = _HYPERPARAM.sub(r"`--hyperparam \1`", message)
    message = _X64.sub("`--x64`", message)
    message = _HISTORY.sub("lower `max_iter`", message)
    message = _DIVERGENCE.sub(f"{DIVERGENCE:g} times", message)
    message = message.replace(
        ONE_NUMBER, " (x is one number here: give `--x0` one entry per coordinate, e.g. `--x0 1,2`)"
    )
    return _METHOD.sub(r"`--method \1`", _NAMED.sub(flag, message))


def _on_a_worker(call: Callable[[], int]) -> int:
    """`call()` on a worker thread, this thread waiting where Ctrl-C reaches it: a thread that
    waits on a compiled program itself sees the interrupt only once the program ends."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["status"] = call()
        except BaseException as err:  # re-raised in the waiting thread
            outcome["error"] = err

    worker = threading.Thread(target=in_callers_settings(work), name="gdkernel-cli", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
    if "error" in outcome:
        raise outcome["error"]
    return int(outcome["status"])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 bad arguments).

    Args:
        argv: the arguments without the program name (default `sys.argv[1:]`).

    Example:
        >>> main(["--version"])
        gdkernel 0.1.0
        0
    """
    parser = build_parser()
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        ns, unknown = parser.parse_known_args(_join_negative_values(args))
    except SystemExit as done:  # --help, --version, or a parse error already reported
        return done.code if isinstance(done.code, int) else 2
    if unknown:  # named by the command that was given them
        prog = f"gdkernel {ns.command}" if getattr(ns, "command", None) else "gdkernel"
        print(
            f"{prog}: error: unrecognized arguments: {' '.join(unknown)} (see `{prog} --help`)",
            file=sys.stderr,
        )
        return 2
    if ns.x64:
        jax.config.update("jax_enable_x64", True)  # before any array is made
    prog = f"gdkernel {ns.command}"

    def show_warning(message: Any, category: Any, *_: Any, **__: Any) -> None:
        print(f"{prog}: warning: {in_cli_terms(_one_line(message))}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # shown as a line, whatever filters the caller set
            warnings.showwarning = show_warning
            return _on_a_worker(lambda: ns.handler(ns, sys.stdout))
    except BrokenPipeError:  # e.g. `gdkernel sweep | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        if argv is None:  # the command itself: stop now, compiled programs and threads alike
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    except (ValueError, TypeError) as err:  # bad input, reported by gdkernel or the parser
        print(f"{prog}: error: {in_cli_terms(_one_line(err))}", file=sys.stderr)
        return 2
    except (ImportError, OSError) as err:
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return 1
