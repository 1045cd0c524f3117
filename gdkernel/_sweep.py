"""`sweep`: every learning rate x every starting point, on one device or many, in chunks."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Unpack

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from . import _chunks, _devices, _grid, _progress, _sharded, _store
from . import _validate as v
from ._batch import default_threads, report_trips, solve_grid, solve_members
from ._closure import hoisted
from ._kernel import Options, Params
from ._options import RunOptions, resolve
from ._progress import Progress
from ._result import Axes, SweepResult
from ._solve import checked, float_dtype
from ._types import Numbers

PyTree = Any


def as_guesses(tree: PyTree, name: str = "initial_guesses") -> tuple[PyTree, int]:
    """The starting points with the batch on every leaf's leading axis, and the batch size.

    A guess whose leaves are all scalars is one starting point (a batch of 1).
    """
    guesses = v.as_guess(tree, name)
    leaves = jax.tree.leaves(guesses)
    if all(jnp.ndim(leaf) == 0 for leaf in leaves):
        return jax.tree.map(lambda leaf: leaf[None], guesses), 1
    sizes = {jnp.shape(leaf)[0] for leaf in leaves if jnp.ndim(leaf)}
    if len(sizes) != 1 or any(jnp.ndim(leaf) == 0 for leaf in leaves):
        shapes = ", ".join(str(jnp.shape(leaf)) for leaf in leaves)
        raise ValueError(
            f"`{name}` needs the batch of starting points on the leading axis of every leaf; "
            f"the leaves have shapes {shapes} (one starting point: give every leaf a leading "
            "axis of 1, `jax.tree.map(lambda a: jnp.asarray(a)[None], guess)`)"
        )
    (size,) = sizes
    if size == 0:
        raise ValueError(f"`{name}` must hold at least one starting point")
    return guesses, size


class Prepared(NamedTuple):
    """A sweep's checked inputs: what `sweep` and `compile_sweep` both start from."""

    cost_fn: Callable
    grad_fn: Callable | None
    x0: PyTree  # the starting points, batched on every leaf's leading axis
    params: Params  # the grid's rows (`_grid`): one value per row of each gridded number
    opts: Options
    args: tuple
    learning_rates: Numbers  # the learning-rate axis, in the guesses' dtype
    axes: Axes  # the other settings axes


def prepare(
    cost_fn: Any, initial_guesses: PyTree, learning_rates: Any, options: RunOptions
) -> Prepared:
    """Check a sweep's arguments and turn them into arrays and static options."""
    cost_fn = v.cost_function(cost_fn, options["symbols"])
    grad_fn = v.grad_function(options["grad_fn"])
    x0, _ = as_guesses(initial_guesses)
    dtype = float_dtype(x0)
    args = v.as_args(options["args"])
    # one starting point's shape and dtype (a cost's closure and an optax method are traced
    # on it abstractly)
    guess = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype), x0)
    cost_fn, grad_fn, args = hoisted(cost_fn, grad_fn, guess, args, options["batch_size"])
    lrs = v.as_learning_rates(learning_rates)
    lrs = lrs if lrs.dtype == dtype else v.cast_kept(lrs, dtype, "learning_rates")
    scalars, hyperparams, axes = _grid.split(options, options["hyperparams"])
    one = {**options, **scalars, "hyperparams": hyperparams, "args": args}
    params, opts = checked(dtype, 1.0, one, guess)  # type: ignore[arg-type]
    checks: dict[str, Callable[[Any], Any]] = {
        "momentum": lambda value: v.as_momentum(value, options["method"]),
        "precision": lambda value: v.warn_precision(v.as_precision(value), x0),
        "grad_tol": v.as_grad_tol,
    }
    if "precision" not in (axis.name for axis in axes if not axis.hyper):
        v.warn_precision(options["precision"], x0)
    for axis in axes:
        check = (
            functools.partial(v.as_hyperparam, name=axis.name) if axis.hyper else checks[axis.name]
        )
        _grid.check_axis(axis.values, check)
    axes = [a._replace(values=v.cast_kept(a.values, dtype, a.name, a.hyper)) for a in axes]
    rows = _grid.rows(params, lrs, axes)
    grid_axes = Axes(tuple(a.name for a in axes), tuple(a.values for a in axes))
    return Prepared(cost_fn, grad_fn, x0, rows, opts, args, lrs, grid_axes)


# `sweep`'s own keywords; all but `threads` plan how a grid is split, streamed or reported,
# which a `compile_sweep` program (the whole grid, on the default device) has fixed
WHOLE_GRID = ("devices", "chunk_size", "memory_budget", "out", "progress")
_OWN = (*WHOLE_GRID, "threads")


def sweep(
    cost_fn: Callable[..., Any],
    initial_guesses: PyTree,
    learning_rates: Any,
    *,
    devices: Sequence[jax.Device] | Mesh | None = None,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
    out: str | os.PathLike | None = None,
    progress: bool | Callable[[Progress], Any] | None = None,
    threads: int | None = None,
    **options: Unpack[RunOptions],
) -> SweepResult:
    r"""Run `gradient_descent` for every learning rate from every starting point.

    The grid is flattened into one batch of members; each member stops on its own rule. Where
    the batched program computes a lone `gradient_descent` run's bits (the tests check scalar
    problems, the built-in costs and float64), a member takes that run's iterations, status
    and `x`, whatever the devices, threads and chunks. It may contract multiply-adds
    differently, though: on an ill-conditioned cost in float32 `x` then equals the lone run's
    up to rounding, and the last-bit differences can grow and move the stop (a float32
    Rosenbrock grid of 1,800 members with momentum: 60 stop 1 to 47 iterations apart from
    their lone runs, and the chunk size moves a few the same way). Use float64 where that
    matters.

    Shapes: with `n_lr` learning rates and `n_g` starting points, every field of the result
    has leading axes `(n_lr, n_g)`; e.g. `x` has shape `(n_lr, n_g, *x_shape)` and `status`
    `(n_lr, n_g)`. A scalar learning rate counts as `n_lr = 1`; a single starting point (all
    leaves scalars) as `n_g = 1`: the axes are kept, never squeezed. To pass one vector-valued
    starting point, give it a leading axis of length 1 (`x0[None]`).

    Devices: with two or more devices (by default every local device of the default backend,
    or every device of every process under `jax.distributed.initialize`), each chunk is split
    into equal contiguous blocks, one per device (padded with members that do no work), and
    every device runs its own loop (`jax.shard_map`), leaving it when its own members have
    stopped. Neighbours in the grid tend to stop together, so list the learning rates in order
    (as `numpy.logspace` gives them): a device of fast members then finishes early. Across
    processes, call `sweep` with the same arguments on every process: each computes its
    devices' share and every process gets the whole result.

    CPU cores: on one CPU device (JAX's default) the grid is dealt to one host thread per
    core, each running the same compiled program on its share of the members, so a sweep uses
    every core with no JAX setting changed (`threads=1` runs one). With several CPU devices
    configured, each device runs its own loop instead.

    Memory: a grid runs in chunks of `chunk_size` members, or as many as fit `memory_budget`
    bytes per device (by default half of the free device memory, or of the host's for CPU
    devices). Every chunk has the same size, so it compiles once. The results stream into
    host arrays, or with `out=` into an `.npz` file (see `load_sweep`).

    The options `precision`, `max_iter`, `args`, `grad_fn`, `norm`, `grad_tol`, `method`,
    `momentum`, `hyperparams`, `batch_size`, `key`, `divergence`, `history`,
    `history_every` and `symbols` are those of `gradient_descent`, shared by every member.

    More axes: `momentum`, `precision`, `grad_tol` and each numeric entry of `hyperparams`
    may also be a 1-D array, which becomes a grid axis (its values traced, like the learning
    rates). The axes come in the order `learning_rate`, `momentum`, `precision`,
    `grad_tol`, the `hyperparams` in the dict's order, `initial_guess` last; e.g.
    `sweep(f, x0s, lrs, method="adam", hyperparams={"b1": [0.8, 0.9]})` has fields of shape
    `(n_lr, 2, n_g)` and `axes == ("learning_rate", "b1", "initial_guess")`. With
    mini-batches every member sees the same stream of samples (the one of a lone run with
    the same key), so members differ only by their settings.

    Args:
        cost_fn: `cost_fn(x, *args) -> scalar`, as in `gradient_descent`.
        initial_guesses: the starting points, batched on the leading axis of every leaf.
        learning_rates: a scalar or a 1-D array of learning rates, all > 0.
        devices: None (default), a sequence of `jax.Device` or a `jax.sharding.Mesh` (members
            are split over all its axes). One device runs the grid as one batch.
        chunk_size: members per chunk (rounded up to a multiple of the device count).
        memory_budget: bytes per device a chunk may use: an int or a string like `"4GiB"`.
            Give it or `chunk_size`, not both.
        out: an `.npz` path: results are written there chunk by chunk and the returned
            result reads them memory-mapped. In a multi-process run process 0 writes the
            file and the other processes return None.
        progress: a callable receiving a `Progress` (chunks, members running, converged and
            diverged, best cost) after every chunk and from inside the compiled loop, or True
            for a tqdm bar on stderr (extra `gdkernel[progress]`). Off by default.
        threads: host threads that share the grid (every chunk of it) on one device: None
            (default) for one per CPU core on a CPU device, one on an accelerator.


    Keyword Args:
        adjoint: how a sweep under `jax.grad` or `jax.jvp` (traced inputs) is
            differentiated, member by member: `"implicit"` or `"unrolled"`, as in
            `gradient_descent`.

    Returns:
        A `SweepResult`: the fields of `Result` with the grid axes in front, the grid's
        `learning_rate`, `initial_guess` and other axes (`axes`, `coords`), and helpers
        `best()`, `member(*index)`, `counts()`, `to_dataframe()` and `to_xarray()`.
        The fields are JAX arrays (split over the devices by guess, else by row, where the
        count divides evenly; see docs/devices.md) when the grid runs as one
        chunk in one process without `out=` (and, on several devices, without
        `progress=`), else NumPy arrays on the host.

    Raises:
        ValueError: the leaves of `initial_guesses` disagree on the batch size, a learning
            rate is <= 0 or non-finite, one member does not fit `memory_budget`, the result
            does not fit host memory (use `out=`), plus everything `gradient_descent` raises.
        TypeError: `devices`, `chunk_size`, `memory_budget`, `out` or `progress` given with
            traced inputs (call `sweep` outside `jax.jit`, `jax.grad` and `jax.vmap`).
        ImportError: `progress=True` without tqdm.

    Example:
        >>> import jax.numpy as jnp
        >>> import gdkernel as gd
        >>> grid = gd.sweep(lambda x: x**2, jnp.linspace(-3, 3, 4), jnp.array([0.01, 0.1, 1.5]))
        >>> grid.status.shape
        (3, 4)
        >>> float(grid.best().learning_rate)
        0.1...
    """
    cost_fn, grad_fn, x0, params, opts, args, learning_rates, axes = prepare(
        cost_fn, initial_guesses, learning_rates, resolve(options, "sweep", _OWN)
    )
    dtype = float_dtype(x0)
    size = _chunks.as_chunk_size(chunk_size)
    budget = _chunks.as_memory_budget(memory_budget)
    if size is not None and budget is not None:
        raise ValueError("give `chunk_size` or `memory_budget`, not both")
    path = _store.as_out_path(out)
    report = _progress.as_report(progress)
    threads = v.as_threads(threads)
    mesh = _devices.as_mesh(devices)
    pinned = _devices.single_device(devices)
    n_rows, n_g = params.learning_rate.shape[0], jax.tree.leaves(x0)[0].shape[0]

    def finish(result: Any) -> SweepResult:
        return _grid.to_sweep_result(result, learning_rates, axes, x0)

    if any(v.is_traced(leaf) for leaf in jax.tree.leaves((x0, params, args))):
        asked = [
            name
            for name, value in (
                ("devices", devices),
                ("chunk_size", size),
                ("memory_budget", budget),
                ("out", path),
                ("progress", report),
            )
            if value is not None
        ]
        if asked:
            raise TypeError(
                f"`{asked[0]}` needs concrete inputs: call `sweep` outside `jax.jit`, "
                "`jax.grad` and `jax.vmap` (traced inputs run as one batch on one device)"
            )
        return finish(solve_grid(x0, params, args, cost_fn=cost_fn, grad_fn=grad_fn, opts=opts))

    if path is not None:
        _store.check_storable(x0)
    run_on = list(mesh.devices.flat) if mesh is not None else [pinned or jax.devices()[0]]
    rows = opts.history_rows
    per_member = _chunks.member_bytes(x0, dtype, opts.method, rows)
    n = n_rows * n_g
    if size is None and budget is None and per_member * -(-n // len(run_on)) > _chunks.SMALL:
        default = _chunks.default_budget(run_on)
    else:
        default = None
    plan = _chunks.plan(
        n, len(run_on), per_member, size, budget or default, budget is not None, rows
    )
    per_result = _chunks.result_bytes(x0, dtype, rows)
    if path is None and n * per_result > _chunks.SMALL:
        _chunks.check_host(n, per_result, rows)
    if path is not None and jax.process_index() == 0:  # (the process that writes the file)
        _chunks.check_disk(path, n, per_result)
    if plan.n_chunks == 1 and path is None and mesh is None:
        whole = solve_grid(
            x0,
            params,
            args,
            cost_fn=cost_fn,
            grad_fn=grad_fn,
            opts=opts,
            threads=threads,
            device=pinned,
            report=report,
        )
        return finish(whole)
    one_process = mesh is not None and not _devices.spans_processes(mesh)
    if plan.n_chunks == 1 and path is None and report is None and one_process:
        assert mesh is not None
        return finish(
            _sharded.solve_grid(mesh, x0, params, args, cost_fn=cost_fn, grad_fn=grad_fn, opts=opts)
        )
    if mesh is None:  # the parts of every chunk, dealt to host threads
        device = run_on[0]
        threads = threads or default_threads(plan.chunk_size, device)
        size = -(-plan.chunk_size // threads) * threads
        plan = plan._replace(chunk_size=size, n_chunks=-(-n // size))
    # None only on the processes other than 0 of a multi-process sweep with `out=` (the
    # documented exception; every single-process call gets its result)
    return _chunked(  # type: ignore[return-value]
        cost_fn,
        grad_fn,
        x0,
        params,
        args,
        opts,
        learning_rates,
        axes,
        mesh,
        pinned,
        plan,
        path,
        report,
        threads or 1,
    )


def _chunked(
    cost_fn: Callable,
    grad_fn: Callable | None,
    x0: PyTree,
    params: Params,
    args: tuple,
    opts: Options,
    learning_rates: Numbers,
    axes: Axes,
    mesh: Mesh | None,
    device: jax.Device | None,
    plan: _chunks.Plan,
    path: Path | None,
    report: _progress.Report | None,
    threads: int,
) -> SweepResult | None:
    """The grid chunk by chunk, on a mesh or on one device (each chunk shared by `threads`
    host threads); results gathered on the host."""
    x0_host = jax.device_get(x0)
    shape = (*_grid.shape(learning_rates, axes), jax.tree.leaves(x0_host)[0].shape[0])
    n = math.prod(shape)
    n_devices = threads if mesh is None else mesh.devices.size
    rows = jax.device_get(params)
    store: _store.HostStore
    if path is None:
        store = _store.HostStore(shape)
    elif jax.process_index() == 0 or mesh is None or not _devices.spans_processes(mesh):
        store = _store.NpzStore(path, shape)
    else:
        store = _store.NullStore(shape)
    tracker = None
    if report is not None:
        first = mesh.devices.flat[0] if mesh is not None else device or jax.devices()[0]
        share = plan.chunk_size // n_devices
        every = report_trips(share, x0_host, opts, args, first.platform, cost_fn, grad_fn)
        opts = opts._replace(progress_every=every)
        sampled = mesh is None and threads > 1  # (see `solve_members`)
        tracker = _progress.Tracker(
            report, plan.n_chunks, n, plan.chunk_size, n_devices, sampled=sampled
        )
    if mesh is not None:
        args = _sharded.replicate(args, mesh)
    elif device is not None:
        args = jax.device_put(args, device)
    try:
        with _progress.reporting(tracker):
            if tracker is not None:
                tracker.begin()
            for start in range(0, n, plan.chunk_size):
                stop = min(start + plan.chunk_size, n)
                xs, chunk_params = _chunks.members(x0_host, rows, start, stop, plan.chunk_size)
                if tracker is not None:
                    tracker.start_chunk(stop - start)
                if mesh is not None:
                    flat = _sharded.solve_chunk(
                        mesh, xs, chunk_params, args, cost_fn=cost_fn, grad_fn=grad_fn, opts=opts
                    )
                else:
                    flat = solve_members(
                        xs,
                        chunk_params,
                        args,
                        cost_fn=cost_fn,
                        grad_fn=grad_fn,
                        opts=opts,
                        threads=threads,
                        device=device,
                    )
                flat = jax.tree.map(lambda leaf, k=stop - start: np.asarray(leaf)[:k], flat)
                store.write(start, flat)
                if tracker is not None:
                    tracker.finish_chunk(flat.status, flat.cost)
        return store.finish(np.asarray(learning_rates), x0_host, jax.device_get(axes))
    except BaseException:
        store.abort()
        raise
