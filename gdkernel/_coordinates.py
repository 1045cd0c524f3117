"""A cost of a small vector, and its gradient, taken coordinate by coordinate.

`jax.grad` of a cost that reads its vector's numbers one by one (`x[0]`, `x[1]`, as
Rosenbrock's function does) transposes each read into a vector padded with zeros and adds
those vectors up; XLA on a CPU writes each padded vector out in a loop of its own, several
passes over a batch per evaluation. Here a cost that reads its vector only number by number
is traced once on the vector, and each slice of one number reads that
coordinate, given as a scalar, instead: the cost computes the same numbers, and each
coordinate's derivative is the sum of its reads' contributions, in the same order, with no
padded vector and nothing but elementwise arithmetic. (A cost that also uses the vector
whole, `jnp.sum(x)` or `x @ a`, keeps `jax.grad` of the vector: its whole-vector operations
would mix with the coordinates' in ways XLA compiles differently from one program to
another.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend.core import Literal

Cost = Callable[[Any, tuple], Any]


def value_and_grad(
    of_vector: Cost, coordinates: Sequence[Any], args: tuple
) -> tuple[Any, tuple] | None:
    """The cost at the vector of `coordinates` (scalars) and its derivative in each, or None
    when the cost uses its vector otherwise than through slices of one number (`x[k]`)."""
    closed = jax.make_jaxpr(lambda v: of_vector(v, args))(jnp.stack(coordinates))
    jaxpr = closed.jaxpr
    (vector,) = jaxpr.invars
    uses = [eqn for eqn in jaxpr.eqns if any(v is vector for v in eqn.invars)]
    if vector in jaxpr.outvars or not all(_one_number(eqn) for eqn in uses):
        return None
    return jax.value_and_grad(lambda c: _evaluate(closed, c))(tuple(coordinates))


def _one_number(eqn: Any) -> bool:
    """Whether `eqn` is a slice `x[k:k + 1]` of a vector."""
    if eqn.primitive.name != "slice":
        return False
    start, limit, strides = (eqn.params[k] for k in ("start_indices", "limit_indices", "strides"))
    return limit[0] - start[0] == 1 and (strides is None or strides[0] == 1)


def _evaluate(closed: Any, coordinates: Sequence[Any]) -> Any:
    """The traced cost `closed` at the vector of `coordinates`, each slice of one number of
    the vector read from its coordinate."""
    jaxpr = closed.jaxpr
    (vector,) = jaxpr.invars
    env: dict[Any, Any] = {vector: jnp.stack(coordinates)}
    env.update(zip(jaxpr.constvars, closed.consts, strict=True))

    def read(v: Any) -> Any:
        return v.val if isinstance(v, Literal) else env[v]

    for eqn in jaxpr.eqns:
        if eqn.invars and eqn.invars[0] is vector and _one_number(eqn):
            outs = [jnp.reshape(coordinates[eqn.params["start_indices"][0]], (1,))]
        else:
            with eqn.ctx.manager:
                params = eqn.primitive.get_bind_params(eqn.params)
                ans = eqn.primitive.bind(*map(read, eqn.invars), **params)
            outs = ans if eqn.primitive.multiple_results else [ans]
        env.update(zip(eqn.outvars, outs, strict=True))
    return read(jaxpr.outvars[0])
