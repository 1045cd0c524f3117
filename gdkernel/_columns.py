"""A small vector per member carried as one array per coordinate.

With a member's iterate a vector of `d` numbers, the lanes carry `(lanes, d)` arrays: the
kernel's norms and finiteness tests are then reductions over each member's row, and XLA on a
CPU closes a fused loop at every reduction, so a trip runs several loops over the lanes, each
writing its result to memory. Carried instead as `d` arrays of `(lanes,)` (a `Columns` node
in place of each such leaf), the same sums run over scalar leaves, in the same order: a trip
is elementwise from end to end, in fewer loops over the lanes. The cost and gradient still
see the member's vector, stacked from its coordinates (measured in `docs/benchmarks.md`:
Rosenbrock in 2-D 1.3x faster).

Used for plain gradient descent when every leaf of the iterate is a number or a vector of at
most `MAX_COLUMNS` numbers, and the cost computes little (`MAX_WORK_BYTES`). Not for the other rules: fused into fewer loops, their
multiply-adds contract into FMAs differently from the plain loop's, so a member's last bits
would differ from it (measured: Himmelblau's function in float32 under `nesterov`, and Adam
on Rosenbrock's in both precisions, which in columns ran 1.3x faster).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ._kernel import Options, ValueAndGrad

PyTree = Any

# The longest vector split into coordinates: each coordinate is an array of its own, and
# the loops XLA fuses grow with their count.
MAX_COLUMNS = 8


# The most bytes a member's cost and gradient may compute for it to be carried in columns: each
# of a trip's loops over the lanes (one per carried array) evaluates the cost again, which pays
# only for a cheap cost. Rosenbrock's function computes 248 bytes; W4's line fit over 10,000
# points 720 KB, and ran 1.9x slower in columns on one host thread (3.49 s against 1.82 s).
MAX_WORK_BYTES = 2**11


class Columns(tuple):
    """The coordinates of a vector leaf, one array each: a pytree node."""


jax.tree_util.register_pytree_node(
    Columns, lambda c: (tuple(c), None), lambda _, children: Columns(children)
)


def _splits(leaf: Any, axis: int) -> bool:
    return jnp.ndim(leaf) == axis + 1 and 1 < jnp.shape(leaf)[axis] <= MAX_COLUMNS


def applies(example: PyTree, opts: Options, work_bytes: int) -> bool:
    """Whether a batch like `example` (batch on the leading axis) is carried in columns: a
    vector leaf of at most `MAX_COLUMNS` numbers, no leaf with more axes, plain gradient
    descent, and a cost and gradient that compute at most `MAX_WORK_BYTES` a member
    (`work_bytes`, `_batch._work`)."""
    leaves = jax.tree.leaves(example)
    return (
        opts.method == "gd"  # see the module's docstring
        and work_bytes <= MAX_WORK_BYTES
        and all(jnp.ndim(leaf) <= 2 and (jnp.ndim(leaf) < 2 or _splits(leaf, 1)) for leaf in leaves)
        and any(_splits(leaf, 1) for leaf in leaves)
    )


def split(tree: PyTree, axis: int = 1) -> PyTree:
    """Each vector leaf of `tree` (vector along `axis`: 1 in a batch, 0 for one member) as
    `Columns`."""

    def one(leaf: Any) -> Any:
        if _splits(leaf, axis):
            return Columns(jnp.take(leaf, k, axis=axis) for k in range(jnp.shape(leaf)[axis]))
        return leaf

    return jax.tree.map(one, tree)


def join(tree: PyTree, axis: int = 1) -> PyTree:
    """`split` undone."""
    return jax.tree.map(
        lambda c: jnp.stack(c, axis=axis) if isinstance(c, Columns) else c,
        tree,
        is_leaf=lambda c: isinstance(c, Columns),
    )


def value_and_grad(of_vectors: ValueAndGrad) -> ValueAndGrad:
    """`of_vectors` for one member given in columns: the cost sees its vectors."""

    def of_columns(x: PyTree, args: tuple) -> tuple[Any, PyTree]:
        cost, grad = of_vectors(join(x, 0), args)
        return cost, split(grad, 0)

    return of_columns
