r"""The command line: `gdkernel run` (one problem) and `gdkernel sweep` (a grid of them).

A thin layer over `gradient_descent` and `sweep`:

    gdkernel run --function quadratic --x0 8 --lr 0.001 --precision 1e-5 --max-iter 500
    gdkernel sweep --function rosenbrock --lr 1e-4:1e-2:32 --x0 -2:2:64 --out results.csv
    gdkernel sweep --plot sweep.png

`--function` is a built-in name (`gdkernel.functions.BUILTINS`) or `module:attribute`, the
user's own importable cost (imported with `importlib`; no text is ever evaluated). Ranges are
`lo:hi:n`: learning rates log-spaced (`numpy.geomspace`), starting points linear
(`numpy.linspace`). For a vector `x`, `--x0` takes comma-separated coordinates, each a number
or a range; ranges are combined into a mesh, and coordinates left out take the built-in's
default starting point (so `--x0 -2:2:64` for Rosenbrock varies `x[0]` with `x[1] = 1`).

Bad arguments exit with status 2 and one line on stderr.

Example:
    >>> from gdkernel.cli import main
    >>> main(["run", "--function", "quadratic", "--lr", "0.1"])  # doctest: +SKIP
    Minimum occurs at x-value: 0.33333334
    ...
    0
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import jax
import numpy as np

from . import __version__, _export
from ._result import Status, SweepResult
from ._solve import gradient_descent
from ._sweep import sweep
from .functions import BUILTINS

# Members per compiled call of a long sweep: the learning-rate axis is cut into chunks of
# about this many members (all the same size, so the program compiles once) and the progress
# bar advances per chunk. Big enough that the per-call overhead stays small.
CHUNK_MEMBERS = 4096


class Defaults(NamedTuple):
    """What a built-in runs with when an option is left out (besides its `x0` and `lr`)."""

    lr: str  # the sweep's learning-rate range
    x0: str  # the sweep's starting-point range (first coordinate)
    max_iter: int


DEFAULTS: dict[str, Defaults] = {
    "quadratic": Defaults("1e-4:1:32", "-10:10:64", 2000),
    "rosenbrock": Defaults("1e-4:1e-2:32", "-2:2:64", 10000),
    "himmelblau": Defaults("1e-4:0.1:32", "-5:5:64", 2000),
    "rastrigin": Defaults("1e-4:0.1:32", "-5.12:5.12:64", 2000),
}
DEFAULT_FUNCTION = "rosenbrock"
DEFAULT_MAX_ITER = 100  # for the user's own function: the library's default

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


class UsageError(ValueError):
    """A bad command-line argument: reported in one line, exit status 2."""


# ------------------------------------------------------------------------ parsing values


class Axis(NamedTuple):
    """One coordinate of the starting points (or the learning rates): its values and spec."""

    values: np.ndarray  # float64, 1-D
    text: str


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{what}: must be finite, got {text!r}")
    return value


def _axis(text: str, spacing: str, what: str) -> Axis:
    """A number, or a range `lo:hi:n` spaced linearly or geometrically."""
    text = text.strip()
    if ":" not in text:
        return Axis(np.array([_number(text, what)]), text)
    parts = text.split(":")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(
            f"{what}: malformed range {text!r} (use lo:hi:n, e.g. 1e-4:1e-2:32)"
        )
    lo, hi = _number(parts[0], what), _number(parts[1], what)
    try:
        n = int(parts[2])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{what}: malformed range {text!r}: n must be an integer >= 1, got {parts[2]!r}"
        ) from None
    if n < 1:
        raise argparse.ArgumentTypeError(
            f"{what}: malformed range {text!r}: n must be an integer >= 1"
        )
    if spacing == "log":
        if lo <= 0 or hi <= 0:
            raise argparse.ArgumentTypeError(f"{what}: a learning rate must be > 0, got {text!r}")
        return Axis(np.geomspace(lo, hi, n), text)
    return Axis(np.linspace(lo, hi, n), text)


def learning_rates(text: str) -> Axis:
    """`--lr` of `sweep`: a number or a log-spaced range `lo:hi:n`, all > 0."""
    axis = _axis(text, "log", "learning rate")
    if np.any(axis.values <= 0):
        raise argparse.ArgumentTypeError(f"learning rate must be > 0, got {text!r}")
    return axis


def learning_rate(text: str) -> float:
    """`--lr` of `run`: one number > 0."""
    if ":" in text:
        raise argparse.ArgumentTypeError(
            f"one learning rate for `run`, got the range {text!r} (ranges are for `gdkernel sweep`)"
        )
    value = _number(text, "learning rate")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"learning rate must be > 0, got {text!r}")
    return value


def starting_points(text: str) -> list[Axis]:
    """`--x0` of `sweep`: comma-separated coordinates, each a number or a range `lo:hi:n`."""
    return [_axis(part, "linear", "starting point") for part in text.split(",")]


def starting_point(text: str) -> list[float]:
    """`--x0` of `run`: comma-separated numbers."""
    if ":" in text:
        raise argparse.ArgumentTypeError(
            f"one starting point for `run`, got the range {text!r} (ranges are for `gdkernel sweep`)"
        )
    return [_number(part, "starting point") for part in text.split(",")]


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_count(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def _momentum(text: str) -> float:
    value = _tolerance(text)
    if not value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


# ---------------------------------------------------------------------- the cost function


class Problem(NamedTuple):
    """The cost to minimise and what the command line knows about it."""

    name: str
    fn: Callable[..., Any]
    dim: int | None  # None: the user's function, any shape
    x0: tuple[float, ...] | None
    lr: float | None
    defaults: Defaults | None


def resolve_function(spec: str) -> Problem:
    """A built-in name, or `module:attribute` imported with `importlib` (never `eval`).

    The current directory is searched for `module` (as `python -m` does).

    Raises:
        UsageError: an unknown name, a module that fails to import, a missing attribute.
    """
    if spec in BUILTINS:
        b = BUILTINS[spec]
        return Problem(spec, b.fn, b.dim, b.x0, b.learning_rate, DEFAULTS.get(spec))
    if ":" not in spec:
        raise UsageError(
            f"unknown function {spec!r}; built-ins: {', '.join(BUILTINS)}; "
            "or give your own as module:attribute"
        )
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"`--function` must be a built-in name or module:attribute, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:
        raise UsageError(
            f"`--function` {spec!r}: cannot import {module_name!r} ({type(err).__name__}: {err})"
        ) from None
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(
                f"`--function` {spec!r}: {module_name!r} has no {attribute!r}"
            ) from None
    return Problem(spec, obj, None, None, None, None)


def _need(value: Any, option: str, problem: Problem) -> Any:
    if value is None:
        raise UsageError(f"`{option}` is required for {problem.name!r} (not a built-in)")
    return value


def _fill(coords: Sequence[Any], problem: Problem, option: str = "--x0") -> list[Any]:
    """Coordinates checked against a built-in's dimension; left-out ones from its `x0`."""
    if problem.dim is None:
        return list(coords)
    if problem.dim == 1 and len(coords) != 1:
        raise UsageError(f"{problem.name} takes a scalar x: give one number to `{option}`")
    if len(coords) > problem.dim:
        raise UsageError(
            f"{problem.name} takes {problem.dim} coordinates; `{option}` has {len(coords)}"
        )
    assert problem.x0 is not None
    return list(coords) + list(problem.x0[len(coords) :])


def _dtype() -> np.dtype:
    return np.dtype(np.float64 if jax.config.jax_enable_x64 else np.float32)


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


def _solver_options(ns: argparse.Namespace, problem: Problem) -> dict[str, Any]:
    max_iter = ns.max_iter
    if max_iter is None:
        max_iter = problem.defaults.max_iter if problem.defaults else DEFAULT_MAX_ITER
    return {
        "precision": ns.precision,
        "max_iter": max_iter,
        "norm": ns.norm,
        "grad_tol": ns.grad_tol,
        "method": ns.method,
        "momentum": ns.momentum,
    }


def command_run(ns: argparse.Namespace, out: TextIO) -> int:
    """`gdkernel run`: one `gradient_descent`, printed as the tutorial prints it."""
    problem = resolve_function(ns.function)
    coords = _fill(ns.x0 if ns.x0 is not None else _need(problem.x0, "--x0", problem), problem)
    dtype = _dtype()
    x0: Any = np.asarray(coords, dtype=dtype)
    if problem.dim == 1 or (problem.dim is None and len(coords) == 1):
        x0 = x0[0]
    lr = ns.lr if ns.lr is not None else _need(problem.lr, "--lr", problem)
    res = gradient_descent(problem.fn, x0, lr, **_solver_options(ns, problem))
    status = Status(int(res.status))
    print(f"Minimum occurs at x-value: {_show(res.x)}", file=out)
    print(f"Slope at the minimum is: {_show(res.grad)}", file=out)
    print(f"Cost at the minimum is: {_show(res.cost)}", file=out)
    print(f"Iterations: {int(res.iterations)}", file=out)
    print(f"Status: {status.name} ({status.message})", file=out)
    return 0


class Progress:
    """A tqdm bar on stderr (a line per chunk without tqdm); nothing when not `enabled`."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self.bar: Any = None
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, unit=" members", desc="sweep", file=sys.stderr, leave=False)

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
        else:
            pct = 100 * self.done // self.total
            print(f"sweep: {self.done}/{self.total} members ({pct}%)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def sweep_in_chunks(
    fn: Callable[..., Any],
    guesses: np.ndarray,
    lrs: np.ndarray,
    options: dict[str, Any],
    chunk_members: int,
    progress: Callable[[int], Progress],
) -> tuple[SweepResult, int]:
    """`sweep` over the grid, the learning-rate axis cut into equal chunks.

    Each chunk holds `max(1, chunk_members // n_x0)` learning rates; the last is padded with
    copies of the last learning rate (dropped afterwards), so every chunk reuses one compiled
    program. Returns the whole grid (NumPy leaves) and the number of chunks.
    """
    n_lr, n_g = lrs.shape[0], guesses.shape[0]
    rows = max(1, min(n_lr, chunk_members // n_g))
    n_chunks = -(-n_lr // rows)
    padded = np.concatenate([lrs, np.repeat(lrs[-1:], n_chunks * rows - n_lr)])
    bar = progress(n_chunks)
    parts = []
    try:
        for c in range(n_chunks):
            grid = sweep(fn, guesses, padded[c * rows : (c + 1) * rows], **options)
            parts.append(jax.tree.map(np.asarray, grid))  # waits for the chunk
            bar.update(min(rows, n_lr - c * rows) * n_g)
    finally:
        bar.close()
    stacked = ("x", "cost", "grad", "step_size", "iterations", "status", "learning_rate")
    fields = {f: np.concatenate([getattr(p, f) for p in parts])[:n_lr] for f in stacked}
    return SweepResult(history=None, initial_guess=parts[0].initial_guess, **fields), n_chunks


def _grid_guesses(axes: list[Axis], problem: Problem) -> tuple[np.ndarray, list[Axis]]:
    """The starting points (a mesh of the coordinates, first coordinate slowest) and the
    coordinates, left-out ones filled in from the built-in's default."""
    filled = _fill(axes, problem)
    axes = [a if isinstance(a, Axis) else Axis(np.array([a]), f"{a:g}") for a in filled]
    mesh = np.meshgrid(*(a.values for a in axes), indexing="ij")
    guesses = np.stack([m.ravel() for m in mesh], axis=-1).astype(_dtype())
    if len(axes) == 1 and problem.dim in (1, None):
        guesses = guesses[:, 0]  # scalar starting points
    return guesses, axes


def _describe(axis: Axis, spacing: str) -> str:
    """`1e-4 .. 1e-2, 32 log-spaced` for a range, the number itself otherwise."""
    if ":" not in axis.text:
        return axis.text
    lo, hi, n = axis.text.split(":")
    return f"{lo} .. {hi}, {n} {spacing}"


def _describe_guesses(axes: list[Axis]) -> str:
    if len(axes) == 1:
        return _describe(axes[0], "linear")
    return "; ".join(
        f"x[{k}]: {_describe(a, 'linear')}" if ":" in a.text else f"x[{k}] = {a.text}"
        for k, a in enumerate(axes)
    )


def command_sweep(ns: argparse.Namespace, out: TextIO) -> int:
    """`gdkernel sweep`: a learning rate x starting point grid and a summary."""
    problem = resolve_function(ns.function)
    d = problem.defaults
    lr_axis = ns.lr if ns.lr is not None else learning_rates(_need(d, "--lr", problem).lr)
    x0_axes = ns.x0 if ns.x0 is not None else starting_points(_need(d, "--x0", problem).x0)
    guesses, axes = _grid_guesses(x0_axes, problem)
    lrs = lr_axis.values.astype(_dtype())
    options = _solver_options(ns, problem)
    for path in ns.out:
        if Path(path).suffix.lower() not in _export.SUFFIXES:
            raise UsageError(f"`--out` must end in {', '.join(_export.SUFFIXES)}; got {path!r}")
    if ns.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise ImportError("`--plot` needs matplotlib: pip install 'gdkernel[plot]'")

    show = not ns.quiet and sys.stderr.isatty()
    n = lrs.shape[0] * guesses.shape[0]
    start = time.perf_counter()
    grid, n_chunks = sweep_in_chunks(
        problem.fn,
        guesses,
        lrs,
        options,
        ns.chunk_size,
        lambda chunks: Progress(n, show and chunks > 1),
    )
    wall = time.perf_counter() - start

    print(_summary(grid, problem, lr_axis, axes, wall, n_chunks), file=out)
    meta = {
        "function": problem.name,
        "dtype": str(guesses.dtype),
        "learning_rates": lr_axis.text,
        "x0": [a.text for a in axes],
        "options": options,
    }
    for path in ns.out:
        _export.write(grid, path, meta)
        print(f"wrote {path}", file=out)
    if ns.plot is not None:
        _plot(grid, axes, problem, ns.plot)
        print(f"wrote {ns.plot}", file=out)
    return 0


def _plot(grid: SweepResult, axes: list[Axis], problem: Problem, path: str) -> None:
    """`plot.sweep_map(grid)` saved to `path`. When only one coordinate of a vector starting
    point varies, the map's starting-point axis shows that coordinate's values."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from . import plot

    varying = [k for k, a in enumerate(axes) if a.values.size > 1]
    shown = grid
    if len(axes) > 1 and len(varying) == 1:
        (k,) = varying
        shown = grid._replace(initial_guess=np.asarray(grid.initial_guess)[:, k])
    ax = plot.sweep_map(shown)
    if shown is not grid:
        ax.set_ylabel(f"starting point x[{k}] ({problem.name})")
    ax.figure.savefig(path, dpi=150, bbox_inches="tight")


def _summary(
    grid: SweepResult, problem: Problem, lr_axis: Axis, axes: list[Axis], wall: float, chunks: int
) -> str:
    n_lr, n_g = np.shape(grid.status)
    dtype = np.asarray(grid.cost).dtype
    lines = [
        f"{problem.name}: {n_lr} learning rates x {n_g} starting points = {n_lr * n_g} members ({dtype})",
        f"  learning rates   {_describe(lr_axis, 'log-spaced')}",
        f"  starting points  {_describe_guesses(axes)}",
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
        lines.append("best member: none (no member ended with a finite cost)")
    else:
        res = best.result
        lines += [
            f"best member (lowest cost among {among}):",
            f"  learning rate  {_brief(best.learning_rate)}",
            f"  x0             {_brief(best.initial_guess)}",
            f"  x              {_brief(res.x)}",
            f"  cost           {_brief(res.cost)}",
            f"  iterations     {int(res.iterations)}",
            f"  status         {Status(int(res.status)).name}",
        ]
    chunk_note = "1 call" if chunks == 1 else f"{chunks} calls"
    lines += ["", f"wall time  {wall:.2f} s ({chunk_note}, compilation included)"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the parser


class _Parser(argparse.ArgumentParser):
    """Errors in one line: `gdkernel sweep: error: ... (see --help)`, exit status 2."""

    def error(self, message: str) -> Any:  # type: ignore[override]
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
            "(default for a built-in: its range in `gdkernel.cli.DEFAULTS`)",
        )
        p.add_argument(
            "--x0",
            type=starting_points,
            metavar="LO:HI:N[,...]",
            help="starting points: a number or a linear range lo:hi:n per coordinate, "
            "comma-separated; ranges form a mesh; coordinates left out take the built-in's "
            "default (e.g. -2:2:64 for rosenbrock: x[0] from -2 to 2, x[1] = 1)",
        )
    else:
        p.add_argument(
            "--x0",
            type=starting_point,
            metavar="X[,X...]",
            help="the starting point: a number, or comma-separated numbers for a vector "
            "(default for a built-in: its `x0`)",
        )
        p.add_argument(
            "--lr",
            type=learning_rate,
            metavar="LR",
            help="the learning rate > 0 (default for a built-in: its `learning_rate`)",
        )
    p.add_argument(
        "--precision",
        type=_tolerance,
        default=1e-4,
        help="stop once the step is below this (default: %(default)s)",
    )
    p.add_argument(
        "--max-iter",
        type=_count,
        metavar="N",
        help=f"iteration cap (default for a built-in: see `gdkernel.cli.DEFAULTS`; "
        f"else {DEFAULT_MAX_ITER})",
    )
    p.add_argument("--norm", choices=("l1", "l2", "max"), default="l1", help="step norm")
    p.add_argument(
        "--grad-tol",
        type=_tolerance,
        metavar="TOL",
        help="report a step-rule stop with a gradient norm above TOL as STALLED",
    )
    p.add_argument(
        "--method", choices=("gd", "momentum", "nesterov"), default="gd", help="update rule"
    )
    p.add_argument(
        "--momentum", type=_momentum, default=0.9, help="for the momentum methods, in [0, 1)"
    )
    p.add_argument("--x64", action="store_true", help="compute in float64 (default float32)")


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
        help="minimise one function from one starting point",
        description="Minimise one function from one starting point and print where the "
        "minimum is, the slope there, the iterations and the status.",
    )
    _add_common(run, sweep=False)
    run.set_defaults(handler=command_run)
    sw = commands.add_parser(
        "sweep",
        help="every learning rate x every starting point",
        description="Run every learning rate from every starting point in one compiled "
        "program and print a summary. Without options: Rosenbrock, 32 x 64 members.",
    )
    _add_common(sw, sweep=True)
    sw.add_argument(
        "--out",
        action="append",
        default=[],
        metavar="FILE",
        help="write every member to FILE (.csv, .json or .npz); may be repeated",
    )
    sw.add_argument(
        "--plot", metavar="FILE", help="draw the sweep map (gdkernel.plot.sweep_map) to FILE"
    )
    sw.add_argument(
        "--chunk-size",
        type=_positive_count,
        default=CHUNK_MEMBERS,
        metavar="N",
        help="members per compiled call; the progress bar advances per call (default: %(default)s)",
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 bad arguments).

    Args:
        argv: the arguments without the program name (default `sys.argv[1:]`).

    Example:
        >>> main(["--version"])  # doctest: +SKIP
        gdkernel 0.1.0
        0
    """
    parser = build_parser()
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        ns = parser.parse_args(_join_negative_values(args))
    except SystemExit as done:  # --help, --version, or a parse error already reported
        return done.code if isinstance(done.code, int) else 2
    if ns.x64:
        jax.config.update("jax_enable_x64", True)  # before any array is made
    prog = f"gdkernel {ns.command}"

    def show_warning(message: Any, category: Any, *_: Any, **__: Any) -> None:
        print(f"{prog}: warning: {_one_line(message)}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            return ns.handler(ns, sys.stdout)
    except (ValueError, TypeError) as err:  # bad input, reported by gdkernel or the parser
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except (ImportError, OSError) as err:
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return 1
