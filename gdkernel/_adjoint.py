r"""Derivatives through a solve: at the returned point (implicit) or through the steps run.

A solve is a `lax.while_loop`, which JAX differentiates in forward mode only. Both adjoints
here give `x`, `cost` and `grad` derivatives that work in forward and reverse mode, under
`jit` and `vmap`:

- `"implicit"`: at a converged point $\nabla_x f(x^*, \theta) = 0$, so by the implicit
  function theorem $\partial x^*/\partial\theta = -H^{-1}\,\partial^2 f/\partial x\,\partial\theta$
  with $H = \nabla_x^2 f(x^*, \theta)$, for $\theta$ the arrays in `args`. The tangent rule
  (`jax.custom_jvp`) solves one linear system per member: directly (the Hessian built from
  Hessian-vector products and inverted) up to `DIRECT_MAX` parameters, else by conjugate
  gradients on Hessian-vector products. When every member of a batch has the same Hessian
  (a cost quadratic in `x` on shared data: least squares, ridge) of up to `SHARED_MAX`
  parameters, it is built and inverted once and applied to every member as a matrix
  product. The inverses are computed in XLA's own operations, no LAPACK call. Reverse mode
  transposes those linear solves, so memory does not grow with the iterations. The starting
  point, learning rate, precision and momentum do not move $x^*$: their derivatives are
  zero. A member that did not converge has no such point: all its derivatives are zero, and
  its `status` says why.
- `"unrolled"`: the exact derivative of the iterations each member ran, with its iteration
  count held fixed, with respect to everything (starting point, learning rate, momentum,
  `args`). The steps are replayed in a `lax.scan` of `max_iter` steps in segments of
  $\lceil\sqrt{\text{max\_iter}}\rceil$, each segment checkpointed (`jax.checkpoint`) and
  skipped past the member's own count: reverse mode stores about
  $3\sqrt{\text{max\_iter}}$ iterates per member (the segments' starts, one segment's
  steps, and their work space).

The values returned are the loop's own, bit for bit; only their derivatives come from here.
`step_size`, `iterations` and `status` carry no derivative; a run with `history` cannot be
differentiated, nor a run on mini-batches under `"implicit"` (errors, not silent zeros).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax
from jax.flatten_util import ravel_pytree

from ._kernel import Options, Params, ValueAndGrad, data, init_velocity, member_axes, update
from ._result import Result, Status
from ._types import Numbers, PyTree

Run = Callable[[PyTree, Params, tuple], Result]

ADJOINTS = ("implicit", "unrolled")
# Parameters up to which the implicit adjoint builds a member's Hessian and inverts it;
# past it, conjugate gradients on Hessian-vector products. Building the Hessian takes one
# Hessian-vector product per parameter (each about a gradient's cost), conjugate gradients
# about sqrt(condition number) a digit, fewer than the gradient-descent steps that found the
# point: on a logistic regression over 200 points, 1,000 members, the direct solve added
# 36, 41, 124 and 661 ms to the gradient at 16, 32, 64 and 128 parameters, conjugate
# gradients 7, 17, 45 and 103 ms, and the two were level at 2 to 8. (The inverse is
# `_inverse`, in XLA operations: 1,000 members' own 4 x 4 Hessians in 0.22 ms, 8 x 8 in
# 1.8 ms, against 0.36 and 1.1 ms for LAPACK's solves, which under a `jax.vmap` of a lone run
# over its starting points would be one triangular solve with many right-hand sides.)
DIRECT_MAX = 8
# Parameters up to which a Hessian that every member of a batch shares is built and inverted
# once (`_shared_inverse`).
SHARED_MAX = 256
# Replayed steps written out per trip of the unrolled adjoint's scan on an accelerator, where
# each trip of a loop costs a kernel launch and a read of its predicate on the host. A CPU
# takes one step a trip.
REPLAY_UNROLL = 8


def replay_unroll() -> int:
    """Steps per trip of the replay's scan on the default backend (`REPLAY_UNROLL`)."""
    return 1 if jax.default_backend() == "cpu" else REPLAY_UNROLL


# `(x0, params) -> (starting points, params)` of every member of a batch given as `x0` and
# `params` (a grid's guesses and rows), differentiably
Members = Callable[[PyTree, Params], tuple[PyTree, Params]]


def differentiable(
    run: Run,
    value_and_grad: ValueAndGrad,
    opts: Options,
    batched: bool,
    members: Members | None = None,
) -> Run:
    """`run` (a solve of one member, or of a batch when `batched`) with the derivatives of
    `opts.adjoint`. `members`: how the batch's members are built from `run`'s `x0` and
    `params` (None: they are those, one member per row)."""
    if opts.adjoint == "implicit":
        return _implicit(run, value_and_grad, opts, batched)
    return _unrolled(run, value_and_grad, opts, batched, members)


def _zero_tangent(leaf: Any) -> Any:
    if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
        return jnp.zeros_like(leaf)
    return np.zeros(jnp.shape(leaf), dtype=jax.dtypes.float0)


def _refusal(opts: Options) -> str | None:
    """Why a run of `opts` has no implicit derivative, or None."""
    if opts.history_every:
        return (
            "`history`: a run with `history=True` has no derivative of its history; "
            "differentiate a run without it (the same run, the same x and cost)"
        )
    if opts.batch_size:
        return (
            "`adjoint`: a run on mini-batches (`batch_size`) ends on noisy steps, not at a "
            "minimum of the cost, so it has no implicit derivative; use adjoint='unrolled' "
            "(the derivative of the steps it ran)"
        )
    return None


def _implicit(run: Run, value_and_grad: ValueAndGrad, opts: Options, batched: bool) -> Run:
    hessian = _hessian(value_and_grad)
    member = _implicit_tangent(value_and_grad, hessian)

    def members(x: PyTree, status: Numbers, args: tuple, dargs: tuple) -> tuple:
        if not batched:
            return member(x, status, args, dargs, None)
        inverse = _shared_inverse(hessian, x, args)
        return jax.vmap(member, in_axes=(0, 0, None, None, None))(x, status, args, dargs, inverse)

    solved = jax.custom_jvp(run)  # (`run` itself: no frame of ours between the two)

    @solved.defjvp
    def tangent(primals: tuple, tangents: tuple) -> tuple[Result, Result]:
        refusal = _refusal(opts)
        if refusal is not None:  # before the run: no work lost
            raise ValueError(refusal)
        x0, params, args = primals
        result = run(x0, params, args)
        dx, dcost, dgrad = members(result.x, result.status, args, tangents[2])
        zero = jax.tree.map(_zero_tangent, result)
        return result, zero._replace(x=dx, cost=dcost, grad=dgrad)

    return solved


def _hessian(value_and_grad: ValueAndGrad) -> Callable[[PyTree, tuple], Array]:
    """`(x, args) -> the Hessian of the cost in x` (flattened), from Hessian-vector products."""

    def hessian(x: PyTree, args: tuple) -> Array:
        flat, unravel = ravel_pytree(x)
        return jax.jacfwd(lambda y: ravel_pytree(value_and_grad(unravel(y), args)[1])[0])(flat)

    return hessian


def _shared_inverse(hessian: Callable, x: PyTree, args: tuple) -> Array | None:
    """The inverse of the Hessian every member of the batch `x` has, built once; None when
    the members' Hessians differ (it depends on the point) or are too big to build.

    A least-squares or ridge cost has one Hessian for every starting point. Solving every
    member's system through LAPACK would then be one triangular solve with a right-hand side
    per member, which OpenBLAS spreads over its worker threads, and on a CPU they keep
    spinning for about 0.1 s after the call returns, slowing whatever the caller runs next
    (a training loop's next step); the inverse is computed in XLA's own operations instead,
    and applied to the members as a matrix product."""
    size = sum(math.prod(jnp.shape(leaf)[1:]) for leaf in jax.tree.leaves(x))
    if size > SHARED_MAX:
        return None
    try:  # vmap refuses an unmapped output that depends on the member
        shared = jax.vmap(hessian, in_axes=(0, None), out_axes=None)(x, args)
    except ValueError:
        return None
    return _inverse(shared)


def _inverse(a: Array) -> Array:
    """`a^-1` by Gauss-Jordan elimination with partial pivoting, in XLA operations (no LAPACK
    call): NaN where `a` is singular."""
    n = a.shape[0]
    rows = jnp.arange(n)

    def eliminate(k: Array, carry: tuple[Array, Array]) -> tuple[Array, Array]:
        left, right = carry
        p = jnp.argmax(jnp.where(rows >= k, jnp.abs(left[:, k]), -1))  # the pivot's row
        order = jnp.where(rows == k, p, jnp.where(rows == p, k, rows))  # rows k and p swapped
        left, right = left[order], right[order]
        left_k, right_k = left[k] / left[k, k], right[k] / left[k, k]
        factor = jnp.where(rows == k, 0, left[:, k])[:, None]
        left = (left - factor * left_k).at[k].set(left_k)
        right = (right - factor * right_k).at[k].set(right_k)
        return left, right

    return lax.fori_loop(0, n, eliminate, (a, jnp.eye(n, dtype=a.dtype)))[1]


def _implicit_tangent(value_and_grad: ValueAndGrad, hessian: Callable) -> Callable:
    """`(x*, status, args, dargs, inverse) -> (dx, dcost, dgrad)` of one member; `inverse`:
    the inverse Hessian when it is known (shared by a batch's members), else None."""

    def tangent(x: PyTree, status: Array, args: tuple, dargs: tuple, inverse: Any) -> tuple:
        flat, unravel = ravel_pytree(x)

        def grad_flat(y: Array, a: tuple) -> Array:
            return ravel_pytree(value_and_grad(unravel(y), a)[1])[0]

        # the right-hand side: how the gradient at x* moves with args
        rhs = jax.jvp(lambda a: grad_flat(flat, a), (args,), (dargs,))[1]
        ok = status == Status.CONVERGED
        if inverse is None and flat.size <= DIRECT_MAX:
            inverse = _inverse(hessian(x, args))
        if inverse is not None:
            # NaN where the Hessian is singular. Reverse mode transposes the product: a member
            # whose result is not read (or did not converge) passes back `inverse.T @ 0`,
            # NaN with a NaN inverse, and a sweep's shared `args` sum every member's. So the
            # product takes zeros there, and the NaN is put back where its tangent is read.
            solvable = jnp.all(jnp.isfinite(inverse))
            dx = -(jnp.where(ok & solvable, inverse, jnp.zeros_like(inverse)) @ rhs)
            dx = jnp.where(solvable, dx, jnp.full_like(dx, jnp.nan))
        else:

            def hvp(v: Array) -> Array:
                return jax.jvp(lambda y: grad_flat(y, args), (flat,), (v,))[1]

            tol = 10 * float(jnp.finfo(flat.dtype).eps)

            def cg(matvec: Callable, r: Array) -> Array:
                return jax.scipy.sparse.linalg.cg(matvec, r, tol=tol, maxiter=10 * r.size)[0]

            # CG inside our own symmetric solve: `cg` called on the tangent directly puts its
            # starting point through one `device_put` with the tangent, which then counts as
            # linear in it, and reverse mode cannot transpose that solve
            dx = -lax.custom_linear_solve(hvp, rhs, solve=cg, symmetric=True)
        dx_tree = unravel(jnp.where(ok, dx, jnp.zeros_like(dx)))
        _, (dcost, dgrad) = jax.jvp(value_and_grad, (x, args), (dx_tree, dargs))
        dcost = jnp.where(ok, dcost, jnp.zeros_like(dcost))
        dgrad = jax.tree.map(lambda d: jnp.where(ok, d, jnp.zeros_like(d)), dgrad)
        return dx_tree, dcost, dgrad

    return tangent


def _keep_values(values: PyTree, derivatives: PyTree) -> PyTree:
    """The primal `values` with the derivatives of `derivatives` (equal values)."""

    def one(value: Array, other: Array) -> Array:
        other = jnp.where(jnp.isfinite(other), other, jnp.zeros_like(other))
        return lax.stop_gradient(value) + (other - lax.stop_gradient(other))

    return jax.tree.map(one, values, derivatives)


def _unrolled(
    run: Run, value_and_grad: ValueAndGrad, opts: Options, batched: bool, members: Members | None
) -> Run:
    max_iter = opts.replay_steps
    segment = max(1, math.isqrt(max(max_iter - 1, 0)) + 1)  # ceil(sqrt(max_iter))
    segments = max(1, -(-max_iter // segment))

    def member_step(x: PyTree, velocity: PyTree, k: Array, params: Params, args: tuple) -> tuple:
        grad = value_and_grad(x, data(args, params, opts, k))[1]
        return update(x, grad, velocity, params, opts)

    def replay(x0: PyTree, params: Params, args: tuple, n: Numbers) -> PyTree:
        """The iterate after the first `n` steps from `x0` (per member), differentiably."""
        start = functools.partial(init_velocity, opts=opts)
        one_step: Callable[..., tuple] = member_step
        if batched:
            start = jax.vmap(start, in_axes=(0, member_axes(params)))
            one_step = jax.vmap(member_step, in_axes=(0, 0, None, member_axes(params), None))
        velocity0 = start(x0, params)

        def scan_step(carry: tuple, k: Array) -> tuple[tuple, None]:
            new = one_step(*carry, k, params, args)
            go = k < n  # per member

            def keep(a: Array, b: Array) -> Array:
                return jnp.where(go.reshape(go.shape + (1,) * (a.ndim - go.ndim)), a, b)

            return jax.tree.map(keep, new, carry), None

        @jax.checkpoint
        def run_segment(carry: tuple, start: Array) -> tuple:
            steps = start + jnp.arange(segment)
            return lax.scan(scan_step, carry, steps, unroll=min(replay_unroll(), segment))[0]

        last = jnp.max(n)  # segments past every member's count are skipped

        def outer(carry: tuple, start: Array) -> tuple[tuple, None]:
            return lax.cond(start < last, run_segment, lambda c, _: c, carry, start), None

        starts = segment * jnp.arange(segments)
        return lax.scan(outer, (x0, velocity0), starts)[0][0]

    def solved(x0: PyTree, params: Params, args: tuple) -> Result:
        result = run(*lax.stop_gradient((x0, params, args)))
        if members is not None:
            x0, params = members(x0, params)
        x = replay(x0, params, args, result.iterations)
        evaluate = jax.vmap(value_and_grad, in_axes=(0, None)) if batched else value_and_grad
        cost, grad = evaluate(x, args)
        return result._replace(
            x=_keep_values(result.x, x),
            cost=_keep_values(result.cost, cost),
            grad=_keep_values(result.grad, grad),
        )

    return solved
