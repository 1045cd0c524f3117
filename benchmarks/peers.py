"""The implementations compared in the benchmarks, each behind one interface.

`prepare(name, problem)` returns a `Runner`: `run()` solves every member of the problem and
blocks until done; `unpack(out)` turns its output into `(x, iterations)` NumPy arrays (members
on the leading axis), plus a status array where the implementation reports one. JAX programs
are cached by workload, so sizes that repeat do not recompile.

Peers (jaxopt, optimistix, optax) and numba come from the optional `bench` extra; a missing
one skips its benchmark. Their stopping rules, as configured here:

| implementation | stops when | note |
| --- | --- | --- |
| gdkernel, reference, optax, NumPy, Python, numba | `||x_new - x||_2 < precision` | same rule, same count |
| jaxopt `GradientDescent` | `||x_new - x||_2 / lr <= precision / lr` | `<=` and a division: rare off-by-one |
| optimistix `GradientDescent` | Cauchy test on `y` and `f` with `atol=precision` | a different rule: other counts |
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import gdkernel as gd

from .problems import Problem

IMPLEMENTATIONS = (
    "gdkernel",
    "gdkernel_1thread",
    "gradient_descent",
    "reference",
    "lax_map",
    "numba",
    "numba_lanes",
    "numpy",
    "python",
    "jaxopt",
    "optimistix",
    "optax",
)
# The per-member designs; the wasted fraction of the lock-step ones is 1 - sum / (n * max).
LOCK_STEP = ("reference", "jaxopt", "optimistix", "optax")
# Members per chunk of the `lax.map` design, and per lock-step group of `numba_lanes`.
MAP_CHUNK = 4096
NUMBA_LANES = 128


@dataclass
class Runner:
    run: Callable[[], Any]
    unpack: Callable[[Any], tuple[np.ndarray, np.ndarray, np.ndarray | None]]


def _import(module: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jaxopt warns that it is no longer maintained
        return pytest.importorskip(module, reason=f"{module} needs: pip install 'gdkernel[bench]'")


def _key(p: Problem) -> tuple:
    return (p.name, p.precision, p.max_iter, p.dtype)


def _device(p: Problem) -> tuple[jax.Array, jax.Array, tuple]:
    x0, rates = p.members()
    return jnp.asarray(x0), jnp.asarray(rates), tuple(jnp.asarray(a) for a in p.args)


def _jax_runner(fn: Callable, p: Problem) -> Runner:
    x0, rates, args = _device(p)

    def run() -> Any:
        return jax.block_until_ready(fn(x0, rates, *args))

    def unpack(out: Any) -> tuple[np.ndarray, np.ndarray, None]:
        return np.asarray(out[0]), np.asarray(out[1]), None

    return Runner(run, unpack)


# ------------------------------------------------------------------------------- gdkernel


def gdkernel_runner(p: Problem, one_thread: bool = False) -> Runner:
    """`gd.sweep` as a user calls it (its default: a host thread per core on one CPU device),
    or on one thread."""
    args = tuple(jnp.asarray(a) for a in p.args)
    guesses, rates = jnp.asarray(p.guesses), jnp.asarray(p.rates)
    threads = 1 if one_thread else None

    def run() -> gd.SweepResult:
        res = gd.sweep(
            p.cost,
            guesses,
            rates,
            precision=p.precision,
            max_iter=p.max_iter,
            args=args,
            norm="l2",
            threads=threads,
        )
        return jax.block_until_ready(res)

    def unpack(res: gd.SweepResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.asarray(res.x)
        return (
            x.reshape(p.size, *x.shape[2:]),
            np.asarray(res.iterations).ravel(),
            np.asarray(res.status).ravel(),
        )

    return Runner(run, unpack)


def lone_runner(p: Problem) -> Runner:
    """`gd.gradient_descent` on a lone problem (batch 1): the plain kernel loop, no sweep."""
    if p.size != 1:
        raise ValueError("gradient_descent is timed on a lone problem (batch 1); sweep batches")
    x0, rates = p.members()
    args = tuple(jnp.asarray(a) for a in p.args)

    def run() -> gd.Result:
        res = gd.gradient_descent(
            p.cost,
            x0[0],
            rates[0],
            precision=p.precision,
            max_iter=p.max_iter,
            args=args,
            norm="l2",
        )
        return jax.block_until_ready(res)

    def unpack(res: gd.Result) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.asarray(res.x)[None],
            np.asarray(res.iterations).reshape(1),
            np.asarray(res.status).reshape(1),
        )

    return Runner(run, unpack)


# ------------------------------------------------------ jit(vmap(while_loop)) and the peers


@functools.cache
def _reference(key: tuple, cost: Callable, n_args: int) -> Callable:
    _, precision, max_iter, _ = key
    grad = jax.grad(cost)

    def one(x0: jax.Array, lr: jax.Array, *args: Any) -> tuple[jax.Array, jax.Array]:
        def body(c: tuple) -> tuple:
            x, it, _ = c
            new = x - lr * grad(x, *args)
            return new, it + 1, jnp.sqrt(jnp.sum((new - x) ** 2)) < precision

        x, it, _ = lax.while_loop(
            lambda c: (c[1] < max_iter) & ~c[2], body, (x0, jnp.int32(0), jnp.bool_(False))
        )
        return x, it

    return jax.jit(jax.vmap(one, in_axes=(0, 0) + (None,) * n_args))


@functools.cache
def _lax_map(key: tuple, cost: Callable, n_args: int) -> Callable:
    """The simplest fast JAX design: `lax.map` over chunks of a vmapped `while_loop`, so each
    chunk stops with its own slowest member (the reference loop per member)."""
    one = _reference(key, cost, n_args).__wrapped__  # the vmapped loop, not jitted

    def run(x0: jax.Array, lr: jax.Array, *args: Any) -> tuple[jax.Array, jax.Array]:
        n = lr.shape[0]
        size = min(MAP_CHUNK, n)
        chunks = -(-n // size)
        pad = chunks * size - n
        xs = jnp.concatenate([x0, jnp.repeat(x0[:1], pad, axis=0)])
        lrs = jnp.concatenate([lr, jnp.repeat(lr[:1], pad)])
        xs = xs.reshape(chunks, size, *x0.shape[1:])
        x, it = lax.map(lambda c: one(c[0], c[1], *args), (xs, lrs.reshape(chunks, size)))
        return x.reshape(-1, *x0.shape[1:])[:n], it.reshape(-1)[:n]

    return jax.jit(run)


@functools.cache
def _optax(key: tuple, cost: Callable, n_args: int) -> Callable:
    optax = _import("optax")
    _, precision, max_iter, _ = key
    grad = jax.grad(cost)

    def one(x0: jax.Array, lr: jax.Array, *args: Any) -> tuple[jax.Array, jax.Array]:
        opt = optax.sgd(lr)

        def body(c: tuple) -> tuple:
            x, state, it, _ = c
            updates, state = opt.update(grad(x, *args), state)
            new = optax.apply_updates(x, updates)
            return new, state, it + 1, jnp.sqrt(jnp.sum((new - x) ** 2)) < precision

        start = (x0, opt.init(x0), jnp.int32(0), jnp.bool_(False))
        x, _, it, _ = lax.while_loop(lambda c: (c[2] < max_iter) & ~c[3], body, start)
        return x, it

    return jax.jit(jax.vmap(one, in_axes=(0, 0) + (None,) * n_args))


@functools.cache
def _jaxopt(key: tuple, cost: Callable, n_args: int) -> Callable:
    jaxopt = _import("jaxopt")
    _, precision, max_iter, _ = key

    def one(x0: jax.Array, lr: jax.Array, *args: Any) -> tuple[jax.Array, jax.Array]:
        solver = jaxopt.GradientDescent(
            fun=cost,
            stepsize=lambda _: lr,
            maxiter=max_iter,
            tol=precision / lr,
            acceleration=False,
            implicit_diff=False,
        )
        x, state = solver.run(x0, *args)
        return x, state.iter_num

    return jax.jit(jax.vmap(one, in_axes=(0, 0) + (None,) * n_args))


@functools.cache
def _optimistix(key: tuple, cost: Callable, n_args: int) -> Callable:
    optx = _import("optimistix")
    _, precision, max_iter, _ = key

    def one(x0: jax.Array, lr: jax.Array, *args: Any) -> tuple[jax.Array, jax.Array]:
        solver = optx.GradientDescent(
            learning_rate=lr, rtol=0.0, atol=precision, norm=optx.two_norm
        )
        sol = optx.minimise(
            lambda x, a: cost(x, *a), solver, x0, args=args, max_steps=max_iter, throw=False
        )
        return sol.value, sol.stats["num_steps"]

    return jax.jit(jax.vmap(one, in_axes=(0, 0) + (None,) * n_args))


_JAX = {
    "reference": _reference,
    "lax_map": _lax_map,
    "optax": _optax,
    "jaxopt": _jaxopt,
    "optimistix": _optimistix,
}


# ---------------------------------------------------------------------- NumPy and Python


def numpy_runner(p: Problem) -> Runner:
    """The whole batch in NumPy; each iteration updates only the members still active."""
    x0, rates = p.members()

    @np.errstate(over="ignore", invalid="ignore")  # diverging members run on, as in the loops
    def run() -> tuple[np.ndarray, np.ndarray]:
        x = x0.copy()
        its = np.zeros(p.size, np.int32)
        active = np.arange(p.size)
        lr = rates.reshape((-1,) + (1,) * (x.ndim - 1))
        for _ in range(p.max_iter):
            xa = x[active]
            new = xa - lr[active] * p.grad_np(xa, *p.args)
            d = (new - xa).reshape(active.size, -1)
            step = np.sqrt(np.sum(d * d, axis=1))
            x[active] = new
            its[active] += 1
            active = active[~(step < p.precision)]
            if not active.size:
                break
        return x, its

    return Runner(run, lambda out: (out[0], out[1], None))


def python_runner(p: Problem) -> Runner:
    """The tutorials' loop, member by member, in plain Python floats (scalar problems)."""
    if p.guesses.ndim != 1 or p.size > 1_000:
        raise ValueError("the plain-Python loop runs scalar problems of 1,000 members at most")
    x0, rates = p.members()
    x0, rates = x0.astype(float).tolist(), rates.astype(float).tolist()
    grad = {"W1": lambda x: 6 * x - 2, "W3": lambda x: 2 * x}[p.name]
    precision, max_iter = p.precision, p.max_iter

    def run() -> tuple[np.ndarray, np.ndarray]:
        xs, its = [], []
        for x, lr in zip(x0, rates, strict=True):
            it = 0
            while it < max_iter:
                new = x - lr * grad(x)
                it += 1
                step = abs(new - x)
                x = new
                if step < precision:
                    break
            xs.append(x)
            its.append(it)
        return np.array(xs), np.array(its)

    return Runner(run, lambda out: (out[0], out[1], None))


# --------------------------------------------------------------------------------- numba


@functools.cache
def _numba_kernels() -> dict[str, Callable]:
    numba = _import("numba")
    jit = numba.njit(parallel=True, fastmath=True, cache=False)

    @jit
    def scalar(x0, lr, precision, max_iter, a, b, out_x, out_it):  # grad: a * x + b
        for i in numba.prange(x0.shape[0]):
            x, it = x0[i], 0
            while it < max_iter:
                new = x - lr[i] * (a * x + b)
                it += 1
                step = abs(new - x)
                x = new
                if step < precision:
                    break
            out_x[i], out_it[i] = x, it

    @jit
    def rosenbrock(x0, lr, precision, max_iter, out_x, out_it):
        for i in numba.prange(x0.shape[0]):
            u, v, it = x0[i, 0], x0[i, 1], 0
            while it < max_iter:
                gu = -2 * (1 - u) - 400 * u * (v - u * u)
                gv = 200 * (v - u * u)
                nu, nv = u - lr[i] * gu, v - lr[i] * gv
                it += 1
                step = np.sqrt((nu - u) ** 2 + (nv - v) ** 2)
                u, v = nu, nv
                if step < precision:
                    break
            out_x[i, 0], out_x[i, 1], out_it[i] = u, v, it

    @jit
    def line(x0, lr, precision, max_iter, X, y, out_x, out_it):
        n = X.shape[0]
        for i in numba.prange(x0.shape[0]):
            b0, b1, it = x0[i, 0], x0[i, 1], 0
            while it < max_iter:
                g0 = 0.0
                g1 = 0.0
                for k in range(n):
                    r = y[k] - b0 - b1 * X[k]
                    g0 += r
                    g1 += r * X[k]
                n0, n1 = b0 + lr[i] * 2 * g0 / n, b1 + lr[i] * 2 * g1 / n
                it += 1
                step = np.sqrt((n0 - b0) ** 2 + (n1 - b1) ** 2)
                b0, b1 = n0, n1
                if step < precision:
                    break
            out_x[i, 0], out_x[i, 1], out_it[i] = b0, b1, it

    return {"scalar": scalar, "rosenbrock": rosenbrock, "line": line}


def numba_runner(p: Problem, lanes: bool = False) -> Runner:
    """A compiled per-member loop over all cores (`fastmath`), or with `lanes` the lock-step
    groups vectorised across SIMD lanes (W1-W3): the CPU limit references."""
    kernels = _numba_lanes_kernels() if lanes else _numba_kernels()
    x0, rates = p.members()
    dt = np.dtype(p.dtype).type
    prec, out_x, out_it = dt(p.precision), np.empty_like(x0), np.empty(p.size, np.int32)
    if p.name in ("W1", "W3"):
        a, b = {"W1": (6, -2), "W3": (2, 0)}[p.name]

        def call() -> None:
            kernels["scalar"](x0, rates, prec, p.max_iter, dt(a), dt(b), out_x, out_it)

    elif p.name == "W2":

        def call() -> None:
            kernels["rosenbrock"](x0, rates, prec, p.max_iter, out_x, out_it)

    elif not lanes:
        X, y = p.args

        def call() -> None:
            kernels["line"](x0, rates, prec, p.max_iter, X, y, out_x, out_it)

    else:
        raise ValueError("numba_lanes runs W1-W3")

    def run() -> tuple[np.ndarray, np.ndarray]:
        call()
        return out_x.copy(), out_it.copy()

    return Runner(run, lambda out: (out[0], out[1], None))


@functools.cache
def _numba_lanes_kernels() -> dict[str, Callable]:
    """Members in lock-step groups of `NUMBA_LANES`, each group's inner loop over its members
    written so that it vectorises across SIMD lanes (selects, no branches), groups over the
    cores; no fastmath, so the arithmetic is the tutorials' own."""
    numba = _import("numba")
    jit = numba.njit(parallel=True, fastmath=False, cache=False)
    lanes = NUMBA_LANES

    @jit
    def scalar(x0, lr, precision, max_iter, a, b, out_x, out_it):  # grad: a * x + b
        n = x0.shape[0]
        for g in numba.prange((n + lanes - 1) // lanes):
            lo, hi = g * lanes, min(g * lanes + lanes, n)
            x, r = x0[lo:hi].copy(), lr[lo:hi]
            it = np.zeros(hi - lo, np.int32)
            go = np.ones(hi - lo, np.bool_)
            k, running = 0, hi - lo
            while running > 0 and k < max_iter:
                k += 1
                running = 0
                for i in range(hi - lo):
                    new = x[i] - r[i] * (a * x[i] + b)
                    small = abs(new - x[i]) < precision
                    x[i] = new if go[i] else x[i]
                    it[i] = k if go[i] else it[i]
                    go[i] = go[i] and not small
                    running += go[i]
            out_x[lo:hi], out_it[lo:hi] = x, it

    @jit
    def rosenbrock(x0, lr, precision, max_iter, out_x, out_it):
        n = x0.shape[0]
        for g in numba.prange((n + lanes - 1) // lanes):
            lo, hi = g * lanes, min(g * lanes + lanes, n)
            u, v, r = x0[lo:hi, 0].copy(), x0[lo:hi, 1].copy(), lr[lo:hi]
            it = np.zeros(hi - lo, np.int32)
            go = np.ones(hi - lo, np.bool_)
            k, running = 0, hi - lo
            while running > 0 and k < max_iter:
                k += 1
                running = 0
                for i in range(hi - lo):
                    gu = -2 * (1 - u[i]) - 400 * u[i] * (v[i] - u[i] * u[i])
                    gv = 200 * (v[i] - u[i] * u[i])
                    nu, nv = u[i] - r[i] * gu, v[i] - r[i] * gv
                    small = np.sqrt((nu - u[i]) ** 2 + (nv - v[i]) ** 2) < precision
                    u[i] = nu if go[i] else u[i]
                    v[i] = nv if go[i] else v[i]
                    it[i] = k if go[i] else it[i]
                    go[i] = go[i] and not small
                    running += go[i]
            out_x[lo:hi, 0], out_x[lo:hi, 1], out_it[lo:hi] = u, v, it

    return {"scalar": scalar, "rosenbrock": rosenbrock}


def prepare(name: str, p: Problem) -> Runner:
    """The runner of implementation `name` for problem `p` (not yet compiled or run)."""
    if name in ("gdkernel", "gdkernel_1thread"):
        return gdkernel_runner(p, one_thread=name == "gdkernel_1thread")
    if name == "numba_lanes":
        return numba_runner(p, lanes=True)
    if name == "gradient_descent":
        return lone_runner(p)
    if name == "numpy":
        return numpy_runner(p)
    if name == "python":
        return python_runner(p)
    if name == "numba":
        return numba_runner(p)
    return _jax_runner(_JAX[name](_key(p), p.cost, len(p.args)), p)
