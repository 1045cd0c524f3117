r"""Powers to a traced integer, computed from `exp` and `log` so that they vectorise.

optax's bias corrections raise a decay rate to the step count ($1 - \beta^t$), a `pow` with
an integer exponent. XLA on a CPU has no vectorised power function: each one becomes a call
of the C library's `powf` per number, the better part of an Adam step. `vectorised_powers(f)`
runs `f` with every such power taken as

$$x^n = \operatorname{sign} \cdot \exp(n \log |x|), \qquad x^0 = 1,$$

with the sign of $x$ (of a zero too) for odd $n$, which XLA computes many numbers at a time.
The result is $x^n$ within $2 + |n \log |x||$ units in the last place (the rounding of
$\log |x|$, multiplied by $n$), against half a unit for `powf`. For a bias correction
$1 - \beta^t$ ($0 < \beta < 1$, $u = t |\log \beta|$) that is an error of at most
$(2 + u) e^{-u} \le 2$ units of 1, where `powf`'s rounding leaves half a unit. A power to
a non-integer exponent, and every other operation, is `f`'s own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core

from ._closure import traced

_POW = core.primitives.pow_p
_JIT = core.primitives.jit_p


def _integer_power(x: jax.Array, n: jax.Array) -> jax.Array:
    """$x^n$ for a float `x` and an integer `n`, elementwise."""
    power = lax.exp(lax.convert_element_type(n, x.dtype) * lax.log(lax.abs(x)))
    negative = ((n & 1) == 1) & jnp.signbit(x)  # odd n (two's complement: negative ones too)
    signed = lax.select(negative, -power, power)
    return lax.select(n == 0, jnp.ones_like(signed), signed)


def _is_integer_power(eqn: Any) -> bool:
    if eqn.primitive is not _POW:
        return False
    base, exponent = (v.aval for v in eqn.invars)
    return jnp.issubdtype(exponent.dtype, jnp.integer) and jnp.issubdtype(base.dtype, jnp.floating)


def _has_integer_power(jaxpr: Any) -> bool:
    """Whether `jaxpr`, or a `jit` nested in it, raises a number to an integer."""
    return any(
        _is_integer_power(eqn)
        or (eqn.primitive is _JIT and _has_integer_power(eqn.params["jaxpr"].jaxpr))
        for eqn in jaxpr.eqns
    )


def _run(jaxpr: Any, consts: Sequence[Any], *args: Any) -> list[Any]:
    """Evaluate `jaxpr` as JAX does, integer powers (also inside nested `jit`s) taken the
    vectorised way."""
    env: dict[Any, Any] = {}

    def read(var: Any) -> Any:
        return var.val if isinstance(var, core.Literal) else env[var]

    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        values = [read(v) for v in eqn.invars]
        if _is_integer_power(eqn):
            outs = [_integer_power(*values)]
        elif eqn.primitive is _JIT and _has_integer_power(eqn.params["jaxpr"].jaxpr):
            inner = eqn.params["jaxpr"]
            outs = _run(inner.jaxpr, inner.consts, *values)
        else:
            out = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
            outs = out if eqn.primitive.multiple_results else [out]
        for var, value in zip(eqn.outvars, outs, strict=True):
            if not isinstance(var, core.DropVar):
                env[var] = value
    return [read(v) for v in jaxpr.outvars]


def vectorised_powers(f: Callable[..., Any]) -> Callable[..., Any]:
    """`f` with its powers to traced integers computed from `exp` and `log` (see above)."""

    def run(*args: Any) -> Any:
        evaluate, consts = traced(f, *args, run=_run)
        return evaluate(consts, jax.tree.leaves(args))

    return run
