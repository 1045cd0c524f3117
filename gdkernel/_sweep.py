"""`sweep`: every learning rate x every starting point, in one compiled program."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from . import _validate as v
from ._batch import solve_members
from ._result import Result, SweepResult
from ._solve import float_dtype, make_options, make_params

PyTree = Any


def as_guesses(tree: PyTree, name: str = "initial_guesses") -> tuple[PyTree, int]:
    """The starting points with the batch on every leaf's leading axis, and the batch size.

    A guess whose leaves are all scalars is one starting point (a batch of 1).
    """
    guesses = v.as_guess(tree, name)
    leaves = jax.tree.leaves(guesses)
    if all(jnp.ndim(leaf) == 0 for leaf in leaves):
        return jax.tree.map(lambda leaf: leaf[None], guesses), 1
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        shapes = ", ".join(str(jnp.shape(leaf)) for leaf in leaves)
        raise ValueError(
            f"`{name}` needs the batch of starting points on the leading axis of every leaf; "
            f"the leaves have shapes {shapes}"
        )
    (size,) = sizes
    if size == 0:
        raise ValueError(f"`{name}` must hold at least one starting point")
    return guesses, size


def grid_members(x0: PyTree, learning_rates: Array) -> tuple[PyTree, Array]:
    """Flatten the grid: member `i * n_guesses + j` is learning rate `i` from guess `j`."""
    n_lr = learning_rates.shape[0]
    n_g = jax.tree.leaves(x0)[0].shape[0]
    xs = jax.tree.map(lambda leaf: jnp.tile(leaf, (n_lr,) + (1,) * (leaf.ndim - 1)), x0)
    return xs, jnp.repeat(learning_rates, n_g)


def ungrid(result: Result, n_lr: int, n_g: int) -> Result:
    return jax.tree.map(lambda leaf: leaf.reshape(n_lr, n_g, *leaf.shape[1:]), result)


def sweep(
    cost_fn: Callable[..., Any],
    initial_guesses: PyTree,
    learning_rates: Any,
    *,
    precision: float | Any = 1e-4,
    max_iter: int = 100,
    args: tuple = (),
    grad_fn: Callable[..., PyTree] | None = None,
    norm: str = "l1",
    grad_tol: float | None = None,
    method: str = "gd",
    momentum: float = 0.9,
    history: bool = False,
    history_every: int = 1,
    symbols: Any = None,
) -> SweepResult:
    r"""Run `gradient_descent` for every learning rate from every starting point.

    The grid is flattened into one batch and solved in one compiled program; each member
    stops on its own rule and ends exactly where a lone `gradient_descent` run would.

    Shapes: with `n_lr` learning rates and `n_g` starting points, every field of the result
    has leading axes `(n_lr, n_g)`; e.g. `x` has shape `(n_lr, n_g, *x_shape)` and `status`
    `(n_lr, n_g)`. A scalar learning rate counts as `n_lr = 1`; a single starting point (all
    leaves scalars) as `n_g = 1`: the axes are kept, never squeezed. To pass one vector-valued
    starting point, give it a leading axis of length 1 (`x0[None]`).

    Args:
        cost_fn: `cost_fn(x, *args) -> scalar`, as in `gradient_descent`.
        initial_guesses: the starting points, batched on the leading axis of every leaf.
        learning_rates: a scalar or a 1-D array of learning rates, all > 0.
        precision, max_iter, args, grad_fn, norm, grad_tol, method, momentum, history,
        history_every, symbols: as in `gradient_descent`, shared by every member.

    Returns:
        A `SweepResult`: the fields of `Result` with the grid axes in front, the grid's
        `learning_rate` and `initial_guess`, and helpers `best()`, `member(i, j)` and `counts()`.

    Raises:
        ValueError: the leaves of `initial_guesses` disagree on the batch size, a learning
            rate is <= 0 or non-finite, plus everything `gradient_descent` raises.

    Example:
        >>> import jax.numpy as jnp
        >>> import gdkernel as gd
        >>> grid = gd.sweep(lambda x: x**2, jnp.linspace(-3, 3, 5), jnp.array([0.01, 0.1, 1.5]))
        >>> grid.status.shape
        (3, 5)
        >>> float(grid.best().learning_rate)
        0.1...
    """
    cost_fn = v.cost_function(cost_fn, symbols)
    grad_fn = v.grad_function(grad_fn)
    x0, _ = as_guesses(initial_guesses)
    dtype = float_dtype(x0)
    lrs = v.as_learning_rates(learning_rates)
    max_iter = v.as_max_iter(max_iter)
    params = make_params(
        dtype,
        1.0,
        v.as_precision(precision),
        v.as_grad_tol(grad_tol),
        v.as_momentum(momentum),
        max_iter,
    )._replace(learning_rate=lrs.astype(dtype))
    opts = make_options(norm, method, history, history_every, max_iter)
    v.warn_precision(precision, x0)
    args = v.as_args(args)
    n_lr, n_g = lrs.shape[0], jax.tree.leaves(x0)[0].shape[0]
    xs, member_lrs = grid_members(x0, params.learning_rate)
    flat = solve_members(
        xs,
        params._replace(learning_rate=member_lrs),
        args,
        cost_fn=cost_fn,
        grad_fn=grad_fn,
        opts=opts,
    )
    result = ungrid(flat, n_lr, n_g)
    return SweepResult(*result, learning_rate=params.learning_rate, initial_guess=x0)
