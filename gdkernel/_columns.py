"""A small vector per member carried as one array per coordinate.

With a member's iterate a vector of `d` numbers, a batch carries `(members, d)` arrays: the
kernel's norms and finiteness tests are then reductions over each member's row, which XLA on
a CPU ends a fused loop at, and the gradient of a cost that reads the vector's numbers one
by one is built from padded copies of the vector, each written out in a loop of its own.
Carried instead as `d` arrays of `(members,)` (a `Columns` node in place of each such leaf),
the same sums run over scalar leaves in the same order, and the autodiff gradient of a cost
that reads a single vector number by number is taken coordinate by coordinate
(`_coordinates`): a step is then elementwise from end to end. The cost still sees the
member's vector, stacked from its coordinates.

Used when every leaf of the iterate is a number or a vector of at most `MAX_COLUMNS` numbers
(one at least), for a cost that computes little (`MAX_WORK_BYTES`), under a rule that updates
each element on its own (`gd`, `momentum`, and optax's elementwise optimizers,
`_optimizers.is_elementwise`), by every loop alike: a lone run's (`_kernel.solve`, so also
`jax.vmap` of it) and a batch's (`_batch.solve_batch`), so that a batch's members keep the
plain loop's bits. Not under `nesterov`: its step, fused into the lanes' loops, contracts
its multiply-adds into FMAs differently from the plain loop's (Himmelblau's function, in
both precisions, differed in the last bits). Nor for a rule with a norm over a leaf (optax's
`lamb`, say), which would take one per coordinate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from . import _coordinates
from ._optimizers import is_elementwise
from ._work import work

if TYPE_CHECKING:
    from ._kernel import Options

PyTree = Any
ValueAndGrad = Callable[[PyTree, tuple], tuple[Any, PyTree]]

# The longest vector carried in columns: each coordinate is an array of its own, and the
# expressions XLA fuses grow with their count.
MAX_COLUMNS = 8
# The most bytes a member's cost and gradient may compute for it to be carried in columns:
# a costly cost gains nothing from them (Rosenbrock's function computes 248 bytes; W4's line
# fit over 10,000 points 720 KB, measured in docs/benchmarks.md).
MAX_WORK_BYTES = 2**11


class Columns(tuple):
    """The coordinates of a vector leaf, one array each: a pytree node."""


jax.tree_util.register_pytree_node(
    Columns, lambda c: (tuple(c), None), lambda _, children: Columns(children)
)


def carried(x: PyTree) -> bool:
    """Whether `x` (a member, or a carry of members) holds a vector in columns."""
    return any(isinstance(c, Columns) for c in jax.tree.leaves(x, is_leaf=_is_columns))


def _is_columns(c: Any) -> bool:
    return isinstance(c, Columns)


def _vector(leaf: Any, batched: bool) -> bool:
    return jnp.ndim(leaf) == 1 + batched and 1 < jnp.shape(leaf)[-1] <= MAX_COLUMNS


def _fits(x: PyTree, opts: Options, batched: bool) -> bool:
    """`applies` but for the cost's work."""
    leaves = jax.tree.leaves(x)
    return (
        opts.method != "nesterov"  # see the module's docstring
        and is_elementwise(opts.method, opts.static_hyperparams)
        and all(jnp.ndim(leaf) == batched or _vector(leaf, batched) for leaf in leaves)
        and any(_vector(leaf, batched) for leaf in leaves)
    )


def applies(x: PyTree, opts: Options, work_bytes: int, batched: bool = True) -> bool:
    """Whether an iterate like `x` (a batch of them when `batched`) is carried in columns:
    numbers and vectors of at most `MAX_COLUMNS` numbers (one at least), an elementwise rule
    other than `nesterov`, and a cost and gradient that compute at most `MAX_WORK_BYTES` for
    a member (`work_bytes`, `_work.work`)."""
    return work_bytes <= MAX_WORK_BYTES and _fits(x, opts, batched)


def for_member(value_and_grad: ValueAndGrad, x: PyTree, opts: Options, args: tuple) -> bool:
    """`applies` to one member `x` of a cost whose `value_and_grad` is given (traced for its
    work only when the rest allows columns)."""
    return _fits(x, opts, False) and (
        work(value_and_grad, x, args, batched=False)[0] <= MAX_WORK_BYTES
    )


def split(tree: PyTree, batched: bool = True) -> PyTree:
    """Each vector leaf of `tree` (on the last axis) as `Columns`."""

    def one(leaf: Any) -> Any:
        if _vector(leaf, batched):
            return Columns(leaf[..., k] for k in range(jnp.shape(leaf)[-1]))
        return leaf

    return jax.tree.map(one, tree)


def join(tree: PyTree) -> PyTree:
    """`split` undone: every `Columns` in `tree` (a carry, a `Result` and its history) stacked
    on the last axis."""
    return jax.tree.map(
        lambda c: jnp.stack(c, axis=-1) if isinstance(c, Columns) else c,
        tree,
        is_leaf=_is_columns,
    )


def value_and_grad(of_vectors: ValueAndGrad) -> ValueAndGrad:
    """`of_vectors` for one member in columns. The autodiff gradient (`of_vectors.cost` set,
    `_kernel.make_value_and_grad`) of a cost that reads a single vector number by number is
    taken coordinate by coordinate; else the cost and gradient see the member's vectors."""
    cost = getattr(of_vectors, "cost", None)

    def of_columns(x: PyTree, args: tuple) -> tuple[Any, PyTree]:
        if cost is not None and isinstance(x, Columns):
            by_coordinates = _coordinates.value_and_grad(cost, x, args)
            if by_coordinates is not None:
                value, grad = by_coordinates
                return value, Columns(grad)
        value, grad = of_vectors(join(x), args)
        return value, split(grad, batched=False)

    return of_columns
