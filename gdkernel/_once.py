"""A batch's step computed once per trip, by every loop alike.

XLA on a CPU emits one fused loop per array a loop carries, and each of them recomputes what
it needs of the step (the cost, the gradient, the status tests) unless the step is a
computation of its own. `lax.optimization_barrier` no longer makes it one: XLA removes it on
a CPU before it fuses. A branch of a conditional is one, whose outputs are written once.

`once(compute, live, x, *operands)` is `compute(x, *operands)`; under `jax.vmap`, on a CPU, it is
the vmapped `compute` as the branch of a conditional on whether any member is `live`. For
members carried in columns (`_columns`), the lanes (`_batch`) and the plain per-member loop
(`jax.vmap` of `_kernel.solve`) both take their proposal through it, so XLA fuses the same
arithmetic the same way in both and each member keeps the plain loop's bits (LLVM contracts
a product into a multiply-add depending on what else its fused loop computes: taken once
by the lanes alone, the last bits of Himmelblau's members moved). A lone, unbatched run
computes its step as it did. Members carried as vectors gained nothing from it (the
adjoint benchmark's forward sweep) and keep their step as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array, lax

from . import _columns
from ._closure import traced
from ._types import PyTree


def once(compute: Callable[..., Any], live: Array, x: PyTree, *operands: Any) -> Any:
    """`compute(x, *operands)`, computed once per batch under `jax.vmap` on a CPU when the
    member `x` is carried in columns."""
    operands = (x, *operands)
    if jax.default_backend() != "cpu" or not _columns.carried(x):
        return compute(*operands)
    # Traced once here: every value `compute` closes over (a batched array of the caller's
    # among them) becomes an argument, since `custom_vmap` sees only its arguments batched.
    evaluate, consts = traced(compute, *operands)
    flat = jax.tree.leaves(operands)

    @jax.custom_batching.custom_vmap
    def call(live: Array, flat: list, consts: list) -> Any:
        return evaluate(consts, flat)

    @call.def_vmap
    def batched(
        size: int, in_batched: tuple, live: Array, flat: list, consts: list
    ) -> tuple[Any, Any]:
        live_batched, flat_batched, consts_batched = in_batched

        def run() -> Any:
            axes = (
                [0 if b else None for b in flat_batched],
                [0 if b else None for b in consts_batched],
            )
            return jax.vmap(lambda f, c: evaluate(c, f), in_axes=axes, axis_size=size)(flat, consts)

        outputs = jax.eval_shape(run)
        anyone = jnp.any(live) if live_batched else live
        out = lax.cond(
            anyone, run, lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), outputs)
        )
        return out, jax.tree.map(lambda _: True, out)

    return call(live, flat, consts)
