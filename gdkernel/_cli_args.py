"""Turning command-line text into values: numbers, ranges, starting points, the cost.

Ranges are `lo:hi:n`: learning rates log-spaced (`numpy.geomspace`), starting points linear
(`numpy.linspace`). The other settings a sweep may grid (`--momentum`, `--precision`,
`--grad-tol`, `--hyperparam NAME=...`) are linear unless both ends are positive and two
decades or more apart (then log-spaced, as learning rates are); `lo:hi:n:log` or
`lo:hi:n:linear` says which. `--function` is a built-in name or `module:attribute`,
imported with `importlib`; no text is ever evaluated.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from . import _optimizers
from ._store import cannot_write, missing_folder
from ._validate import cast_in_range
from .functions import BUILTINS


class Defaults(NamedTuple):
    """What a built-in runs with when an option is left out (besides its `x0` and `lr`)."""

    lr: str  # the sweep's learning-rate range
    x0: str  # the sweep's starting-point range (first coordinate)
    max_iter: int
    precision: float = 1e-4
    grad_tol: float | None = None


DEFAULTS: dict[str, Defaults] = {
    "quadratic": Defaults("1e-4:1:32", "-10:10:64", 2000),
    # Rosenbrock's valley is so flat that with precision 1e-4 most small learning rates
    # "converge" on the step rule far from the minimum: the defaults flag those as STALLED.
    "rosenbrock": Defaults("1e-4:1e-2:32", "-2:2:64", 10000, precision=1e-5, grad_tol=1e-2),
    "himmelblau": Defaults("1e-4:0.1:32", "-5:5:64", 2000),
    "rastrigin": Defaults("1e-4:0.1:32", "-5.12:5.12:64", 2000),
}
DEFAULT_FUNCTION = "rosenbrock"  # of `gdkernel sweep`; `gdkernel run` uses the quadratic
DEFAULT_MAX_ITER = 100  # for the user's own function: the library's default


class UsageError(ValueError):
    """A bad command-line argument: reported in one line, exit status 2."""


# ------------------------------------------------------------------------ parsing values


class Axis(NamedTuple):
    """One coordinate of the starting points, the learning rates or another setting: its
    values and the text typed."""

    values: np.ndarray  # float64, 1-D
    text: str
    spacing: str = "linear"  # of a range: "linear" or "log"

    @property
    def is_range(self) -> bool:
        return ":" in self.text

    def value(self) -> Any:
        """What the library takes: a range's values (a grid axis), else the number itself."""
        return self.values if self.is_range else float(self.values[0])


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


SPACINGS = ("linear", "log")


def _axis(text: str, spacing: str) -> Axis:
    """A number, or a range `lo:hi:n` spaced linearly or geometrically (`"log"`); with
    `spacing="auto"`, `lo:hi:n[:log|:linear]`, by default as `auto_spacing` says."""
    text = text.strip()
    if ":" not in text:
        return Axis(np.array([_number(text)]), text)
    parts = text.split(":")
    learning = spacing == "log"  # `--lr`'s ranges, always log-spaced
    if spacing == "auto" and len(parts) == 4:
        if parts[3] not in SPACINGS:
            raise argparse.ArgumentTypeError(
                f"malformed range {text!r}: the spacing must be log or linear, got {parts[3]!r}"
            )
        spacing = parts.pop()
    if len(parts) != 3:
        example = "1e-4:1e-2:32" if spacing != "auto" else "0.8:0.99:5, or 1e-8:1e-4:5:log"
        form = "lo:hi:n" if spacing != "auto" else "lo:hi:n[:log|:linear]"
        raise argparse.ArgumentTypeError(f"malformed range {text!r} (use {form}, e.g. {example})")
    lo, hi = _number(parts[0]), _number(parts[1])
    try:
        n = int(parts[2])
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(
            f"malformed range {text!r}: n must be an integer >= 1, got {parts[2]!r}"
        )
    if n == 1 and lo != hi:
        raise argparse.ArgumentTypeError(
            f"malformed range {text!r}: a range of 1 point needs lo = hi (or give the one "
            "value alone)"
        )
    if spacing == "auto":
        spacing = auto_spacing(lo, hi)
    if spacing == "log":
        if lo <= 0 or hi <= 0:
            what = "learning rates must be" if learning else "a log-spaced range needs ends"
            raise argparse.ArgumentTypeError(f"{what} > 0, got {text!r}")
        return Axis(np.geomspace(lo, hi, n), text, "log")
    return Axis(np.linspace(lo, hi, n), text, "linear")


def auto_spacing(lo: float, hi: float) -> str:
    """`"log"` when both ends are positive and two decades or more apart (a scale, such as
    `eps` or `precision`), else `"linear"` (a coefficient, such as `b1` or `momentum`).

    Example:
        >>> auto_spacing(1e-8, 1e-4), auto_spacing(0.8, 0.99), auto_spacing(0.0, 0.5)
        ('log', 'linear', 'linear')
    """
    if lo > 0 and hi > 0 and max(lo, hi) >= 100 * min(lo, hi):
        return "log"
    return "linear"


def learning_rates(text: str) -> Axis:
    """`--lr` of `sweep`: a number or a log-spaced range `lo:hi:n`, all > 0.

    Example:
        >>> learning_rates("1e-3:1e-1:3").values
        array([0.001, 0.01 , 0.1  ])
    """
    axis = _axis(text, "log")
    if np.any(axis.values <= 0):
        raise argparse.ArgumentTypeError(f"learning rates must be > 0, got {text!r}")
    return axis


def learning_rate(text: str) -> float:
    """`--lr` of `run`: one number > 0."""
    if ":" in text:
        raise argparse.ArgumentTypeError(
            f"one learning rate for `run`, got the range {text!r} (ranges are for `gdkernel sweep`)"
        )
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"learning rate must be > 0, got {text!r}")
    return value


def starting_points(text: str) -> list[Axis]:
    """`--x0` of `sweep`: comma-separated coordinates, each a number or a range `lo:hi:n`.

    Example:
        >>> [a.values.tolist() for a in starting_points("-1:1:3,0.5")]
        [[-1.0, 0.0, 1.0], [0.5]]
    """
    return [_axis(part, "linear") for part in text.split(",")]


def starting_point(text: str) -> list[float]:
    """`--x0` of `run`: comma-separated numbers."""
    if ":" in text:
        raise argparse.ArgumentTypeError(
            f"one starting point for `run`, got the range {text!r} (ranges are for `gdkernel sweep`)"
        )
    return [_number(part) for part in text.split(",")]


def _int_at_least(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be >= {least}, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    return _int_at_least(text, 0)


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def momentum_value(text: str) -> float:
    """`--momentum` of `run`: one number in [0, 1)."""
    _no_range(text)
    value = nonnegative_float(text)
    if not value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


def _no_range(text: str) -> None:
    if ":" in text:
        raise argparse.ArgumentTypeError(
            f"one value for `run`, got the range {text!r} (ranges are for `gdkernel sweep`)"
        )


def one_nonnegative_float(text: str) -> float:
    """`--precision` and `--grad-tol` of `run`: one number >= 0."""
    _no_range(text)
    return nonnegative_float(text)


def _setting(
    text: str, one: Callable[[str], float], check: Callable[[float], bool], rule: str
) -> Axis:
    """A setting of `sweep`: one number (`one` parses it), or a range whose every value
    passes `check` (a grid axis)."""
    if ":" not in text:
        return Axis(np.array([one(text)]), text.strip())
    axis = _axis(text, "auto")
    if not all(check(float(v)) for v in axis.values):
        raise argparse.ArgumentTypeError(f"{rule}, got {text!r}")
    return axis


def momentum_values(text: str) -> Axis:
    """`--momentum` of `sweep`: a number in [0, 1) or a range of them (a grid axis).

    Example:
        >>> momentum_values("0.5:0.9:3").values
        array([0.5, 0.7, 0.9])
    """
    return _setting(text, momentum_value, lambda v: 0 <= v < 1, "must be in [0, 1)")


def nonnegative_values(text: str) -> Axis:
    """`--precision` and `--grad-tol` of `sweep`: a number >= 0 or a range of them (a grid
    axis; log-spaced when its ends are two decades or more apart).

    Example:
        >>> nonnegative_values("1e-6:1e-3:4").values
        array([1.e-06, 1.e-05, 1.e-04, 1.e-03])
    """
    return _setting(text, nonnegative_float, lambda v: v >= 0, "must be >= 0")


class Hyperparam(NamedTuple):
    """One `--hyperparam NAME=VALUE`: a number or a range (`Axis`), a boolean, or a dtype's
    name (for `*_dtype`)."""

    name: str
    value: Axis | bool | str

    def library_value(self) -> Any:
        """What `hyperparams=` takes: a range's values (a grid axis), a number, a boolean, a
        dtype's name."""
        return self.value.value() if isinstance(self.value, Axis) else self.value


_BOOLEANS = {"true": True, "false": False}


def hyperparam(text: str) -> Hyperparam:
    """`--hyperparam NAME=VALUE` of `sweep`: VALUE a number, a range `lo:hi:n[:log|:linear]`
    (a grid axis), or `true`/`false`.

    Example:
        >>> hyperparam("b1=0.8:0.99:3").value.values
        array([0.8  , 0.895, 0.99 ])
    """
    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not sep or not name.isidentifier() or not raw:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE (e.g. b1=0.9, or b1=0.8:0.99:5 for a grid axis), got {text!r}"
        )
    if raw.lower() in _BOOLEANS:
        return Hyperparam(name, _BOOLEANS[raw.lower()])
    if name.endswith("_dtype"):  # optax's `mu_dtype` and kin: a dtype's name
        try:
            return Hyperparam(name, np.dtype(jax.numpy.dtype(raw)).name)
        except TypeError:
            raise argparse.ArgumentTypeError(f"{name}: not a dtype: {raw!r}") from None
    try:
        return Hyperparam(name, _axis(raw, "auto"))
    except argparse.ArgumentTypeError as err:
        why = str(err)
        if why.startswith("not a number") and ":" not in raw:  # (nor true/false)
            why = f"not a number, nor true/false: {raw!r}"
        raise argparse.ArgumentTypeError(f"{name}: {why}") from None


def hyperparam_value(text: str) -> Hyperparam:
    """`--hyperparam NAME=VALUE` of `run`: VALUE a number or `true`/`false`."""
    _no_range(text.partition("=")[2])
    return hyperparam(text)


def _keywords(method: str) -> list[str]:
    """The keywords an optax optimizer takes besides `learning_rate` (empty: any)."""
    return _optimizers.keywords(_optimizers.as_method(method)) or []  # ImportError: no optax


def hyperparams(given: Sequence[Hyperparam], method: str) -> dict[str, Any]:
    """The `--hyperparam`s as `hyperparams=`, checked against `--method` before any work.

    Raises:
        UsageError: a built-in method (it takes none), a name given twice, the learning rate,
            or a name the optax optimizer does not take (naming the ones it does).
    """
    if not given:
        return {}
    first = given[0].name
    if method not in _optimizers.OPTAX:
        own = "`--momentum`, " if method in ("momentum", "nesterov") else ""
        raise UsageError(
            f"`--hyperparam {first}` is for the optax methods (e.g. `--method adam`); "
            f"`--method {method}` takes none (its options are {own}`--precision`, ...)"
        )
    takes = _keywords(method)
    out: dict[str, Any] = {}
    for h in given:
        if h.name == "learning_rate":
            raise UsageError("`--hyperparam learning_rate`: the learning rate is `--lr`")
        if h.name in out:
            raise UsageError(f"`--hyperparam {h.name}` is given twice")
        if takes and h.name not in takes:
            raise UsageError(
                f"`--hyperparam {h.name}`: `--method {method}` takes no {h.name!r}; "
                f"it takes {', '.join(takes)}"
            )
        out[h.name] = h.library_value()
    return out


def plot_suffixes() -> tuple[str, ...]:
    """The file suffixes Matplotlib can save a figure as (`.png`, `.pdf`, `.svg`, ...).

    Raises:
        ImportError: Matplotlib is not installed.
    """
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise ImportError("`--plot` needs matplotlib: pip install 'gdkernel[plot]'") from None
    return tuple(f".{name}" for name in FigureCanvasBase.get_supported_filetypes())


def output_path(text: str, option: str, suffixes: Sequence[str]) -> Path:
    """A file to write, checked before any work: its suffix names a format in `suffixes`, it
    is not a folder, and its folder exists and can be written to.

    Raises:
        UsageError: naming `option` and what is wrong.
    """
    path = Path(text)
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"`{option}` must end in {', '.join(suffixes)}; got {text!r}")
    if path.is_dir():
        raise UsageError(f"`{option}` {text!r} is a folder, not a file")
    missing = missing_folder(path)
    if missing is not None:
        raise UsageError(f"`{option}` {text!r}: {missing}")
    reason = cannot_write(path)
    if reason is not None:
        raise UsageError(f"`{option}` {text!r}: cannot write there ({reason})")
    return path


def output_paths(texts: Sequence[str], option: str, suffixes: Sequence[str]) -> list[Path]:
    """`output_path` of every file a repeatable option names; a file named twice (the same
    path written two ways too) is refused rather than written twice.

    Raises:
        UsageError: naming `option` and what is wrong.
    """
    paths: list[Path] = []
    seen: dict[Path, str] = {}
    for text in texts:
        path = output_path(text, option, suffixes)
        file = path.resolve()
        if file in seen:
            also = "" if seen[file] == text else f" (as {seen[file]!r} too)"
            raise UsageError(f"`{option}` names {text!r} twice{also}")
        seen[file] = text
        paths.append(path)
    return paths


# ------------------------------------------------------------------ the cost and the grid


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


def need(value: Any, option: str, problem: Problem) -> Any:
    if value is None:
        raise UsageError(f"`{option}` is required for {problem.name!r} (not a built-in)")
    return value


def fill(coords: Sequence[Any], problem: Problem, option: str = "--x0") -> list[Any]:
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


def filled_note(given: Sequence[Any], problem: Problem, option: str = "--x0") -> str | None:
    """What `fill` took from a built-in's default starting point, in one line (None: nothing).

    Example:
        >>> filled_note([0.5], resolve_function("rosenbrock"))
        "`--x0` gives 1 of rosenbrock's 2 coordinates; x[1] = 1 is its default"
    """
    if problem.dim is None or problem.x0 is None or len(given) >= problem.dim:
        return None
    rest = range(len(given), problem.dim)
    shown = ", ".join(f"x[{k}] = {problem.x0[k]:g}" for k in rest)
    verb = "is its default" if len(rest) == 1 else "are its defaults"
    return (
        f"`{option}` gives {len(given)} of {problem.name}'s {problem.dim} coordinates; "
        f"{shown} {verb}"
    )


def compute_dtype() -> np.dtype:
    return np.dtype(np.float64 if jax.config.read("jax_enable_x64") else np.float32)


def starting_array(values: Any) -> np.ndarray:
    """`--x0`'s numbers in the dtype the run computes in.

    Raises:
        UsageError: a number beyond that dtype's range (float32 without `--x64`).
    """
    return cast_in_range(
        np.asarray(values, dtype=np.float64),
        compute_dtype(),
        "--x0",
        ": rescale the problem, or compute in float64 with `--x64`",
        UsageError,
    )


def grid_guesses(axes: list[Axis], problem: Problem) -> tuple[np.ndarray, list[Axis]]:
    """The starting points (a mesh of the coordinates, first coordinate slowest) and the
    coordinates, left-out ones filled in from the built-in's default."""
    filled = fill(axes, problem)
    axes = [a if isinstance(a, Axis) else Axis(np.array([a]), f"{a:g}") for a in filled]
    mesh = np.meshgrid(*(a.values for a in axes), indexing="ij")
    guesses = starting_array(np.stack([m.ravel() for m in mesh], axis=-1))
    if len(axes) == 1 and problem.dim in (1, None):
        guesses = guesses[:, 0]  # scalar starting points
    return guesses, axes


def describe_range(axis: Axis, spacing: str) -> str:
    """`1e-4 .. 1e-2, 32 log-spaced` for a range, the number itself otherwise."""
    if ":" not in axis.text:
        return axis.text
    lo, hi, n = axis.text.split(":")[:3]  # (a spacing named in a fourth part is `spacing`)
    return f"{lo} .. {hi}, {n} {spacing}"


def describe_guesses(axes: list[Axis]) -> str:
    if len(axes) == 1:
        return describe_range(axes[0], "linear")
    return "; ".join(
        f"x[{k}]: {describe_range(a, 'linear')}" if ":" in a.text else f"x[{k}] = {a.text}"
        for k, a in enumerate(axes)
    )
