"""What one member's cost and gradient compute, read from their jaxpr."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def work(
    value_and_grad: Callable[[PyTree, tuple], Any], x0: PyTree, args: tuple, batched: bool = True
) -> tuple[int, int]:
    """(bytes, flops) one member's cost and gradient compute, from their jaxpr on one member
    (`x0` itself, or of the batch `x0` when `batched`): the bytes of every operation's
    outputs, and an element operation per output element, two per multiply-add of a
    contraction (each loop or call body counted once)."""

    def abstract(leaf: Any, skip: bool) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(jnp.shape(leaf)[skip:], jnp.result_type(leaf))

    one = jax.tree.map(lambda leaf: abstract(leaf, batched), x0)
    jaxpr = jax.make_jaxpr(value_and_grad)(one, jax.tree.map(lambda a: abstract(a, False), args))
    return _jaxpr_work(jaxpr.jaxpr)


def _jaxpr_work(jaxpr: Any) -> tuple[int, int]:
    total, flops = 0, 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            aval = var.aval
            if hasattr(aval, "shape") and hasattr(aval, "dtype"):
                size = math.prod(aval.shape)
                total += size * aval.dtype.itemsize
                flops += size
                if eqn.primitive.name == "dot_general":
                    (contracted, _), _ = eqn.params["dimension_numbers"]
                    lhs = eqn.invars[0].aval.shape
                    flops += size * (2 * math.prod(lhs[d] for d in contracted) - 1)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's, or a Jaxpr
                if hasattr(inner, "eqns"):
                    more = _jaxpr_work(inner)
                    total, flops = total + more[0], flops + more[1]
    return total, flops
