r"""Plots of runs and sweeps: trajectories, convergence curves and sweep maps.

Needs matplotlib (`pip install 'gdkernel[plot]'`), imported only when a plot is drawn.
Every function draws into the Matplotlib `Axes` given as `ax` (a new figure when `ax` is
None) and returns that `Axes`; none calls `plt.show()` or changes the backend.

| function | draws | needs |
| --- | --- | --- |
| `trajectory(res, cost_fn)` | the cost curve with the iterates on it (1 parameter), or contour lines of the cost with the path over them (2 parameters) | `history=True` |
| `convergence(res)` | the cost (and optionally the step size) against the iteration | `history=True` |
| `sweep_map(grid)` | a learning rate x starting point heatmap of iterations or final cost, with non-converged cells coloured by status | a `sweep` |

A batch (a `sweep`, or `gradient_descent` under `jax.vmap`) draws one path or line per
member; `member=` picks one. Only the valid rows of a history are drawn: rows past a
member's last iteration are NaN and skipped.

Every plot says how each run ended. A path or a cost curve ends in the marker of its status
(`STATUS_MARKERS`): a star only for `CONVERGED`, a grey diamond for `MAX_ITER`, an orange
square for `STALLED`, a red cross for `DIVERGED`; the legend names the statuses drawn and
the title counts them. A sweep map colours each non-converged cell by its status.

Example:
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import gdkernel as gd
    >>> from gdkernel import plot
    >>> res = gd.gradient_descent(lambda x: x**2, 3.0, 0.1, history=True)
    >>> ax = plot.trajectory(res, lambda x: x**2)
    >>> ax.figure.savefig("trajectory.png")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as v
from ._result import Result, Status, SweepResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "REDUCTIONS",
    "STATUS_COLORS",
    "STATUS_MARKERS",
    "convergence",
    "sweep_map",
    "trajectory",
]

PyTree = Any

#: The colour of a sweep-map cell (and of a diverged marker) for each non-converged status.
STATUS_COLORS: dict[Status, str] = {
    Status.MAX_ITER: "#9e9e9e",
    Status.DIVERGED: "#d62728",
    Status.STALLED: "#ff7f0e",
    Status.INVALID: "#000000",
}

_NORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "l1": lambda d: np.sum(np.abs(d), axis=-1),
    "l2": lambda d: np.sqrt(np.sum(np.square(d), axis=-1)),
    "max": lambda d: np.max(np.abs(d), axis=-1),
}

#: The marker that ends a path or a cost curve, for each status: a star only for a run that
#: converged. A converged star takes the colour of its member's line; the other markers take
#: the colour of their status (`STATUS_COLORS`).
STATUS_MARKERS: dict[Status, dict[str, Any]] = {
    Status.CONVERGED: {"marker": "*", "markersize": 13, "markeredgecolor": "black"},
    Status.MAX_ITER: {"marker": "D", "markersize": 7, "markeredgecolor": "black"},
    Status.STALLED: {"marker": "s", "markersize": 8, "markeredgecolor": "black"},
    Status.DIVERGED: {"marker": "x", "markersize": 9, "markeredgewidth": 2.2},
    Status.INVALID: {"marker": "p", "markersize": 8, "markeredgecolor": "black"},
}

# The start marker of a path.
_START: dict[str, Any] = {
    "marker": "o",
    "markersize": 9,
    "markerfacecolor": "none",
    "markeredgewidth": 1.8,
}
_MAX_LEGEND = 10
# Costs are drawn clipped to this: Matplotlib's log ticks overflow near 1e308, where a float64
# member that diverges ends.
_CEILING = 1e200


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("gdkernel.plot needs matplotlib: pip install 'gdkernel[plot]'") from err
    return plt


def _axes(ax: Axes | None) -> Axes:
    """The given `Axes`, or one on a new figure."""
    if ax is not None:
        return ax
    _, ax = _pyplot().subplots()
    return ax


def _check_result(res: Any, name: str = "res") -> None:
    if not isinstance(res, Result | SweepResult):
        raise TypeError(
            f"`{name}` must be a Result from gradient_descent or a SweepResult from sweep, "
            f"got {type(res).__name__}"
        )
    if isinstance(res, SweepResult):
        res._check_grid(f"plot ({name})")


def _check_history(res: Result | SweepResult, name: str = "res") -> None:
    _check_result(res, name)
    if res.history is None:
        raise ValueError(
            f"`{name}` has no history: pass `history=True` to gradient_descent or sweep"
        )


def _members(res: Result | SweepResult, member: Any) -> list[tuple[int, ...]]:
    """The batch indices to draw: every member, or the one `member` names."""
    shape = tuple(np.shape(res.status))
    if member is None:
        return list(np.ndindex(*shape))
    index = (member,) if isinstance(member, int | np.integer) else tuple(member)
    if len(index) != len(shape) or any(
        not isinstance(k, int | np.integer) or not -n <= k < n
        for k, n in zip(index, shape, strict=False)
    ):
        raise ValueError(
            f"`member` must index the batch of shape {shape} (e.g. {(0,) * len(shape)}), "
            f"got {member!r}"
        )
    return [tuple(int(k) % n for k, n in zip(index, shape, strict=True))]


def _leaf_names(x: PyTree) -> list[str]:
    """A label per scalar parameter, in the order `_flat_rows` lays them out."""
    names: list[str] = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(x)[0]:
        base = jax.tree_util.keystr(path, simple=True, separator=".") or "x"
        if np.ndim(leaf) == 0:
            names.append(base)
        else:
            names += [f"{base}[{','.join(map(str, k))}]" for k in np.ndindex(*np.shape(leaf))]
    return names


def _flat_rows(tree: PyTree, index: tuple[int, ...]) -> np.ndarray:
    """The history rows of one member, each flattened to a vector: shape `(rows, d)`."""
    leaves = [np.asarray(leaf)[index] for leaf in jax.tree.leaves(tree)]
    rows = leaves[0].shape[0]
    return np.concatenate([leaf.reshape(rows, -1) for leaf in leaves], axis=1).astype(np.float64)


def _path(
    res: Result | SweepResult, index: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The valid history rows of one member: `(row numbers, iterates (v, d), costs (v,))`."""
    history = res.history
    assert history is not None  # checked by the callers
    xs = _flat_rows(history.x, index)
    costs = np.asarray(history.cost, dtype=np.float64)[index]
    valid = ~np.isnan(costs) & ~np.isnan(xs).any(axis=1)
    return np.flatnonzero(valid), xs[valid], costs[valid]


def _member_x(res: Result | SweepResult, index: tuple[int, ...]) -> PyTree:
    return jax.tree.map(lambda leaf: leaf[index], res.x)


def _label(res: Result | SweepResult, index: tuple[int, ...]) -> str:
    if isinstance(res, SweepResult):
        i, *middle, j = index
        lr = float(np.asarray(res.learning_rate)[i])
        guess = _flat_rows(jax.tree.map(lambda leaf: leaf[:, None], res.initial_guess), (j,))[0]
        start = f"{guess[0]:.3g}" if guess.size == 1 else f"#{j}"
        axes = zip(res.grid_axes.names, res.grid_axes.values, middle, strict=True)
        others = "".join(f", {name}={float(np.asarray(v)[k]):.3g}" for name, v, k in axes)
        return f"lr={lr:.3g}{others}, x0={start}"
    return f"member {index[0] if len(index) == 1 else index}"


def _colors(n: int) -> list[Any]:
    plt = _pyplot()
    if n <= _MAX_LEGEND:
        cycle = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
        return [cycle[k % len(cycle)] for k in range(n)]
    return list(plt.get_cmap("viridis")(np.linspace(0.0, 0.9, n)))


def _vector_cost(
    cost_fn: Callable[..., Any], template: PyTree, args: tuple
) -> Callable[[np.ndarray], np.ndarray]:
    """`cost_fn` of many flat parameter vectors at once, shaped like `template`."""
    leaves, treedef = jax.tree.flatten(template)
    shapes = [np.shape(leaf) for leaf in leaves]
    sizes = [int(np.prod(s)) for s in shapes]
    dtype = jnp.result_type(*leaves)

    def one(vec: jax.Array) -> jax.Array:
        parts, start = [], 0
        for shape, size in zip(shapes, sizes, strict=True):
            parts.append(vec[start : start + size].reshape(shape))
            start += size
        return jnp.asarray(cost_fn(jax.tree.unflatten(treedef, parts), *args))

    batched = jax.jit(jax.vmap(one))

    def evaluate(points: np.ndarray) -> np.ndarray:
        return np.asarray(batched(jnp.asarray(points, dtype=dtype)), dtype=np.float64)

    return evaluate


def _box(
    paths: list[np.ndarray], status: Sequence[int], pad: float
) -> tuple[np.ndarray, np.ndarray]:
    """A padded box around the paths that matter: the converged ones if any, else those
    that did not diverge, else all."""
    usable = [p for p in paths if len(p)]
    for wanted in (lambda s: s == Status.CONVERGED, lambda s: s != Status.DIVERGED):
        chosen = [p for p, s in zip(paths, status, strict=True) if wanted(s) and len(p)]
        if chosen:
            break
    else:
        chosen = usable
    points = np.concatenate(chosen, axis=0)
    points = points[np.isfinite(points).all(axis=1)]
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = float(np.max(hi - lo))
    margin = pad * span if span > 0 else max(1.0, 0.5 * float(np.max(np.abs(lo))))
    return lo - margin, hi + margin


def _status_name(status: Status) -> str:
    """The status as the legends write it: `max-iter`, `diverged`, ..."""
    return status.name.lower().replace("_", "-")


def _end_color(status: Status, color: Any) -> Any:
    """A converged star takes its member's colour; other ends the colour of their status."""
    return color if status == Status.CONVERGED else STATUS_COLORS[status]


def _mark_end(ax: Axes, x: Any, y: Any, status: Status, color: Any, label: str) -> Any:
    """Draw the marker of `status` at one point; returns the Line2D."""
    style = STATUS_MARKERS[status]
    fill = _end_color(status, color)
    (line,) = ax.plot(
        x,
        y,
        linestyle="none",
        color=fill,
        markerfacecolor=fill,
        markeredgewidth=style.get("markeredgewidth", 0.6),
        label=label,
        zorder=5,
        clip_on=False,
        **{k: val for k, val in style.items() if k != "markeredgewidth"},
    )
    return line


def _status_handles(statuses: list[Status]) -> list[Any]:
    """Legend entries, one per status drawn, in `Status` order."""
    from matplotlib.lines import Line2D

    handles = []
    for status in Status:
        if status in statuses:
            style = STATUS_MARKERS[status]
            fill = _end_color(status, "0.75")
            handles.append(
                Line2D(
                    [],
                    [],
                    linestyle="none",
                    color=fill,
                    markerfacecolor=fill,
                    markeredgewidth=style.get("markeredgewidth", 0.6),
                    label=_status_name(status),
                    **{k: val for k, val in style.items() if k != "markeredgewidth"},
                )
            )
    return handles


def _status_title(what: str, statuses: list[Status], iterations: list[int]) -> str:
    """`what: CONVERGED after 40 iterations` for one member, else the count per status."""
    if len(statuses) == 1:
        return f"{what}: {statuses[0].name} after {iterations[0]} iterations"
    counts = ", ".join(
        f"{statuses.count(s)} {_status_name(s)}" for s in Status if statuses.count(s)
    )
    return f"{what}: {counts}"


def _ends(
    res: Result | SweepResult, indices: list[tuple[int, ...]]
) -> tuple[list[Status], list[int]]:
    """The status and the iterations of each member drawn."""
    status, iterations = np.asarray(res.status), np.asarray(res.iterations)
    return [Status(int(status[i])) for i in indices], [int(iterations[i]) for i in indices]


def _legend(ax: Axes, ends: list[Status], single: bool, n: int) -> None:
    """One member: its own entries. A batch: its members' lines (up to ten), then one entry
    per status drawn."""
    if single:
        ax.legend(fontsize="small")
        return
    handles, _ = ax.get_legend_handles_labels()
    if n > _MAX_LEGEND:
        handles = [h for h in handles if h.get_label() == "cost"]
    ax.legend(handles=handles + _status_handles(ends), fontsize="small")


def _markevery(n: int) -> int:
    """Mark at most about 60 iterates of a long path."""
    return max(1, int(np.ceil(n / 60)))


def trajectory(
    res: Result | SweepResult,
    cost_fn: Callable[..., Any] | Any,
    *,
    args: tuple = (),
    symbols: Any = None,
    member: int | tuple[int, ...] | None = None,
    ax: Axes | None = None,
    resolution: int | None = None,
    levels: int = 15,
) -> Axes:
    r"""Draw the path of gradient descent over the cost it descends.

    With one parameter, the cost curve $f(x)$ over a range covering the iterates, with the
    iterates $(x_k, f(x_k))$ marked and joined on it; with two parameters (a vector of
    length 2, or a pytree of two scalars), contour lines of $f$ with the path
    $x_0, x_1, \dots$ drawn over them. The start is a ring; the end is the marker of the
    member's status (`STATUS_MARKERS`: a star only for `CONVERGED`, a red cross for
    `DIVERGED`), named in the legend; the title gives the status and the iterations (for a
    batch, the count of each status).

    Args:
        res: a `Result` or `SweepResult` run with `history=True`.
        cost_fn: the cost that was minimised (a callable or a SymPy expression).
        args: the extra arguments of `cost_fn`, as given to the run.
        symbols: the parameter order of a SymPy `cost_fn`, as given to the run.
        member: draw only this member of a batch (`(i, j)` for a sweep); default: all.
        ax: the Matplotlib `Axes` to draw into; default: a new figure.
        resolution: points of the curve (1-D, default 400) or per side of the contour
            grid (2-D, default 160).
        levels: how many contour lines (2-D).

    Returns:
        The `Axes` drawn into.

    Raises:
        ValueError: `res` has no history, `member` is out of range, or the parameter has
            more than two elements.

    Example:
        >>> res = gd.gradient_descent(functions.rosenbrock, [-1.2, 1.0], 1e-3,
        ...                           max_iter=5000, history=True)
        >>> ax = plot.trajectory(res, functions.rosenbrock)
    """
    _check_history(res)
    cost = v.cost_function(cost_fn, symbols)
    args = tuple(args)
    indices = _members(res, member)
    template = _member_x(res, indices[0])
    dim = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(template))
    if dim not in (1, 2):
        raise ValueError(
            f"`trajectory` draws a path of 1 or 2 parameters; `res.x` has {dim} per member "
            "(plot a convergence curve instead)"
        )
    ax = _axes(ax)
    evaluate = _vector_cost(cost, template, args)
    paths = [_path(res, index) for index in indices]
    ends, iterations = _ends(res, indices)
    colors = _colors(len(indices))
    names = _leaf_names(template)
    if dim == 1:
        lo, hi = _box([p[1] for p in paths], ends, pad=0.1)
        grid = np.linspace(lo[0], hi[0], resolution or 400)[:, None]
        curve = evaluate(grid)
        ax.plot(grid[:, 0], curve, color="0.35", lw=1.5, label="cost", zorder=1)
        ax.set_xlim(lo[0], hi[0])
        shown = curve[np.isfinite(curve)]
        if shown.size and shown.max() > shown.min():
            margin = 0.05 * (shown.max() - shown.min())
            ax.set_ylim(shown.min() - margin, shown.max() + margin)
        ax.set_xlabel(names[0])
        ax.set_ylabel("cost")
    else:
        lo, hi = _box([p[1] for p in paths], ends, pad=0.15)
        n = resolution or 160
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n))
        z = evaluate(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(gx.shape)
        finite = z[np.isfinite(z)]
        marks = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, levels + 2)[1:-1]))
        if finite.size and marks.size >= 2:
            lines = ax.contour(
                gx, gy, np.ma.masked_invalid(z), levels=marks, colors="0.55", linewidths=0.8
            )
            lines.set_zorder(1)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
    single = len(indices) == 1
    for (_, xs, costs), index, color, end in zip(paths, indices, colors, ends, strict=True):
        if not len(xs):
            continue
        px, py = (xs[:, 0], costs) if dim == 1 else (xs[:, 0], xs[:, 1])
        label = "iterates" if single else _label(res, index)
        ax.plot(
            px,
            py,
            "-o",
            color=color,
            lw=1.2,
            ms=3.5,
            markevery=_markevery(len(px)),
            label=label,
            zorder=3,
        )
        ax.plot(px[:1], py[:1], color=color, label="start" if single else None, zorder=4, **_START)
        end_label = f"end: {_status_name(end)}" if single else "_end"
        _mark_end(ax, px[-1:], py[-1:], end, color, end_label)
    _legend(ax, ends, single, len(indices))
    ax.set_title(_status_title("path", ends, iterations))
    return ax


def _auto_yscale(values: np.ndarray, shifted: bool) -> tuple[str, dict[str, float]]:
    """`log` for positive costs (or costs above a given minimum); `symlog` for costs of both
    signs spread over more than three decades; else `linear`."""
    values = values[np.isfinite(values)]
    if shifted or (values.size and np.all(values > 0)):
        return "log", {}
    magnitude = np.abs(values)
    typical = float(np.median(magnitude)) if magnitude.size else 0.0
    if typical > 0 and magnitude.max() > 1e3 * typical:
        return "symlog", {"linthresh": typical}
    return "linear", {}


def _frame(values: np.ndarray, scale: str) -> tuple[float, float] | None:
    """Padded y limits around `values` that stay finite on every scale.

    Matplotlib's own margins and log ticks overflow near 1e308, where a float64 member that
    diverges ends, so the values are first clipped to `_CEILING`.
    """
    values = np.clip(values[np.isfinite(values)], -_CEILING, _CEILING)
    if scale == "log":
        values = values[values > 0]
    if not values.size:
        return None
    lo, hi = float(values.min()), float(values.max())
    if scale == "log":
        lo, hi = np.log10(lo), np.log10(hi)
        pad = max(0.05 * (hi - lo), 0.1)
        return 10 ** (lo - pad), 10 ** (hi + pad)
    if scale == "symlog":
        return (lo * 1.5 if lo < 0 else lo / 1.5), (hi * 1.5 if hi > 0 else hi / 1.5)
    pad = 0.05 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1.0)
    return lo - pad, hi + pad


def convergence(
    res: Result | SweepResult,
    *,
    ax: Axes | None = None,
    member: int | tuple[int, ...] | None = None,
    minimum: float | None = None,
    show_step: bool = False,
    yscale: str | None = None,
    history_every: int | None = None,
    norm: str = "l1",
) -> Axes:
    r"""Draw the cost against the iteration, one line per member.

    Row $r$ of the history is iteration $r \cdot$ `history_every`. With `minimum` (a known
    minimum cost $f^*$), the excess cost $f(x_k) - f^*$ is drawn instead, on a log axis
    (values at or below zero are left out). The cost axis is otherwise logarithmic when every
    drawn cost is positive, symmetric-logarithmic when the costs take both signs and spread
    over more than three decades, else linear.

    Up to ten members get the default colour cycle and a legend; more are coloured along
    the batch order with viridis (for a sweep: dark for the smallest learning rate, yellow
    for the largest). Each line ends in the marker of its member's status (`STATUS_MARKERS`:
    a star only for `CONVERGED`), named in the legend; the title gives the status (for a batch,
    the count of each status). The view frames the members that did not diverge; a diverged
    member's line is cut at the top of that frame and ends in a red cross at its last finite
    iterate.

    With `show_step`, the step sizes $\lVert x_k - x_{k-1} \rVert$ (what the stopping rule
    compares with `precision`; exact when `history_every` is 1) are drawn dashed against a
    second, logarithmic axis on the right, `ax.figure.axes[-1]`.

    Args:
        res: a `Result` or `SweepResult` run with `history=True`.
        ax: the Matplotlib `Axes` to draw into; default: a new figure.
        member: draw only this member of a batch (`(i, j)` for a sweep); default: all.
        minimum: a known minimum cost to subtract (e.g. `functions.BUILTINS[name].min_cost`).
        show_step: also draw the step sizes on a second axis.
        yscale: the cost axis scale, `"log"`, `"symlog"` or `"linear"`; default: chosen
            from the costs as above.
        history_every: the `history_every` of the run, to number the iterations; default:
            read off the history (member `i` ran `n_i` iterations and recorded rows `0` to
            `n_i // history_every`), and an error when the rows fit several values.
        norm: the step norm of the run (`"l1"`, `"l2"` or `"max"`), for `show_step`.

    Returns:
        The `Axes` drawn into (the cost axis).

    Raises:
        ValueError: `res` has no history, `member` is out of range, an option is not one of
            its choices, or `history_every` does not fit the recorded rows.

    Example:
        >>> grid = gd.sweep(lambda x: x**2, jnp.array([-2.0, 3.0]), jnp.array([0.1, 1.2]),
        ...                 history=True)
        >>> ax = plot.convergence(grid, show_step=True)
    """
    _check_history(res)
    if norm not in _NORMS:
        raise ValueError(f"`norm` must be one of {tuple(_NORMS)}, got {norm!r}")
    if yscale not in (None, "log", "symlog", "linear"):
        raise ValueError(f"`yscale` must be 'log', 'symlog', 'linear' or None, got {yscale!r}")
    if history_every is not None and (
        isinstance(history_every, bool)
        or not isinstance(history_every, int | np.integer)
        or history_every < 1
    ):
        raise ValueError(f"`history_every` must be a positive integer, got {history_every!r}")
    if minimum is not None and not np.isfinite(minimum):
        raise ValueError(f"`minimum` must be a finite number, got {minimum!r}")
    indices = _members(res, member)
    paths = [_path(res, index) for index in indices]
    ends, iterations = _ends(res, indices)
    diverged = [end == Status.DIVERGED for end in ends]
    history_every = _history_every(history_every, paths, iterations, diverged, indices)
    values = [p[2] if minimum is None else p[2] - minimum for p in paths]
    if minimum is not None:
        values = [np.where(v > 0, v, np.nan) for v in values]
    framed = [v for v, d in zip(values, diverged, strict=True) if not d] or values
    framed_values = np.concatenate(framed)
    scale, scale_options = _auto_yscale(framed_values, minimum is not None)
    if yscale is not None and yscale != scale:
        scale, scale_options = yscale, {}
    limits = _frame(framed_values, scale)
    top = limits[1] if limits and any(diverged) and not all(diverged) else _CEILING

    ax = _axes(ax)
    colors = _colors(len(indices))
    single = len(indices) == 1
    step_ax = ax.twinx() if show_step else None
    all_steps: list[np.ndarray] = []
    for (rows, xs, _), drawn, index, color, end in zip(
        paths, values, indices, colors, ends, strict=True
    ):
        if not len(rows):
            continue
        its = rows * int(history_every)
        drawn = np.clip(drawn, -_CEILING, top)
        label = ("cost" if minimum is None else "cost - minimum") if single else None
        ax.plot(its, drawn, color=color, lw=1.4, label=label or _label(res, index))
        last = np.flatnonzero(np.isfinite(drawn))
        if last.size:  # at the last cost drawn (an excess cost <= 0 is not drawn)
            k = last[-1]
            end_label = f"end: {_status_name(end)}" if single else "_end"
            _mark_end(ax, its[k : k + 1], drawn[k : k + 1], end, color, end_label)
        if step_ax is not None and len(rows) > 1:
            steps = _NORMS[norm](np.diff(xs, axis=0))
            steps = np.where(steps > 0, steps, np.nan)
            step_color = "0.45" if single else color
            step_ax.plot(its[1:], steps, color=step_color, lw=1.0, ls="--", alpha=0.8)
            all_steps.append(steps)
    if limits is not None:
        ax.set_ylim(*limits)
    ax.set_yscale(scale, **scale_options)
    ax.set_xlabel("iteration")
    ax.set_ylabel("cost" if minimum is None else f"cost - minimum ({minimum:.6g})")
    if step_ax is not None:
        step_limits = _frame(np.concatenate(all_steps), "log") if all_steps else None
        if step_limits is not None:
            step_ax.set_ylim(*step_limits)
        step_ax.set_yscale("log")
        step_ax.set_ylabel("step size (dashed)")
    _legend(ax, ends, single, len(indices))
    ax.set_title(_status_title("convergence", ends, iterations))
    return ax


def _history_every(
    given: int | None,
    paths: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    iterations: list[int],
    diverged: list[bool],
    indices: list[tuple[int, ...]],
) -> int:
    """The run's `history_every`: `given`, checked against the recorded rows, or read off
    them. A member that ran `n` iterations and did not diverge recorded rows `0` to
    `n // k`, which holds for `k` in `(n / (last + 1), n / last]`; the members' ranges
    intersect in the values that fit them all."""
    low, high, witness = 1, None, None
    for (rows, _, _), n, gone, index in zip(paths, iterations, diverged, indices, strict=True):
        if gone or not len(rows):
            continue
        last = int(rows[-1])
        low = max(low, n // (last + 1) + 1)
        if last > 0:
            high = n // last if high is None else min(high, n // last)
        if given is not None and (n // given != last) and witness is None:
            witness = (index, n, last)
    if given is not None:
        if witness is not None:
            index, n, last = witness
            raise ValueError(
                f"`history_every={given}` does not fit the history: "
                f"{f'member {index}' if index else 'the run'} ran {n} iterations and its last "
                f"recorded row is {last}, not {n // given}; pass the run's own `history_every`"
            )
        return int(given)
    if high is not None and low > high:
        fits = "no value"
    elif low == 1 or low == high:
        return low
    else:
        fits = f"every value from {low}" + (f" to {high}" if high is not None else " up")
    raise ValueError(f"pass the run's `history_every`: its recorded rows fit {fits}")


def _log_edges(values: np.ndarray) -> np.ndarray:
    """Cell edges around sorted positive values, halfway on a log scale."""
    logs = np.log(values)
    if logs.size == 1:
        return np.exp(logs[0] + np.array([-0.5, 0.5]) * np.log(10.0))
    mid = (logs[1:] + logs[:-1]) / 2
    return np.exp(np.concatenate([[2 * logs[0] - mid[0]], mid, [2 * logs[-1] - mid[-1]]]))


def _lin_edges(values: np.ndarray) -> np.ndarray:
    if values.size == 1:
        half = 0.5 * max(1.0, abs(float(values[0])))
        return values[0] + np.array([-half, half])
    mid = (values[1:] + values[:-1]) / 2
    return np.concatenate([[2 * values[0] - mid[0]], mid, [2 * values[-1] - mid[-1]]])


def _guess_axis(grid: SweepResult) -> tuple[np.ndarray, np.ndarray, str]:
    """The starting-point axis: `(order, edges, label)`; scalar guesses by value, else by index."""
    values = _scalar_guesses(grid)
    if values is not None:
        order = np.argsort(values, kind="stable")
        ordered = values[order]
        if np.all(np.diff(ordered) > 0):
            return order, _lin_edges(ordered), "starting point x0"
    n = int(np.shape(jax.tree.leaves(grid.initial_guess)[0])[0])
    return np.arange(n), _lin_edges(np.arange(n, dtype=np.float64)), "starting point (member index)"


def _scalar_guesses(grid: SweepResult) -> np.ndarray | None:
    """The starting points as numbers when each is a scalar, else None."""
    leaves = jax.tree.leaves(grid.initial_guess)
    if len(leaves) == 1 and np.ndim(leaves[0]) == 1:
        return np.asarray(leaves[0], dtype=np.float64)
    return None


class _Cells(NamedTuple):
    """How one axis of the grid runs along a side of the map."""

    order: np.ndarray  # the grid's indices in drawing order
    edges: np.ndarray  # the cell edges, one more than `order`
    label: str
    log: bool  # a log scale
    by_index: bool  # cells numbered by index, not placed by value


def _cells(grid: SweepResult, name: str) -> _Cells:
    """Learning rates by value on a log scale; starting points by value when scalar; another
    setting by value, on a log scale when positive and two decades or more apart; an axis
    whose values repeat, by index."""
    if name == "initial_guess":
        order, edges, label = _guess_axis(grid)
        return _Cells(order, edges, label, False, "index" in label)
    values = np.asarray(grid.coords[name], dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    shown = "learning rate" if name == "learning_rate" else name
    if np.all(np.diff(ordered) > 0):
        log = name == "learning_rate" or bool(
            ordered.size > 1 and ordered[0] > 0 and ordered[-1] >= 100 * ordered[0]
        )
        edges = _log_edges(ordered) if log else _lin_edges(ordered)
        return _Cells(order, edges, shown, log, False)
    n = values.size
    return _Cells(
        np.arange(n), _lin_edges(np.arange(n, dtype=np.float64)), f"{shown} (index)", False, True
    )


def _axis_values(grid: SweepResult, name: str) -> np.ndarray | None:
    """An axis's values as numbers (None: starting points that are not scalars)."""
    if name == "initial_guess":
        return _scalar_guesses(grid)
    return np.asarray(grid.coords[name], dtype=np.float64)


def _fixed(
    grid: SweepResult, at: Mapping[str, Any] | None, index: Mapping[str, Any] | None, drawn: tuple
) -> dict[str, int]:
    """Each axis fixed by `index` (an index) or `at` (a value on it) -> its index."""
    sizes = dict(zip(grid.axes, np.shape(grid.status), strict=True))
    fixed: dict[str, int] = {}
    for option, given in (("index", index), ("at", at)):
        if given is None:
            continue
        if not isinstance(given, Mapping):
            raise TypeError(
                f"`{option}` must be a dict of axis names, e.g. {{'b1': 0}}, "
                f"got {type(given).__name__}"
            )
        for name, wanted in given.items():
            if name not in sizes:
                raise ValueError(
                    f"`{option}` names {name!r}, which is not an axis of the grid {grid.axes}"
                )
            if name in drawn:
                raise ValueError(f"`{option}` fixes {name!r}, an axis the map draws (`x` or `y`)")
            if name in fixed:
                raise ValueError(f"{name!r} is fixed twice, in `at` and in `index`")
            n = sizes[name]
            if option == "index":
                if isinstance(wanted, bool) or not isinstance(wanted, int | np.integer):
                    raise TypeError(f"`index` of {name!r} must be an integer, got {wanted!r}")
                if not -n <= wanted < n:
                    raise ValueError(f"`index` {wanted} is outside the {n} entries of {name!r}")
                fixed[name] = int(wanted) % n
                continue
            values = _axis_values(grid, name)
            if values is None:
                raise ValueError(
                    "`at` fixes starting points by value only when they are scalars; "
                    f"use `index={{{name!r}: k}}`"
                )
            hits = np.flatnonzero(np.isclose(values, float(wanted), rtol=1e-5, atol=0.0))
            if not hits.size:
                shown = ", ".join(f"{v:.6g}" for v in values[:8]) + (", ..." if n > 8 else "")
                raise ValueError(f"`at` {name}={wanted!r} is not on the axis; its values: {shown}")
            fixed[name] = int(hits[0])
    return {name: fixed[name] for name in grid.axes if name in fixed}  # in the grid's order


def _phrase(grid: SweepResult, name: str) -> str:
    """An axis and its size, as the title writes it: `b1 (5 values)`, `starting points (16)`."""
    n = dict(zip(grid.axes, np.shape(grid.status), strict=True))[name]
    if name == "initial_guess":
        return f"starting points ({n})"
    if name == "learning_rate":
        return f"learning rates ({n})"
    return f"{name} ({n} value{'s' if n != 1 else ''})"


def _at_phrase(grid: SweepResult, name: str, k: int) -> str:
    """A fixed axis as the title writes it: `b1 = 0.9`, `x0 = 1.5`, `starting point #3`."""
    values = _axis_values(grid, name)
    if name == "initial_guess":
        return f"x0 = {values[k]:.4g}" if values is not None else f"starting point #{k}"
    assert values is not None
    return f"{'learning rate' if name == 'learning_rate' else name} = {values[k]:.4g}"


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


_VALUES = {"iterations": "iterations", "cost": "final cost", "converged": "converged"}
#: How `sweep_map` aggregates the axes it neither draws nor fixes.
REDUCTIONS = ("min", "max", "mean", "median")


def sweep_map(
    grid: SweepResult,
    *,
    value: str = "iterations",
    x: str = "learning_rate",
    y: str = "initial_guess",
    at: Mapping[str, Any] | None = None,
    index: Mapping[str, int] | None = None,
    reduce: str | None = None,
    ax: Axes | None = None,
    colorbar: bool = True,
    cmap: str = "viridis",
) -> Axes:
    r"""Draw a sweep as a heatmap: two of its axes (by default learning rate x starting point).

    Each cell is one member. Converged cells are coloured by `value` (the iterations taken,
    or the final cost, on a log scale when positive and spread over more than two decades);
    the other cells get the colour of their status from `STATUS_COLORS` (max-iter grey,
    diverged red, stalled orange, invalid black), named with their counts in a legend above
    the map. `value="converged"` colours every cell by whether it converged (1) or not (0).

    The learning rates run on a log axis; scalar starting points by value, others (vectors,
    pytrees) by member index; another setting by value, on a log axis when its values are
    positive and two decades or more apart.

    A sweep with more axes (`grid.axes`, e.g. `("learning_rate", "b1", "initial_guess")`)
    has a member per cell only once the axes not drawn are dealt with. Each is either fixed
    (`at={"b1": 0.9}` by value, `index={"b1": 2}` by index) or aggregated with `reduce` over
    the members of the cell: for `"iterations"` and `"cost"`, the `reduce` (default `"min"`)
    of the converged members' values, a cell with none converged taking the colour of its
    most common status; for `"converged"`, the `reduce` (default `"mean"`: the fraction
    converged) of 1 for each converged member and 0 for the others. The title says what was
    fixed and what aggregated; a two-axis map has no title.

    Args:
        grid: a `SweepResult` from `sweep`.
        value: `"iterations"`, `"cost"` or `"converged"`.
        x: the axis along x, a name in `grid.axes` (default `"learning_rate"`).
        y: the axis along y (default `"initial_guess"`).
        at: axes fixed at a value: name -> a value on that axis (within float32 rounding).
        index: axes fixed at an index: name -> an index (negative counts from the end).
        reduce: `"min"`, `"max"`, `"mean"` or `"median"`, for the axes neither drawn nor fixed.
        ax: the Matplotlib `Axes` to draw into; default: a new figure.
        colorbar: add a colour bar for `value` (taking room from `ax`).
        cmap: the colour map of `value`.

    Returns:
        The `Axes` drawn into. The heatmap is `ax.collections[0]`; its `get_array()` holds
        the values drawn, a row per `y` cell and a column per `x` cell (in drawing order).

    Raises:
        TypeError: `grid` is not a `SweepResult`, or `at`/`index` is not a dict.
        ValueError: `value` or `reduce` is not one of its choices; `x`, `y`, `at` or `index`
            names no axis of `grid`, or both name the same one; a value in `at` is not on
            its axis, or an index in `index` is outside it.

    Example:
        >>> grid = gd.sweep(lambda x: x**2, jnp.linspace(-3, 3, 13), jnp.geomspace(1e-3, 2, 24))
        >>> ax = plot.sweep_map(grid)

        A grid of Adam's `b1`: learning rate x `b1`, the fraction of starting points that
        converged, then learning rate x starting point at `b1 = 0.9`:

        >>> grid = gd.sweep(lambda x: (x - 1.0) ** 2, jnp.linspace(-3, 3, 13),
        ...                 jnp.geomspace(1e-3, 0.5, 8), method="adam",
        ...                 hyperparams={"b1": [0.5, 0.8, 0.9]}, max_iter=500)
        >>> ax = plot.sweep_map(grid, y="b1", value="converged")
        >>> ax = plot.sweep_map(grid, at={"b1": 0.9})
    """
    if not isinstance(grid, SweepResult):
        raise TypeError(f"`grid` must be a SweepResult from sweep, got {type(grid).__name__}")
    grid._check_grid("plot.sweep_map")
    if value not in _VALUES:
        raise ValueError(f"`value` must be 'iterations', 'cost' or 'converged', got {value!r}")
    if reduce is not None and reduce not in REDUCTIONS:
        raise ValueError(f"`reduce` must be one of {REDUCTIONS}, got {reduce!r}")
    names = grid.axes
    for option, name in (("x", x), ("y", y)):
        if name not in names:
            raise ValueError(
                f"`{option}` must be an axis of the grid, one of {names}; got {name!r}"
            )
    if x == y:
        raise ValueError(f"`x` and `y` must be two different axes, got {x!r} for both")
    fixed = _fixed(grid, at, index, (x, y))
    reduced = [n for n in names if n not in (x, y, *fixed)]
    reduce = reduce or ("mean" if value == "converged" else "min")
    _pyplot()
    from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm, Normalize
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    across, down = _cells(grid, x), _cells(grid, y)
    # The members of each cell: the fixed axes indexed, the others moved to
    # (aggregated members, y, x).
    key = tuple(fixed.get(n, slice(None)) for n in names)
    kept = [n for n in names if n not in fixed]
    order = [kept.index(n) for n in (*reduced, y, x)]
    shape = (-1, down.order.size, across.order.size)

    def cells(field: Any) -> np.ndarray:
        members = np.asarray(field)[key].transpose(order).reshape(shape)
        return members[:, down.order][:, :, across.order]

    status = cells(grid.status)
    member_converged = status == Status.CONVERGED
    if value == "converged":
        data = getattr(np, reduce)(member_converged.astype(np.float64), axis=0)
        cell_status = np.full(data.shape, int(Status.CONVERGED))
    else:
        values = cells(grid.cost if value == "cost" else grid.iterations).astype(np.float64)
        masked = np.ma.masked_array(values, ~member_converged | ~np.isfinite(values))
        data = np.ma.filled(getattr(np.ma, reduce)(masked, axis=0).astype(np.float64), np.nan)
        # a cell with no converged member: the status most of its members ended with
        counts = np.stack([np.sum(status == s, axis=0) for s in Status])
        cell_status = np.where(member_converged.any(axis=0), Status.CONVERGED, counts.argmax(0))
    converged = cell_status == Status.CONVERGED

    ax = _axes(ax)
    shown = np.ma.masked_where(~converged | ~np.isfinite(data), data)
    what = _VALUES[value]
    if shown.count():
        lo, hi = float(shown.min()), float(shown.max())
        scale: Normalize
        if value == "converged":
            scale = Normalize(0.0, 1.0)
        elif value == "cost" and lo > 0 and hi > 100 * lo:
            scale = LogNorm(lo, hi)
        else:
            scale = Normalize(lo, hi if hi > lo else lo + 1)
        mesh = ax.pcolormesh(across.edges, down.edges, shown, cmap=cmap, norm=scale)
        if colorbar:
            if value == "converged":
                label = "fraction converged" if reduced and reduce == "mean" else "converged"
                if reduced and reduce != "mean":
                    label = f"converged ({reduce})"
            elif reduced:
                label = f"{what} ({reduce} over converged members)"
            else:
                label = f"{what} ({int(np.sum(converged))} converged)"
            ax.figure.colorbar(mesh, ax=ax, label=label)
    handles = []
    if value != "converged":
        codes = [Status.CONVERGED, *STATUS_COLORS]
        colors = ListedColormap(["none", *STATUS_COLORS.values()])
        bounds = BoundaryNorm(np.arange(len(codes) + 1) - 0.5, len(codes))
        ax.pcolormesh(
            across.edges,
            down.edges,
            np.ma.masked_where(converged, cell_status),
            cmap=colors,
            norm=bounds,
        )
        present = [s for s in STATUS_COLORS if np.any(cell_status == s)]
        handles = [
            Patch(
                color=STATUS_COLORS[s], label=f"{_status_name(s)} ({int(np.sum(cell_status == s))})"
            )
            for s in present
        ]
    for cells_, axis, set_scale in (
        (across, ax.xaxis, ax.set_xscale),
        (down, ax.yaxis, ax.set_yscale),
    ):
        if cells_.log:
            set_scale("log")
        if cells_.by_index:
            axis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(across.label)
    ax.set_ylabel(down.label)
    if handles:
        ax.legend(
            handles=handles,
            loc="lower left",
            bbox_to_anchor=(0.0, 1.01),
            ncol=len(handles),
            fontsize="small",
            frameon=False,
            borderaxespad=0.0,
        )
    parts = []
    if reduced:
        over = _and([_phrase(grid, n) for n in reduced])
        if value == "converged":
            parts.append(
                f"fraction converged over {over}"
                if reduce == "mean"
                else f"converged: {reduce} over {over}"
            )
        else:
            parts.append(f"{what}: {reduce} over {over}, converged members only")
    if fixed:
        parts.append(", ".join(_at_phrase(grid, n, k) for n, k in fixed.items()))
    if parts:
        ax.set_title("; ".join(parts), fontsize="medium", pad=22 if handles else 6)
    return ax
