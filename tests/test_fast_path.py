"""The batched fast path (`_batch.py`) against the plain per-member loop, member by member.

The reference is the kernel's own one-member `while_loop` (`_kernel.solve`) under `jax.vmap`,
and for a few members a lone `gd.gradient_descent` call. Every field must agree exactly:
`x`, `cost`, `grad`, `step_size`, `iterations` and `status`.
"""

import functools
import inspect
import re
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdkernel as gd
from gdkernel import _batch, _kernel, _lanes, _progress, _scalars
from gdkernel._solve import make_options, make_params

FIELDS = ("x", "cost", "grad", "step_size", "iterations", "status")


def _inputs(x0, rates, *, precision=1e-6, max_iter=300, grad_tol=None, momentum=0.9, **kw):
    x0 = jax.tree.map(jnp.asarray, x0)
    dtype = jnp.result_type(*jax.tree.leaves(x0))
    params = make_params(
        dtype, 1.0, precision, np.inf if grad_tol is None else grad_tol, momentum, max_iter
    )._replace(learning_rate=jnp.asarray(rates, dtype))
    opts = make_options(
        kw.get("norm", "l1"),
        kw.get("method", "gd"),
        kw.get("history", False),
        kw.get("history_every"),
        max_iter,
    )
    return x0, params, opts


def _reference(cost_fn, x0, params, opts, args=()):
    vg = _kernel.make_value_and_grad(cost_fn, None)
    one = functools.partial(_kernel.solve, vg, args=args, opts=opts)
    return jax.jit(jax.vmap(lambda x, p: one(x, p), in_axes=(0, _kernel.member_axes(params))))(
        x0, params
    )


def _fast(
    cost_fn, x0, params, opts, args=(), lanes=None, packed=True, stall_test=None, unroll=None
):
    """The fast path, traced afresh (params traced); `stall_test=None` keeps the stall test;
    `lanes` sets how many lanes run the batch; `unroll` whether a look's trips are written
    out (`None`: this backend's choice, `True`: an accelerator's)."""
    vg = _kernel.make_value_and_grad(cost_fn, None)

    def run(x0, params, args):
        with pytest.MonkeyPatch.context() as mp:
            if lanes is not None:
                mp.setattr(_batch, "_lane_width", lambda *a: lanes)
            if unroll is not None:
                mp.setattr(_batch, "unrolled", lambda: unroll)
            return _batch.solve_batch(vg, x0, params, args, opts, packed, stall_test)

    return jax.jit(run, compiler_options=_batch.compiler_options())(x0, params, args)


def _assert_same(got, want, history=False):
    fields = (*FIELDS, "history") if history else FIELDS
    for name in fields:
        for g, w in zip(
            jax.tree.leaves(getattr(got, name)), jax.tree.leaves(getattr(want, name)), strict=True
        ):
            g, w = np.asarray(g), np.asarray(w)
            if name == "cost" and jax.default_backend() != "cpu":
                # on a GPU XLA may order a reduction inside the cost differently in the two
                # programs: the last bit of a summed cost can differ (docs/benchmarks.md)
                np.testing.assert_allclose(g, w, rtol=4 * np.finfo(g.dtype).eps, err_msg=name)
            else:
                np.testing.assert_array_equal(g, w, err_msg=name)


def _square(x):
    return x**2


def _all_statuses_batch():
    """x**2 from several guesses at rates that converge, stall, diverge or run out."""
    guesses = np.array([3.0, -2.5, 0.7, 10.0, -0.001, 4.2])
    rates = np.array([1e-4, 1e-3, 0.01, 0.1, 0.45, 0.5, 0.9, 1.0, 1.5, 3.0])
    return np.tile(guesses, rates.size), np.repeat(rates, guesses.size)


@pytest.mark.parametrize("unroll", [None, True])
def test_every_member_equals_the_plain_loop(dtype, unroll):
    x0, rates = _all_statuses_batch()
    x0, params, opts = _inputs(x0.astype(dtype), rates, precision=1e-5, max_iter=400, grad_tol=1e-3)
    want = _reference(_square, x0, params, opts)
    statuses = set(np.asarray(want.status).tolist())
    assert {gd.Status.CONVERGED, gd.Status.MAX_ITER, gd.Status.DIVERGED} <= statuses
    assert gd.Status.STALLED in statuses
    _assert_same(_fast(_square, x0, params, opts, unroll=unroll), want)


def _log_barrier(x):
    return x**2 - jnp.log(x)  # NaN for x < 0: a step past 0 diverges


def test_scalar_problems_take_the_one_array_loop(dtype):
    batch = np.zeros(8, dtype)
    gd_opts = make_options("l1", "gd", False, None, 10)
    assert _scalars.applies(batch, gd_opts)
    assert not _scalars.applies(np.zeros((8, 2), dtype), gd_opts)  # a vector per member
    assert not _scalars.applies({"a": batch, "b": batch}, gd_opts)  # two leaves
    assert not _scalars.applies(batch, make_options("l1", "momentum", False, None, 10))
    assert _scalars.applies(batch, gd_opts._replace(progress_every=2))  # reports too
    code = np.array([-1, 0, 8 * 17 + 2, 8 * (2**28 - 1) + 3], np.int32)
    x, back = _scalars.unpack(_scalars.pack(jnp.asarray(code, dtype) * 0.5, jnp.asarray(code)))
    np.testing.assert_array_equal(back, code)  # the code survives the packing bit for bit
    np.testing.assert_array_equal(x, code.astype(dtype) * 0.5)


@pytest.mark.parametrize("unroll", [None, True])
def test_one_array_loop_diverging_at_the_first_step_or_later(dtype, unroll):
    # From 0.5: lr 2.5 jumps below 0 at once (DIVERGED after 0 iterations, x stays the guess);
    # lr 0.9 oscillates and leaves the domain later; small rates converge or run out.
    x0 = np.tile(np.array([0.5, 2.0, 0.05], dtype), 6)
    rates = np.repeat([1e-4, 1e-2, 0.3, 0.6, 0.9, 2.5], 3)
    x0, params, opts = _inputs(x0, rates, precision=1e-6, max_iter=300)
    want = _reference(_log_barrier, x0, params, opts)
    status, its = np.asarray(want.status), np.asarray(want.iterations)
    assert (status == gd.Status.DIVERGED).any() and (status == gd.Status.CONVERGED).any()
    assert ((status == gd.Status.DIVERGED) & (its == 0)).any()
    assert ((status == gd.Status.DIVERGED) & (its > 0)).any()
    assert _scalars.applies(x0, opts)
    _assert_same(_fast(_log_barrier, x0, params, opts, unroll=unroll), want)


def test_members_that_diverge_late_get_the_step_before_their_last(dtype, monkeypatch):
    # x**2 at rates above 1 grows by |1 - 2 lr| a step: members cross the divergence ceiling
    # after 0 to ~80 steps. A lane keeps a member's last accepted iterate, so the finish
    # replays each such member to the iterate before it, 32 members at a time here.
    monkeypatch.setattr(_scalars, "REPLAY", 32)
    rates = np.repeat(np.linspace(1.02, 1.6, 25), 8)
    x0 = np.tile(np.array([3.0, -2.0, 0.5, 7.0, -0.01, 1.5, 40.0, 0.0], dtype), 25)
    x0, params, opts = _inputs(x0, rates, precision=1e-6, max_iter=300)
    want = _reference(_square, x0, params, opts)
    status, its = np.asarray(want.status), np.asarray(want.iterations)
    late = (status == gd.Status.DIVERGED) & (its > 0)
    assert late.sum() > 2 * 32 and len(set(its[late].tolist())) > 10  # several replay groups
    assert (status != gd.Status.DIVERGED).any()  # (x = 0 converges at once)
    for lanes in (None, 16):  # every member on its own lane; lanes refilled
        _assert_same(_fast(_square, x0, params, opts, lanes=lanes), want)


def test_replay_runs_from_the_first_diverged_block_to_the_last(dtype, monkeypatch):
    # The finish replays the blocks between the first and the last member that diverged late:
    # here blocks 2 and 5 of 8 (32 members each). Members outside them, before, between and
    # after, must keep their own ends, and those inside must get the step before their last.
    monkeypatch.setattr(_scalars, "REPLAY", 32)
    rates = np.full(8 * 32, 0.1)
    rates[2 * 32 : 3 * 32] = np.linspace(1.02, 1.6, 32)
    rates[5 * 32 + 7 : 5 * 32 + 9] = 1.3
    x0 = np.tile(np.array([3.0, -2.0, 0.5, 7.0], dtype), 64)
    x0, params, opts = _inputs(x0, rates, precision=1e-6, max_iter=300)
    want = _reference(_square, x0, params, opts)
    status, its = np.asarray(want.status), np.asarray(want.iterations)
    late = np.flatnonzero((status == gd.Status.DIVERGED) & (its > 0))
    assert late.min() // 32 == 2 and late.max() // 32 == 5 and (late // 32 != 4).all()
    assert (status[: 2 * 32] == gd.Status.CONVERGED).all()
    _assert_same(_fast(_square, x0, params, opts), want)


def test_lanes_counted_past_sixteen_bits():
    # The running and waiting lanes are counted together in one reduction, as int32: with more
    # than 2**16 lanes, refilled (more members than lanes), every member must still end
    # exactly where the plain loop does.
    lanes = 2**16 + 17
    rng = np.random.default_rng(3)
    x0 = rng.uniform(-10, 10, lanes + 3000).astype(np.float32)
    rates = rng.uniform(0.05, 0.45, x0.size)
    x0, params, opts = _inputs(x0, rates, precision=1e-4, max_iter=100)
    want = _reference(_square, x0, params, opts)
    assert len(set(np.asarray(want.iterations).tolist())) > 5
    _assert_same(_fast(_square, x0, params, opts, lanes=lanes), want)


def test_members_equal_lone_gradient_descent_runs(x64):
    x0, rates = _all_statuses_batch()
    res = gd.sweep(_square, x0[:6], rates[::6], precision=1e-5, max_iter=400, grad_tol=1e-3)
    for i in (0, 3, 5, 8, 9):
        for j in (0, 3, 4):
            lone = gd.gradient_descent(
                _square, x0[j], rates[6 * i], precision=1e-5, max_iter=400, grad_tol=1e-3
            )
            member = res.member(i, j)
            for name in FIELDS:
                np.testing.assert_array_equal(
                    np.asarray(getattr(member, name)), np.asarray(getattr(lone, name)), name
                )


def test_invalid_members_are_flagged_not_run(dtype):
    # `solve_members` is below validation: a bad traced rate or guess becomes INVALID.
    x0 = np.array([1.0, np.nan, 2.0, 3.0, 1.0], dtype=dtype)
    rates = np.array([0.1, 0.1, -0.1, np.inf, 0.1])
    x0, params, opts = _inputs(x0, rates)
    got = _fast(_square, x0, params, opts)
    want = _reference(_square, x0, params, opts)
    _assert_same(got, want)
    np.testing.assert_array_equal(
        np.asarray(got.status),
        [gd.Status.CONVERGED, gd.Status.INVALID, gd.Status.INVALID, gd.Status.INVALID, 0],
    )
    np.testing.assert_array_equal(np.asarray(got.iterations)[1:4], 0)


@pytest.mark.parametrize("unroll", [None, True])
@pytest.mark.parametrize(
    ("method", "norm"),
    [("momentum", "l1"), ("momentum", "l2"), ("nesterov", "l2"), ("nesterov", "max")],
)
def test_momentum_methods_and_norms_on_a_pytree(method, norm, dtype, unroll):
    target = jnp.array([1.0, -2.0, 0.5], dtype=dtype)

    def cost(p):
        return jnp.sum((p["w"] - target) ** 2) + 3.0 * (p["b"] - 1.0) ** 2

    rng = np.random.default_rng(0)
    n = 40
    x0 = {"w": rng.normal(size=(n, 3)).astype(dtype), "b": rng.normal(size=n).astype(dtype)}
    rates = np.geomspace(1e-3, 0.5, n)
    x0, params, opts = _inputs(
        x0, rates, precision=1e-4, max_iter=500, momentum=0.8, method=method, norm=norm
    )
    want = _reference(cost, x0, params, opts)
    assert len(set(np.asarray(want.status).tolist())) > 1  # some converge, some do not
    _assert_same(_fast(cost, x0, params, opts, unroll=unroll), want)


def test_data_in_args_least_squares(x64):
    rng = np.random.default_rng(3)
    X = rng.uniform(0, 2, size=50)
    y = 1.5 + 0.7 * X + rng.normal(0, 0.1, size=50)

    def cost(p, X, y):
        return jnp.mean((y - p["b0"] - p["b1"] * X) ** 2)

    rates = np.geomspace(1e-3, 1.5, 24)
    x0 = {"b0": np.zeros(24), "b1": np.zeros(24)}
    x0, params, opts = _inputs(x0, rates, precision=1e-8, max_iter=3000)
    args = (jnp.asarray(X), jnp.asarray(y))
    want = _reference(cost, x0, params, opts, args)
    _assert_same(_fast(cost, x0, params, opts, args), want)
    best = np.asarray(want.status) == gd.Status.CONVERGED
    coef = np.polyfit(X, y, 1)
    np.testing.assert_allclose(np.asarray(want.x["b1"])[best], coef[0], atol=1e-5)


@pytest.mark.parametrize(
    ("size", "lanes"),
    [
        (1, 16),  # a batch of one on a vector of lanes, 15 of them empty
        (37, 16),  # each lane runs two or three members, one after another
        (64, 16),  # a batch that divides into the lanes
        (50, 96),  # more lanes than members
        (300, 32),  # ten members a lane, refilled as they stop
        (1000, 256),  # blocks of lanes start their turns in different parts of the grid
    ],
)
@pytest.mark.parametrize("unroll", [None, True])
def test_lanes_refilled_as_members_stop(size, lanes, dtype, unroll):
    rng = np.random.default_rng(size)
    # learning-rate-major: the rates span four decades, so members stop at very different times
    x0 = rng.uniform(-5, 5, size).astype(dtype)
    rates = np.sort(10 ** rng.uniform(-3, 0.2, size))
    x0, params, opts = _inputs(x0, rates, precision=1e-5, max_iter=2000)
    want = _reference(_square, x0, params, opts)
    got = _fast(_square, x0, params, opts, lanes=lanes, stall_test=False, unroll=unroll)
    _assert_same(got, want)
    if size == 1:
        return  # a reference batch of one compiles to scalar code that contracts differently
    # and on the general lanes (two leaves per member), with momentum
    pair = {"a": x0, "b": -x0}
    x0_, params_, opts_ = _inputs(pair, rates, precision=1e-5, max_iter=2000, method="momentum")
    cost = lambda p: p["a"] ** 2 + 0.5 * p["b"] ** 2  # noqa: E731
    _assert_same(
        _fast(cost, x0_, params_, opts_, lanes=lanes, unroll=unroll),
        _reference(cost, x0_, params_, opts_),
    )
    if size > 8:
        its = np.asarray(want.iterations)
        assert its.max() > 20 * its.min()  # members finish at very different times


@pytest.mark.parametrize(("members", "width"), [(1000, 256), (4096, 512), (50, 96), (37, 16)])
def test_lanes_run_every_member_once_spread_over_the_grid(members, width):
    order = _lanes.Order.of(members, width)
    turns = [
        np.asarray(order.ids(jnp.full(width, k, jnp.int32)))
        for k in range(-(-members // width) + 1)
    ]
    ran = np.concatenate(turns)
    ran = ran[ran < members]
    np.testing.assert_array_equal(np.sort(ran), np.arange(members))  # each member once
    for j in range(width):  # lane j runs one member of each stratum s (s * width, ...)
        own = [t[j] for t in turns if t[j] < members]
        assert sorted(m // width for m in own) == list(range(len(own)))
        for m in own:  # member j of it; for one block of lanes, in reverse in an odd stratum
            s, count = m // width, min(members - (m // width) * width, width)
            snake = width <= _lanes.BLOCK and s % 2 == 1
            assert m - s * width == (count - 1 - j if snake else j)
    strata = -(-members // width)  # the grid's parts of `width` members
    blocks = width // _lanes.BLOCK
    first = turns[0][turns[0] < members] // width  # the grid stratum each lane starts in
    counts = np.bincount(first, minlength=strata)
    if blocks >= strata:  # the lanes start spread over every stratum, not all in the first one
        assert counts.min() > 0
        assert counts.max() <= 2 * width / strata  # at most twice a stratum's share


def test_one_block_of_lanes_evens_out_members_in_order():
    """Members whose runs shorten along the grid (learning rates in order) on one block of
    lanes: each lane pairs a long run with a short one, so here every lane's total is the
    even share, where the plain order (lane j running members j, j + w, ...) gives the
    first lane the longest of each stratum."""
    width, members = 16, 64
    runs = np.arange(members, 0, -1.0)  # member i runs 64 - i steps
    order = _lanes.Order.of(members, width)
    turns = [np.asarray(order.ids(jnp.full(width, k, jnp.int32))) for k in range(4)]
    totals = np.zeros(width)
    for t in turns:
        totals += np.where(t < members, runs[np.minimum(t, members - 1)], 0)
    plain = max(runs[j::width].sum() for j in range(width))
    assert totals.sum() == runs.sum()
    np.testing.assert_array_equal(totals, runs.sum() / width)  # 130 steps each
    assert plain == 160


def test_history_matches_the_plain_loop(dtype):
    x0, rates = _all_statuses_batch()
    x0, params, opts = _inputs(
        x0.astype(dtype), rates, precision=1e-5, max_iter=60, history=True, history_every=7
    )
    want = _reference(_square, x0, params, opts)
    got = _fast(_square, x0, params, opts)
    _assert_same(got, want, history=True)


def test_unpacked_and_run_time_choice_agree(x64):
    """max_iter too large for the packed code runs the plain loop; a traced one decides late."""
    x0, rates = _all_statuses_batch()
    x0, params, opts = _inputs(x0, rates, precision=1e-5, max_iter=400)
    want = _reference(_square, x0, params, opts)
    _assert_same(_fast(_square, x0, params, opts, packed=False), want)
    _assert_same(_fast(_square, x0, params, opts, packed=None), want)  # max_iter traced
    assert _batch.fits_packed(2**28 - 1) and not _batch.fits_packed(2**28)


def test_sweep_takes_the_fast_path_without_recompiling(x64):
    before = _batch.grid_program()._cache_size()
    a = gd.sweep(_square, np.linspace(-3, 3, 9), np.array([0.01, 0.1, 0.6]), max_iter=500)
    b = gd.sweep(_square, np.linspace(-4, 2, 9), np.array([0.02, 0.3, 0.7]), max_iter=500)
    assert _batch.grid_program()._cache_size() == before + 1  # new values, same program
    assert not np.array_equal(np.asarray(a.x), np.asarray(b.x))


def test_progress_counts_the_whole_batch(x64):
    seen = []
    x0, rates = _all_statuses_batch()
    x0, params, opts = _inputs(x0, rates, precision=1e-5, max_iter=400)
    opts = opts._replace(progress_every=3 * _lanes.CHECK_EVERY)  # every third look at the lanes
    previous, _progress._sink = _progress._sink, lambda *counts: seen.append(counts)
    try:
        got = jax.block_until_ready(_fast(_square, x0, params, opts, lanes=16))
    finally:
        _progress._sink = previous
    _assert_same(got, _reference(_square, x0, params, opts))
    assert len(seen) > 3
    size = x0.shape[0]
    # the sink gets (device, looks, running, converged, diverged, best cost)
    running = [r for _, _, r, _, _, _ in seen]
    assert all(0 <= r <= size for r in running)
    assert running == sorted(running, reverse=True)  # members only ever stop
    trips = [t for _, t, *_ in seen]
    assert all(t % 3 == 0 for t in trips) and trips == sorted(trips)
    final_converged = int(np.sum(np.asarray(got.status) == gd.Status.CONVERGED))
    assert all(c <= final_converged for _, _, _, c, _, _ in seen)


def test_compile_sweep_runs_the_same_members_without_recompiling(x64):
    from gdkernel.functions import rosenbrock as cost

    guesses = np.array([[-1.2, 1.0], [0.5, 0.5], [2.0, -1.0]])
    rates = [1e-4, 1e-3, 5e-3]
    run = gd.compile_sweep(cost, guesses, rates, precision=1e-6, max_iter=800, grad_tol=10.0)
    assert run.compile_seconds > 0
    for shift in (0.0, 0.3):  # new values, the same program
        got = run(guesses + shift, rates)
        want = gd.sweep(cost, guesses + shift, rates, precision=1e-6, max_iter=800, grad_tol=10.0)
        _assert_same(got, want)
    with pytest.raises(ValueError, match="`initial_guesses`"):
        run(guesses[:2], rates)


@pytest.mark.parametrize("unroll", [None, True])
@pytest.mark.parametrize("name", ["rosenbrock", "himmelblau", "rastrigin"])
def test_builtin_costs_bit_for_bit(name, dtype, unroll):
    """XLA contracts multiply-adds into FMAs per fused expression: the fast path must keep
    each step's arithmetic whole so that the bits match the plain loop's, with the looks
    written out (an accelerator's route) or not. (With the 2-D members carried as vectors, a
    CPU running the written-out looks rounded one float64 Rastrigin member's step size
    differently; carried in columns, it matches.)"""
    from gdkernel.functions import BUILTINS

    builtin = BUILTINS[name]
    rng = np.random.default_rng(1)
    x0 = np.asarray(builtin.x0, dtype)
    n = 32
    xs = (x0[None] + rng.normal(size=(n, *x0.shape))).astype(dtype)
    rates = np.geomspace(builtin.learning_rate / 30, builtin.learning_rate * 3, n)
    for method, norm in (("gd", "l2"), ("momentum", "max"), ("nesterov", "l1")):
        xs_, params, opts = _inputs(
            xs, rates, precision=1e-6, max_iter=1500, norm=norm, method=method, momentum=0.5
        )
        _assert_same(
            _fast(builtin.fn, xs_, params, opts, unroll=unroll),
            _reference(builtin.fn, xs_, params, opts),
        )


def _width(cost, x0, args, method="gd"):
    vg = _kernel.make_value_and_grad(cost, None)
    opts = make_options("l2", method, False, None, 100, "implicit")
    return _batch._lane_width(x0.shape[0], *_batch._sizes(vg, x0, opts, args))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the lane rule of a CPU")
def test_lanes_follow_what_a_member_computes():
    """Elementwise data (each member a pass over 10,000 points) keeps few lanes; a matrix
    that multiplies every member takes the whole batch in one product; a scalar problem's
    lanes keep its carry cache-sized."""
    points = jnp.linspace(0.0, 1.0, 10_000)

    def line(w, X):
        return jnp.mean((w[0] + w[1] * X - 1.0) ** 2)

    def quadratic(x, a):
        return 0.5 * x @ (a @ x)

    # a member of `line` computes a few arrays of 10,000 points; one of `quadratic` a few
    # vectors of 100: the work counts every intermediate, inside nested jitted calls too
    vg = _kernel.make_value_and_grad(line, None)
    work, flops = _batch._work(vg, jnp.zeros((4, 2)), (points,))
    assert 3 * 40_000 <= work < 40 * 40_000
    assert 3 * 10_000 <= flops < 40 * 10_000
    nested = _kernel.make_value_and_grad(jax.jit(line), None)
    inner = _batch._work(nested, jnp.zeros((4, 2)), (points,))
    assert inner[0] >= work and inner[1] >= flops
    # a @ x, and x @ a for the gradient: two products of 100 x 100 multiply-adds
    quad = _kernel.make_value_and_grad(quadratic, None)
    assert 2 * 20_000 <= _batch._work(quad, jnp.zeros((4, 100)), (jnp.eye(100),))[1] < 10**5
    assert _width(line, jnp.zeros((1000, 2)), (points,)) == _lanes.VECTOR
    assert _width(quadratic, jnp.zeros((1000, 100)), (jnp.eye(100),)) == 1008  # whole
    assert _width(lambda x: x**2, jnp.zeros(10**6), ()) == _batch.LANE_BYTES // 16


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the look rule of a CPU")
def test_a_costly_trip_looks_at_the_lanes_after_every_trip(dtype, monkeypatch):
    """Members that each multiply by a shared matrix, every one on its own lane: the lanes
    are looked at after every trip (`_lanes.run`'s `look_each_trip`), and every member ends
    exactly where the plain per-member loop ends, its own iteration count and all."""
    rng = np.random.default_rng(11)
    q, _ = np.linalg.qr(rng.normal(size=(100, 100)))
    a = jnp.asarray((q * np.linspace(1.0, 5.0, 100)) @ q.T, dtype)

    def cost(x, a):
        return 0.5 * x @ (a @ x) - jnp.sum(x)

    looks = []
    run = _lanes.run

    def spy(*args, **kwargs):
        bound = inspect.signature(run).bind(*args, **kwargs)
        bound.apply_defaults()
        looks.append(bound.arguments["look_each_trip"])
        return run(*args, **kwargs)

    monkeypatch.setattr(_lanes, "run", spy)
    # the rule: a member's evaluation computes 1 KiB or more (7.2 KB here in float64, 3.6 KB
    # in float32), and the lanes' together 1 MiB; the second held at 512 KiB here, so that a
    # count of the work that changes a little with JAX's jaxprs does not move this batch
    # across it. A cheap scalar cost (W1: 44 bytes a member) never looks every trip.
    assert _batch._costly_trip(1008, 7232) and not _batch._costly_trip(1008, 1000)
    assert not _batch._costly_trip(32768, 44) and not _batch._costly_trip(16, 7232)
    monkeypatch.setattr(_batch, "LOOK_WORK_BYTES", 2**19)
    x0 = rng.normal(size=(320, 100)).astype(dtype)
    x0, params, opts = _inputs(x0, np.linspace(0.05, 0.3, 320), precision=1e-4, max_iter=500)
    got = _fast(cost, x0, params, opts, (a,))
    want = _reference(cost, x0, params, opts, (a,))
    _assert_same(got, want)
    assert looks == [True]
    iterations = np.asarray(want.iterations)
    assert iterations.min() < iterations.max() < 500  # each member stops on its own trip
    assert (np.asarray(want.status) == gd.Status.CONVERGED).all()
    # the loop's one member: looked at every `CHECK_EVERY` trips, as before
    _fast(cost, x0[:1], params._replace(learning_rate=params.learning_rate[:1]), opts, (a,))
    assert looks == [True, False]


def _loop_bodies(hlo: str) -> list[str]:
    """The computations of a compiled module's `while` loop bodies."""
    bodies = []
    for name in re.findall(r"while\(.*?body=(%[\w.\-]+)", hlo):
        start = hlo.index("\n" + name + " ")
        bodies.append(hlo[start : hlo.index("\n}\n", start)])
    return bodies


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA's CPU buffers")
@pytest.mark.parametrize("method", ["gd", "momentum"])
def test_a_trip_writes_the_accepted_iterates_in_place(method, x64):
    """A trip of vector members (not carried in columns) copies none of the lanes' iterates:
    it writes the accepted ones over them. (Not under Nesterov, whose fused step would round
    differently from the plain loop's: its iterates are still copied first.)"""
    rng = np.random.default_rng(11)
    a = jnp.asarray(np.diag(np.linspace(1.0, 5.0, 100)))

    def cost(x, a):
        return 0.5 * x @ (a @ x) - jnp.sum(x)

    x0, params, opts = _inputs(rng.normal(size=(320, 100)), np.full(320, 0.1), method=method)
    vg = _kernel.make_value_and_grad(cost, None)
    run = jax.jit(
        lambda x0, p, a: _batch.solve_batch(vg, x0, p, (a,), opts, True, None),
        compiler_options=_batch.compiler_options(),
    )
    bodies = _loop_bodies(run.lower(x0, params, a).compile().as_text())
    iterates = re.compile(r"= f64\[320,100\]\{1,0\} (\w+)\(")
    ops = [op for body in bodies for op in iterates.findall(body)]
    assert "fusion" in ops  # the loop bodies hold the lanes' iterates, as this reads them
    assert "copy" not in ops


def test_sizes_for_the_report_interval_are_the_programs_and_traced_once():
    """The host's `_problem_sizes` (progress reports' interval) gives what the compiled
    program computes from the traced cost, tracing a hashable cost once per problem; a cost
    that cannot be hashed is traced each time, with the same answer."""
    traced = []

    def quadratic(x, a):
        traced.append(1)
        return 0.5 * x @ (a @ x)

    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self, x, a):
            return quadratic(x, a)

    opts = make_options("l2", "nesterov", False, None, 100, "implicit")
    x0, args = np.zeros((1000, 30), np.float32), (np.eye(30, dtype=np.float32),)
    vg = _kernel.make_value_and_grad(quadratic, None)
    want = _batch._sizes(vg, jnp.asarray(x0), opts, args)
    traced.clear()
    for _ in range(3):
        assert _batch._problem_sizes(quadratic, None, x0, opts, args) == want
    assert len(traced) == 1
    other = (np.eye(31, dtype=np.float32),)  # another problem: traced again
    x1 = np.zeros((1000, 31), np.float32)
    assert _batch._problem_sizes(quadratic, None, x1, opts, other) != want
    assert len(traced) == 2
    for _ in range(2):
        assert _batch._problem_sizes(Unhashable(), None, x0, opts, args) == want
    assert len(traced) == 4


@pytest.mark.parametrize("guesses", [64, 2 * _batch.LANE_BYTES // 8])
def test_route_from_sweep_to_the_loop_body(guesses):
    """The route: sweep > solve_grid > _grid (the compiled program) > solve_batch >
    _lanes.run > its loop body, with no frame of gdkernel's between them; with more members
    than lanes, the looks run between two refills, inside the refills' loop (`stretch`)."""
    stacks = []

    def cost(x):
        stacks.append([f.name for f in traceback.extract_stack() if "/gdkernel/" in f.filename])
        return x**2

    gd.sweep(cost, np.linspace(-1, 1, guesses), [0.1, 0.2], threads=1, max_iter=3)
    routes = [names[: names.index("body") + 1] for names in stacks if "body" in names]
    route = ["sweep", "solve_grid", "_grid", "solve_batch", "run", "body"]
    if guesses > 64:
        route.insert(-1, "stretch")
    assert routes and all(r == route for r in routes)


def test_small_vectors_are_carried_in_columns():
    """A vector of at most `MAX_COLUMNS` numbers per member is carried as an array per
    coordinate under an elementwise rule, and not where a rule or a leaf does not allow
    it."""
    optax = pytest.importorskip("optax")
    from gdkernel import _columns

    def opts(method="gd", static=()):
        return make_options("l1", method, False, None, 10, static_hyperparams=static)

    pair, scalar, cheap = np.zeros((4, 2)), np.zeros(4), 300
    assert _columns.applies(pair, opts(), cheap)
    assert _columns.applies({"w": np.zeros((4, 8)), "b": scalar}, opts(), cheap)
    assert not _columns.applies(pair, opts(), _columns.MAX_WORK_BYTES + 1)  # a costly cost
    assert not _columns.applies(scalar, opts(), cheap)  # nothing to split
    assert not _columns.applies(np.zeros((4, 9)), opts(), cheap)  # too long
    assert not _columns.applies({"w": pair, "m": np.zeros((4, 2, 2))}, opts(), cheap)
    assert _columns.applies(pair, opts("momentum"), cheap)
    assert _columns.applies(pair, opts(optax.adam), cheap)
    assert not _columns.applies(pair, opts("nesterov"), cheap)
    assert not _columns.applies(pair, opts(optax.lamb), cheap)  # a norm over each leaf
    assert not _columns.applies(pair, opts(optax.adam, (("nesterov", True),)), cheap)
    tree = {"w": jnp.arange(12.0).reshape(4, 3), "b": jnp.arange(4.0)}
    split = _columns.split(tree)
    assert len(jax.tree.leaves(split)) == 4  # b, and w's three coordinates
    np.testing.assert_array_equal(split["w"][2], [2.0, 5.0, 8.0, 11.0])
    for got, want in zip(jax.tree.leaves(_columns.join(split)), jax.tree.leaves(tree), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("size", [2, 3, 5, 8])
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_vectors_in_columns_equal_the_plain_loop(size, norm, dtype):
    """Members of a coupled quartic bowl in `size` dimensions, carried in columns, end where
    the plain loop ends, whatever their status: bit for bit in 2-D; from 3-D on the cost's
    own sums over the vector are ordered by XLA for each program (as on a vector carry),
    so there the iterations and statuses are the plain loop's and `x` agrees to rounding."""
    rng = np.random.default_rng(size)
    c = jnp.asarray(np.linspace(0.2, 3.0, size), dtype)

    def cost(x, c):
        return jnp.sum(c * x**2 + 0.1 * x**4) + 0.3 * jnp.sum(x[:-1] * x[1:])

    n = 48
    x0 = rng.normal(size=(n, size)).astype(dtype)
    rates = np.geomspace(1e-3, 2.0, n)
    x0, params, opts = _inputs(x0, rates, precision=1e-5, max_iter=600, grad_tol=0.5, norm=norm)
    want = _reference(cost, x0, params, opts, (c,))
    statuses = set(np.asarray(want.status).tolist())
    assert {gd.Status.CONVERGED, gd.Status.MAX_ITER, gd.Status.DIVERGED} <= statuses
    got = _fast(cost, x0, params, opts, (c,))
    if size == 2:
        _assert_same(got, want)
        return
    np.testing.assert_array_equal(got.status, want.status)
    np.testing.assert_array_equal(got.iterations, want.iterations)
    kept = np.asarray(want.status) != gd.Status.DIVERGED
    np.testing.assert_allclose(
        np.asarray(got.x)[kept],
        np.asarray(want.x)[kept],
        rtol=1e-4 if dtype == np.float32 else 1e-12,
    )


def test_adam_in_columns_bit_for_bit(dtype):
    """Adam on Rosenbrock's function, carried in columns by both loops: the plain loop's
    bits."""
    optax = pytest.importorskip("optax")
    from gdkernel.functions import rosenbrock

    rng = np.random.default_rng(4)
    x0 = rng.uniform(-2, 2, size=(40, 2)).astype(dtype)
    rates = np.geomspace(1e-3, 0.3, 40)
    x0, params, opts = _inputs(x0, rates, precision=1e-5, max_iter=800)
    opts = opts._replace(method=optax.adam)
    want = _reference(rosenbrock, x0, params, opts)
    assert len(set(np.asarray(want.status).tolist())) > 1
    _assert_same(_fast(rosenbrock, x0, params, opts), want)


def test_a_cost_read_number_by_number_is_differentiated_by_coordinates(x64):
    """A cost that reads its vector only as `x[k]` is differentiated coordinate by coordinate:
    the same cost and the closed-form gradient; a cost that uses the vector whole is not."""
    from gdkernel import _columns, _coordinates
    from gdkernel.functions import himmelblau, rastrigin, rosenbrock

    def cost(f):
        return lambda x, args: f(x)

    a, b = jnp.float64(-1.3), jnp.float64(0.7)
    assert _coordinates.value_and_grad(cost(himmelblau), (a, b), ()) is not None
    assert _coordinates.value_and_grad(cost(rastrigin), (a, b), ()) is None  # a sum over x
    quadratic = _coordinates.value_and_grad(lambda x, m: x @ m[0] @ x, (a, b), (jnp.eye(2),))
    assert quadratic is None
    by_coordinates = _coordinates.value_and_grad(cost(rosenbrock), (a, b), ())
    assert by_coordinates is not None
    value, (da, db) = by_coordinates
    want = (1 - a) ** 2 + 100 * (b - a**2) ** 2
    np.testing.assert_allclose(value, want, rtol=1e-15)
    np.testing.assert_allclose(da, -2 * (1 - a) - 400 * a * (b - a**2), rtol=1e-13)
    np.testing.assert_allclose(db, 200 * (b - a**2), rtol=1e-13)
    # a lone run's route: columns for plain gradient descent on a cheap cost only
    vg = _kernel.make_value_and_grad(rosenbrock, None)
    gd_opts = make_options("l1", "gd", False, None, 10)
    pair = jnp.array([a, b])
    assert _columns.for_member(vg, pair, gd_opts, ())
    assert not _columns.for_member(vg, pair, make_options("l1", "nesterov", False, None, 10), ())
    assert not _columns.for_member(vg, jnp.zeros(9), gd_opts, ())  # too long
    points = jnp.linspace(0.0, 1.0, 10_000)
    line = _kernel.make_value_and_grad(lambda w, X: jnp.mean((w[0] + w[1] * X) ** 2), None)
    assert not _columns.for_member(line, pair, gd_opts, (points,))  # a costly cost


def test_lone_run_by_coordinates_equals_a_python_loop(x64):
    """`gradient_descent` on Rosenbrock's function (carried as its coordinates, gradient by
    coordinates) takes the steps of a plain-Python loop with the closed-form gradient."""
    from gdkernel.functions import rosenbrock

    def grad(x):
        a, b = x
        return np.array([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)])

    x, lr, its = np.array([-1.2, 1.0]), 1e-3, 0
    while its < 3000:
        new = x - lr * grad(x)
        its += 1
        step, x = np.abs(new - x).sum(), new
        if step < 1e-7:
            break
    res = gd.gradient_descent(rosenbrock, [-1.2, 1.0], lr, precision=1e-7, max_iter=3000)
    assert int(res.iterations) == its
    np.testing.assert_allclose(res.x, x, rtol=1e-10)
    assert res.x.shape == (2,) and res.grad.shape == (2,)


def test_a_batch_step_in_columns_is_computed_once(x64):
    """Under `jax.vmap` on a CPU, a step of members in columns is the branch of a
    conditional (computed once, not once per carried array), with every operand batched or
    shared; its values are the step's own. A vector member and a lone member compute it
    directly."""
    from gdkernel import _columns
    from gdkernel._once import once

    def compute(x, shift, scale):
        a, b = x
        return a * scale + shift, (b - a) * scale

    pairs = jnp.asarray(np.random.default_rng(0).normal(size=(6, 2)))
    shifts = jnp.arange(6.0)

    def batched(pairs, shifts, scale):
        def member(pair, shift):
            x = _columns.split(pair, batched=False)
            return once(compute, shift > -1, x, shift, scale)

        return jax.vmap(member)(pairs, shifts)

    got = jax.jit(batched)(pairs, shifts, 3.0)
    # (to rounding: XLA may contract the multiply-add)
    np.testing.assert_allclose(got[0], pairs[:, 0] * 3.0 + shifts, rtol=1e-14)
    np.testing.assert_allclose(got[1], (pairs[:, 1] - pairs[:, 0]) * 3.0, rtol=1e-14)
    jaxpr = str(jax.make_jaxpr(batched)(pairs, shifts, 3.0))
    assert ("cond[" in jaxpr) == (jax.default_backend() == "cpu")
    # a vector member (not in columns), and a lone member: no conditional
    vector = jax.make_jaxpr(jax.vmap(lambda p, s: once(lambda x, s: x * s, s > 0, p, s)))(
        pairs, shifts
    )
    assert "cond[" not in str(vector)
    lone = jax.make_jaxpr(lambda p: once(compute, True, _columns.split(p, False), 1.0, 2.0))
    assert "cond[" not in str(lone(pairs[0]))


def test_a_sweep_program_leaves_the_cores_to_its_host_threads():
    """A sweep runs one program per core, each from its own host thread (or, with
    `threads=1`, on one core): XLA must not also split the program's loops over the cores
    (`outer_dimension_partitions`), which it does on a CPU of two or more cores for this
    batch (W2 in float32) unless told not to."""
    from gdkernel.functions import rosenbrock

    guesses = np.random.default_rng(1).uniform(-1, 1, (10_000, 2)).astype(np.float32)
    for threads in (2, 1):
        run = gd.compile_sweep(
            rosenbrock, guesses, [1e-3], precision=1e-6, max_iter=10_000, threads=threads
        )
        text = run.compiled.as_text()
        assert "while" in text
        assert '"outer_dimension_partitions":["' not in text, threads
