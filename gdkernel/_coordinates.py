"""A cost of a small vector, and its gradient, taken coordinate by coordinate.

`jax.grad` of a cost that reads its vector's numbers one by one (`x[0]`, `x[1]`, as
Rosenbrock's function does) transposes each read into a vector padded with zeros and adds
those vectors up; XLA on a CPU writes each padded vector out in a loop of its own, several
passes over a batch per evaluation. Here a cost that reads its vector only number by number
(`reads_numbers`) is traced once on the vector, and each slice of one number reads that
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


def _trace(of_vector: Cost, coordinates: Sequence[Any], args: tuple) -> tuple[Any, Any]:
    x = jnp.stack(coordinates)
    return x, jax.make_jaxpr(lambda v: of_vector(v, args))(x)


def reads_numbers(of_vector: Cost, coordinates: Sequence[Any], args: tuple) -> bool:
    """Whether the cost uses its vector only through slices of one number (`x[k]`)."""
    jaxpr = _trace(of_vector, coordinates, args)[1].jaxpr
    (vector,) = jaxpr.invars
    return vector not in jaxpr.outvars and all(
        eqn.primitive.name == "slice" and _one_number(eqn.params)
        for eqn in jaxpr.eqns
        if any(v is vector for v in eqn.invars)
    )


def cost(of_vector: Cost, coordinates: Sequence[Any], args: tuple) -> Any:
    """`of_vector(jnp.stack(coordinates), args)`, each slice `x[k:k + 1]` of the vector read
    from coordinate `k`."""
    x, closed = _trace(of_vector, coordinates, args)
    jaxpr = closed.jaxpr
    (vector,) = jaxpr.invars
    env: dict[Any, Any] = {vector: x, **dict(zip(jaxpr.constvars, closed.consts, strict=True))}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, Literal) else env[v]

    for eqn in jaxpr.eqns:
        params = eqn.params
        if eqn.primitive.name == "slice" and eqn.invars[0] is vector and _one_number(params):
            outs = [jnp.reshape(coordinates[params["start_indices"][0]], (1,))]
        else:
            with eqn.ctx.manager:
                ans = eqn.primitive.bind(
                    *map(read, eqn.invars), **eqn.primitive.get_bind_params(params)
                )
            outs = ans if eqn.primitive.multiple_results else [ans]
        env.update(zip(eqn.outvars, outs, strict=True))
    return read(jaxpr.outvars[0])


def _one_number(params: dict[str, Any]) -> bool:
    start, limit, strides = params["start_indices"], params["limit_indices"], params["strides"]
    return limit[0] - start[0] == 1 and (strides is None or strides[0] == 1)


def value_and_grad(of_vector: Cost, coordinates: Sequence[Any], args: tuple) -> tuple[Any, tuple]:
    """The cost at the vector of `coordinates` (scalars) and its derivative in each."""
    return jax.value_and_grad(lambda c: cost(of_vector, c, args))(tuple(coordinates))
