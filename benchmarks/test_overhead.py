"""Compile time, and the cost of one call for a lone problem (batch 1), apart from run time.

- `test_compile`: lowering and compiling W1's program (scalar cost) at batch 1 and 1e6, for
  gdkernel (`gd.compile_sweep`) and the `jit(vmap(while_loop))` reference.
- `test_lone_call`: one W1 member (lr 0.001, 500 iterations) per call, after compilation:
  `gd.gradient_descent`, a compiled `gd.compile_sweep` of batch 1, and the reference
  `jit(lax.while_loop)`; `max_iter=1` isolates the call overhead.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import gdkernel as gd

from .problems import quadratic, w1


def _reference_program(batch: int):
    """The peers' design, lowered for a batch of W1 members (traced afresh each call)."""
    grad = jax.grad(lambda x: quadratic(x))

    def one(x0, lr):
        def body(c):
            x, it, _ = c
            new = x - lr * grad(x)
            return new, it + 1, jnp.abs(new - x) < 1e-5

        return lax.while_loop(lambda c: (c[1] < 500) & ~c[2], body, (x0, 0, False))[:2]

    shape = jax.ShapeDtypeStruct((batch,), jnp.float32)
    return jax.jit(jax.vmap(one)).lower(shape, shape)


@pytest.mark.benchmark
@pytest.mark.parametrize("batch", ["1", "1e6"])
@pytest.mark.parametrize("impl", ["gdkernel", "reference"])
def test_compile(benchmark, timing: bool, impl: str, batch: str) -> None:
    size = {"1": 1, "1e6": 1_000_000 if timing else 1_000}[batch]
    p = w1(size, 0.001)

    if impl == "gdkernel":

        def compile_once() -> float:
            cost = lambda x: quadratic(x)  # noqa: E731  (a new function: no cache hit)
            run = gd.compile_sweep(
                cost, p.guesses, p.rates, precision=p.precision, max_iter=p.max_iter
            )
            return run.compile_seconds

    else:

        def compile_once() -> float:
            start = time.perf_counter()
            _reference_program(size).compile()
            return time.perf_counter() - start

    benchmark.group = "compile W1 (scalar cost)"
    seconds = benchmark.pedantic(compile_once, rounds=3 if timing else 1, iterations=1)
    assert 0 < seconds < 60
    benchmark.extra_info.update(implementation=impl, case=f"compile-{batch}", batch=size)


@pytest.mark.benchmark
@pytest.mark.parametrize("max_iter", [1, 500])
@pytest.mark.parametrize("impl", ["gradient_descent", "compile_sweep", "reference"])
def test_lone_call(benchmark, impl: str, max_iter: int) -> None:
    x0, lr = np.float32(8.0), np.float32(0.001)
    if impl == "gradient_descent":

        def call():
            res = gd.gradient_descent(quadratic, x0, lr, precision=1e-5, max_iter=max_iter)
            return jax.block_until_ready(res.x), res.iterations

    elif impl == "compile_sweep":
        run = gd.compile_sweep(quadratic, x0, lr, precision=1e-5, max_iter=max_iter)

        def call():
            res = run(x0, lr)
            return jax.block_until_ready(res.x[0, 0]), res.iterations[0, 0]

    else:
        grad = jax.grad(quadratic)

        @jax.jit
        def loop(x0, lr):
            def body(c):
                x, it, _ = c
                new = x - lr * grad(x)
                return new, it + 1, jnp.abs(new - x) < 1e-5

            return lax.while_loop(lambda c: (c[1] < max_iter) & ~c[2], body, (x0, 0, False))[:2]

        def call():
            x, it = loop(x0, lr)
            return jax.block_until_ready(x), it

    x, its = call()  # compile outside the timing
    expected = 8.0
    for _ in range(max_iter):  # the tutorial's loop: W1 from 8 at lr 0.001 runs to max_iter
        expected -= 0.001 * (6 * expected - 2)
    assert int(its) == max_iter
    np.testing.assert_allclose(float(x), expected, rtol=1e-4)
    benchmark.group = f"lone call, max_iter={max_iter}"
    benchmark.extra_info.update(implementation=impl, case=f"lone-{max_iter}", batch=1)
    benchmark(call)
