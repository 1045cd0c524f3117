"""Mini-batches: each iteration's gradient on a fresh random sample of the data in `args`.

The data are the arrays in `args` with at least one axis; they must agree on the length of
their leading axis (the data size `n`), and each sample takes the same rows of every one.
The gradient evaluated after iteration `k` (the one that iteration `k + 1` steps with) sees
`batch_size` rows drawn uniformly with replacement with the key `fold_in(key, k)` (int32
rows, the same in float32 and float64): a
member's sample depends only on the key and its iteration number, so every member of a
sweep sees the same stream (common random numbers: the learning rates are compared on the
same noise) and a run is reproducible from its key. `batch_size = n` takes every row,
in order: full-batch gradient descent.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._types import PyTree


def data_size(args: tuple) -> int:
    """The length of the leading axis every array of `args` shares.

    Raises:
        ValueError: `args` holds no array, or its arrays disagree on the leading axis.
    """
    leaves = [leaf for leaf in jax.tree.leaves(args) if np.ndim(leaf) >= 1]
    sizes = {np.shape(leaf)[0] for leaf in leaves}
    if not leaves:
        raise ValueError("`batch_size` samples the arrays of `args`, but `args` holds no array")
    if len(sizes) > 1:
        shapes = ", ".join(str(np.shape(leaf)) for leaf in leaves)
        raise ValueError(
            "`batch_size` samples rows of every array in `args`, so they must share the "
            f"length of their leading axis (the data size); the shapes are {shapes}. Close "
            "over arrays that are not data (e.g. with functools.partial)"
        )
    return sizes.pop()


def as_key(key: Any, batch_size: int) -> Any:
    """A typed PRNG key (a raw `uint32[2]` key is wrapped); None without `batch_size`."""
    if key is None:
        if batch_size:
            raise ValueError("`batch_size` needs `key`, a jax.random key (e.g. jax.random.key(0))")
        return None
    if not batch_size:
        raise ValueError("`key` is used only to draw mini-batches: give `batch_size` too")
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if jnp.ndim(key) != 0:
            raise TypeError(f"`key` must be one key, got a batch of shape {jnp.shape(key)}")
        return key
    if dtype is not None and jnp.shape(key) == (2,) and jnp.issubdtype(dtype, jnp.uint32):
        return jax.random.wrap_key_data(key)
    raise TypeError(
        f"`key` must be a jax.random key (jax.random.key(0) or PRNGKey(0)), got {key!r:.60}"
    )


def as_batch_size(value: Any, args: tuple) -> int:
    """The mini-batch size, checked against the data size of `args`; 0 for none."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"`batch_size` must be an int, got {type(value).__name__}")
    size = data_size(args)
    if not 1 <= value <= size:
        raise ValueError(f"`batch_size` must be between 1 and the data size {size}, got {value}")
    return int(value)


def sample(args: tuple, key: Any, iteration: Any, batch_size: int) -> tuple:
    """The rows of `args` that the gradient after iteration `iteration` sees."""
    size = data_size(args)
    if batch_size == size:
        return args
    # int32 rows whatever jax_enable_x64 says: the same key draws the same rows in both
    rows = jax.random.randint(
        jax.random.fold_in(key, iteration), (batch_size,), 0, size, dtype=jnp.int32
    )

    def take(leaf: PyTree) -> PyTree:
        return leaf[rows] if np.ndim(leaf) >= 1 else leaf

    return jax.tree.map(take, args)
