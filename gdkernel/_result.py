"""What a run returns: the `Status` enumeration and the `Result` pytree."""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._types import Numbers, PyTree


class Status(enum.IntEnum):
    """Why a member stopped. Each value carries a human-readable `message`.

    | value | name | meaning |
    | --- | --- | --- |
    | 0 | `CONVERGED` | the step `norm(x_new - x_old)` fell below `precision` |
    | 1 | `MAX_ITER` | `max_iter` iterations ran without the step rule firing |
    | 2 | `DIVERGED` | the cost climbed far above its start (`divergence`), or the cost, gradient or iterate became NaN or inf; `x` is the iterate before |
    | 3 | `STALLED` | the step rule fired while the gradient norm was still above `grad_tol` |
    | 4 | `INVALID` | a traced input was out of range (see the message); no iteration ran |
    """

    CONVERGED = 0
    MAX_ITER = 1
    DIVERGED = 2
    STALLED = 3
    INVALID = 4

    @property
    def message(self) -> str:
        return _MESSAGES[self]

    def __repr__(self) -> str:
        return f"Status.{self.name}"

    def __str__(self) -> str:
        return self.name

    def __format__(self, spec: str) -> str:
        numeric = bool(spec) and spec[-1] in "bcdoxXneEfFgG%"  # a number format: the value
        return format(int(self), spec) if numeric else format(self.name, spec.rstrip("s"))


_MESSAGES = {
    Status.CONVERGED: "converged: the step fell below `precision`",
    Status.MAX_ITER: "stopped after `max_iter` iterations without converging",
    Status.DIVERGED: (
        "diverged: the cost climbed above its start by more than `divergence` times its "
        "scale, or the cost, gradient or iterate became NaN or inf; `x` is the iterate "
        "before (try a smaller `learning_rate`; a run that kept no iteration had a "
        "non-finite cost or gradient at the initial guess, or its first step diverged)"
    ),
    Status.STALLED: (
        "stalled: the step fell below `precision` while the gradient norm was still "
        "above `grad_tol` (the learning rate is too small to move)"
    ),
    Status.INVALID: (
        "invalid input: `learning_rate` <= 0 or non-finite, `precision` negative, NaN or "
        "inf, `grad_tol` negative or NaN, `momentum` outside [0, 1), `divergence` <= 0 or "
        "NaN, a non-finite `initial_guess`, or an optax hyperparameter non-finite or out of "
        "its bounds (in the run's dtype); no iteration ran"
    ),
}

# Internal value of a member that is still iterating. Never returned to the user.
RUNNING = -1


def _concrete(*trees: Any) -> bool:
    """Whether every leaf holds values (not a tracer inside `jit` or `vmap`)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(trees))


def _fields_repr(result: Any) -> str:
    """The plain named-tuple form, field by field (for traced results)."""
    fields = ", ".join(f"{name}={getattr(result, name)!r}" for name in result._fields)
    return f"{type(result).__name__}({fields})"


def _brief(value: Any) -> str:
    arr = np.asarray(value)
    if arr.size <= 6:
        return np.array2string(arr, precision=6, separator=", ") if arr.ndim else f"{arr:.6g}"
    return f"{arr.dtype}{list(arr.shape)}"


def _summary(name: str, fields: Any, extra: str = "") -> str:
    """One line: a lone member's status, iterations, x and cost; a batch's shape, status
    counts, iteration range and lowest finite cost."""
    status, iterations = np.asarray(fields.status), np.asarray(fields.iterations)
    if status.ndim == 0:
        x = jax.tree.map(_brief, fields.x)
        x = x if isinstance(x, str) else str(x).replace("'", "")
        return (
            f"{name}({Status(int(status)).name} after {int(iterations)} iterations: "
            f"x={x}, cost={float(fields.cost):.6g}{extra})"
        )
    counts = ", ".join(f"{int(n)} {s.name}" for s in Status if (n := np.sum(status == s)))
    cost = np.asarray(fields.cost, dtype=np.float64)
    finite = cost[np.isfinite(cost)]
    best = f", lowest cost {finite.min():.6g}" if finite.size else ""
    return f"{name}(shape {status.shape}: {counts}; iterations {_span(iterations)}{best}{extra})"


def _span(values: np.ndarray) -> str:
    low, high = int(values.min()), int(values.max())
    return f"{low}" if low == high else f"{low}-{high}"


def _many(n: int, noun: str) -> str:
    plural = noun + ("es" if noun.endswith("ss") else "s")
    return f"{n} {noun if n == 1 else plural}"


def _messages(status: Any) -> str | np.ndarray:
    codes = np.asarray(status)
    if codes.ndim == 0:
        return Status(int(codes)).message
    return np.vectorize(lambda c: Status(int(c)).message, otypes=[object])(codes)


class History(NamedTuple):
    """Iterates and costs recorded inside the compiled loop.

    Row `r` holds iterate `r * history_every` (row 0 is the initial guess). Rows past a
    member's last recorded iterate are NaN.

    Attributes:
        x: the iterates, with the row axis in front of the iterate's own shape (for a
            sweep, behind the two grid axes).
        cost: the cost at each recorded iterate.
    """

    x: PyTree
    cost: Array


class Result(NamedTuple):
    """The outcome of `gradient_descent`: a pytree of arrays.

    For a batch (under `jax.vmap`, or from `sweep`) every field gains the batch axes in
    front.

    Attributes:
        x: the final iterate, with the structure of `initial_guess`.
        cost: `cost_fn(x, *args)`.
        grad: the gradient at `x` (the slope the tutorials print).
        step_size: the norm of the last step taken.
        iterations: how many iterations ran (the one where the step rule fired counts).
        status: a `Status` code per member (int32).
        history: a `History` when `history=True` was asked for, else `None`.
    """

    x: PyTree
    cost: Numbers
    grad: PyTree
    step_size: Numbers
    iterations: Numbers
    status: Numbers
    history: History | None = None

    @property
    def converged(self) -> Numbers:
        """`status == Status.CONVERGED`."""
        return self.status == Status.CONVERGED

    @property
    def diverged(self) -> Numbers:
        """`status == Status.DIVERGED`."""
        return self.status == Status.DIVERGED

    @property
    def stalled(self) -> Numbers:
        """`status == Status.STALLED`."""
        return self.status == Status.STALLED

    @property
    def message(self) -> str | np.ndarray:
        """The status message (an array of messages for a batch)."""
        return _messages(self.status)

    def __repr__(self) -> str:
        if not _concrete(self.status, self.iterations, self.cost, self.x):
            return _fields_repr(self)
        return _summary("Result", self)


class Best(NamedTuple):
    """One member picked out of a sweep by `SweepResult.best`.

    Attributes:
        learning_rate: its learning rate.
        initial_guess: its starting point.
        index: its index in the grid, one entry per axis of `SweepResult.axes`.
        result: its `Result`.
        coords: each axis name to the member's value on it (`initial_guess` included).
    """

    learning_rate: Numbers
    initial_guess: PyTree
    index: tuple[int, ...]  # type: ignore[assignment]  # the grid index, not tuple.index
    result: Result
    coords: dict[str, Any]


@jax.tree_util.register_pytree_node_class
class Axes:
    """The axes of a sweep's grid between `learning_rate` and `initial_guess`, in order:
    `names` (static) and each axis's `values` (the pytree's leaves)."""

    def __init__(self, names: tuple[str, ...] = (), values: tuple[Numbers, ...] = ()) -> None:
        self.names, self.values = tuple(names), tuple(values)

    def tree_flatten(self) -> tuple[tuple[Numbers, ...], tuple[str, ...]]:
        return self.values, self.names

    @classmethod
    def tree_unflatten(cls, names: tuple[str, ...], values: Any) -> Axes:
        return cls(names, tuple(values))

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{n}={np.shape(a)}" for n, a in zip(self.names, self.values, strict=False)
        )
        return f"Axes({sizes})"


class SweepResult(NamedTuple):
    """The outcome of `sweep`: a `Result` per member of the grid.

    Every field of `Result` is here with the grid's axes in front: `(n_learning_rates,
    n_guesses)`, or with more settings gridded (`momentum`, `precision`, `grad_tol` or
    `hyperparams` given as arrays) `(n_learning_rates, *their sizes, n_guesses)`; `axes`
    names them in order. The grid's own values ride along, so the result is self-describing.

    Attributes:
        x, cost, grad, step_size, iterations, status, history: as in `Result`.
        learning_rate: the learning rates, shape `(n_learning_rates,)`.
        initial_guess: the starting points, with `n_guesses` on every leaf's leading axis.
        grid_axes: the axes between them (`Axes`; empty when only learning rates and guesses
            are gridded); `axes` and `coords` read them.
    """

    x: PyTree
    cost: Numbers
    grad: PyTree
    step_size: Numbers
    iterations: Numbers
    status: Numbers
    history: History | None
    learning_rate: Numbers
    initial_guess: PyTree
    grid_axes: Axes = Axes()

    @property
    def axes(self) -> tuple[str, ...]:
        """The grid's axis names in order, e.g. `("learning_rate", "b1", "initial_guess")`."""
        return ("learning_rate", *self.grid_axes.names, "initial_guess")

    @property
    def coords(self) -> dict[str, Any]:
        """Each axis name to its values (`initial_guess`: the starting points)."""
        return {
            "learning_rate": self.learning_rate,
            **dict(zip(self.grid_axes.names, self.grid_axes.values, strict=True)),
            "initial_guess": self.initial_guess,
        }

    @property
    def converged(self) -> Numbers:
        """`status == Status.CONVERGED`."""
        return self.status == Status.CONVERGED

    @property
    def diverged(self) -> Numbers:
        """`status == Status.DIVERGED`."""
        return self.status == Status.DIVERGED

    @property
    def stalled(self) -> Numbers:
        """`status == Status.STALLED`."""
        return self.status == Status.STALLED

    @property
    def message(self) -> str | np.ndarray:
        """The status message (an array of messages for a batch)."""
        return _messages(self.status)

    def __repr__(self) -> str:
        sizes = np.shape(self.status)
        if not _concrete(self.status, self.iterations, self.cost) or not self._grid_shaped():
            # traced, or batched or sliced by a transformation: the fields as they are
            return _fields_repr(self)
        n_lr, n_g = sizes[0], sizes[-1]
        others = "".join(
            f" x {n} {name}" for name, n in zip(self.grid_axes.names, sizes[1:-1], strict=True)
        )
        return _summary(
            "SweepResult",
            self,
            f"; {_many(n_lr, 'learning rate')}{others} x {_many(n_g, 'guess')}",
        )

    def _grid_shaped(self) -> bool:
        """Whether the fields have the grid's axes and no others."""
        return np.ndim(self.status) == len(self.axes)

    def _check_grid(self, what: str) -> None:
        """Raise when the fields carry axes besides the grid's (a sweep under `jax.vmap`,
        whose every field has the mapped axis in front), which `what` cannot read."""
        if not self._grid_shaped():
            raise ValueError(
                f"`{what}` reads a grid with axes {self.axes}, but this SweepResult's fields "
                f"have {np.ndim(self.status)} (from a sweep under jax.vmap?): take one sweep "
                "out first, e.g. jax.tree.map(lambda a: a[0], res)"
            )

    def __getitem__(self, key: Any) -> Any:
        """`grid[i, j]` is `grid.member(i, j)`; an int or a slice indexes the fields."""
        if isinstance(key, tuple):
            return self.member(*key)
        return tuple.__getitem__(self, key)

    def member(self, *index: int) -> Result:
        """The `Result` at `index`, one entry per axis of `axes`: `member(i, j)` is learning
        rate `i` from starting point `j`; with a `b1` axis, `member(i, k, j)`.

        Raises:
            IndexError: a wrong number of indices, or one outside its axis (negative indices
                count from the end).
            TypeError: an index that is not an integer.
            ValueError: the fields have more axes than the grid (a sweep under `jax.vmap`).
        """
        self._check_grid("member")
        sizes = np.shape(self.status)
        if len(index) != len(sizes):
            raise IndexError(f"`member` takes one index per axis {self.axes}, got {len(index)}")
        for k in index:
            if isinstance(k, bool | np.bool_) or not isinstance(k, int | np.integer):
                raise TypeError(f"`member` takes integer indices, got {k!r}")
        for k, size, name in zip(index, sizes, self.axes, strict=True):
            if not -size <= k < size:
                raise IndexError(f"index {k} is outside the grid's {size} entries on axis {name!r}")
        fields = [getattr(self, name) for name in Result._fields]
        return Result(*(jax.tree.map(lambda leaf: leaf[index], f) for f in fields))

    def to_dataframe(self) -> Any:
        """The sweep as a `pandas.DataFrame`, one row per member (extra `gdkernel[pandas]`).

        Columns: each grid axis (`learning_rate`, any other gridded setting, the starting
        point as one column per component: `initial_guess`, `initial_guess[0]`, ... or
        `initial_guess.b0` for a dict), the final `x` likewise, `cost`, `iterations`,
        `step_size` and `status` by name.
        """
        from ._frames import to_dataframe

        self._check_grid("to_dataframe")
        return to_dataframe(self)

    def to_xarray(self) -> Any:
        """The sweep as an `xarray.Dataset` with the grid's axes as named dimensions (extra
        `gdkernel[xarray]`): the settings axes carry their values, `initial_guess` is numbered
        with its components as coordinates; variables `x` (per component), `cost`,
        `iterations`, `step_size` and `status` (codes; names in its attributes).
        """
        from ._frames import to_xarray

        self._check_grid("to_xarray")
        return to_xarray(self)

    def counts(self) -> dict[Status, int]:
        """How many members ended with each status."""
        codes = np.asarray(self.status).ravel()
        return {s: int(np.sum(codes == s)) for s in Status}

    def best(self, among: str = "converged") -> Best:
        """The member with the lowest final cost (ties go to the fewest iterations).

        Under a JAX transformation (a sweep inside `jax.jit`, or differentiated by `jax.grad`)
        the member is picked on the device: `index` holds traced integers, a derivative flows
        through the picked member's values, and where no member qualifies the picked
        member's `cost` is NaN instead of an error.

        Args:
            among: `"converged"` (default) considers converged members only; `"finite"` every
                member that did not diverge or get invalid input; `"all"` every member with a
                finite cost.

        Raises:
            ValueError: if no member qualifies (the message gives the status counts), or the
                fields have more axes than the grid (a sweep under `jax.vmap`).
        """
        if among not in ("converged", "finite", "all"):
            raise ValueError(f"`among` must be 'converged', 'finite' or 'all', got {among!r}")
        self._check_grid("best")
        fields = (self.status, self.cost, self.iterations)
        traced = any(isinstance(leaf, jax.core.Tracer) for leaf in fields)
        xp: Any = jnp if traced else np
        status = xp.asarray(self.status)
        cost = xp.asarray(self.cost) if traced else np.asarray(self.cost, dtype=np.float64)
        if among == "converged":
            ok = status == Status.CONVERGED
        elif among == "finite":
            ok = (status != Status.DIVERGED) & (status != Status.INVALID)
        else:
            ok = xp.ones_like(status, dtype=bool)
        ok &= xp.isfinite(cost)
        if not traced and not ok.any():
            counts = ", ".join(f"{s.name}: {n}" for s, n in self.counts().items() if n)
            raise ValueError(f"no member qualifies for best(among={among!r}); statuses: {counts}")
        # lowest cost first; among equal costs, the fewest iterations
        key = xp.where(ok, jax.lax.stop_gradient(cost) if traced else cost, xp.inf).ravel()
        order = xp.lexsort((xp.asarray(self.iterations).ravel(), key))
        if traced:
            index: tuple[Any, ...] = jnp.unravel_index(order[0], status.shape)

            def pick(leaf: Any) -> Array:
                return jnp.asarray(leaf)[index]

            result = Result(*(jax.tree.map(pick, getattr(self, f)) for f in Result._fields))
            result = result._replace(cost=jnp.where(ok.any(), result.cost, jnp.nan))
        else:
            index = tuple(int(k) for k in np.unravel_index(int(order[0]), status.shape))
            result = self.member(*index)
        coords = {
            name: jax.tree.map(lambda leaf, k=k: xp.asarray(leaf)[k] if traced else leaf[k], values)
            for (name, values), k in zip(self.coords.items(), index, strict=True)
        }
        return Best(coords["learning_rate"], coords["initial_guess"], index, result, coords)
