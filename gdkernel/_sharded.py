"""A chunk of members split over several devices, each device running its own loop.

`jax.shard_map` hands every device its block of members and runs `_batch.solve_batch` on it
as a separate program: each device leaves its loop when its own members have stopped. (Under
`jax.jit` with a `NamedSharding`, the loop predicate `any(running)` would be all-reduced over
the devices on every trip, and every device would wait for the globally slowest member.)

The same code runs across processes under `jax.distributed.initialize`: the inputs become
global arrays of which each process fills only its own devices' blocks, and the outputs are
gathered to every process with `multihost_utils.process_allgather`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from . import _devices
from ._batch import (
    compiler_options,
    grid_build,
    solve_batch,
    static_choices,
    to_grid,
)
from ._kernel import Options, Params, make_value_and_grad
from ._result import Result

PyTree = Any


@functools.lru_cache(maxsize=32)
def _solver(mesh: Mesh, cost_fn: Callable, grad_fn: Callable | None, opts: Options) -> Callable:
    """`jit(shard_map(solve_batch))` for one mesh, cost and option set (cached: compiled once)."""
    spec = P(_devices.axis_names(mesh))
    value_and_grad = make_value_and_grad(cost_fn, grad_fn)

    def local(x0: PyTree, params: Params, args: tuple) -> Result:
        return solve_batch(value_and_grad, x0, params, args, opts)

    def program(x0: PyTree, params: Params, args: tuple) -> Result:
        # the per-member numbers split over the devices with the members; the rest shared
        param_specs = jax.tree.map(lambda leaf: spec if jnp.ndim(leaf) else P(), params)
        # check_vma=False: the loop's initial carry holds constants (iteration 0, step inf)
        # that the varying-axes check would ask to be cast to "varying" by hand.
        return jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(spec, param_specs, P()),
            out_specs=spec,
            check_vma=False,
        )(x0, params, args)

    return jax.jit(program, compiler_options=compiler_options())


@functools.lru_cache(maxsize=32)
def _grid_solver(
    mesh: Mesh,
    cost_fn: Callable,
    grad_fn: Callable | None,
    opts: Options,
    packed: bool | None,
    stall_test: bool,
) -> Callable:
    """The whole grid on the devices of `mesh`, in one program that stays on the devices.

    Every device takes the guesses and learning rates whole, builds its own contiguous block of
    members (`grid_build`; the last block padded) and runs its own loop; the result has the
    grid axes `(n_lr, n_g)` in front, split over the devices along the guesses when their
    number is a multiple of the device count, else along the rows when theirs is, else held
    whole by every device.
    """
    names = _devices.axis_names(mesh)
    n_devices = mesh.devices.size
    value_and_grad = make_value_and_grad(cost_fn, grad_fn)

    def program(guesses: PyTree, rows: Params, args: tuple) -> Result:
        n_rows, n_g = rows.learning_rate.shape[0], jax.tree.leaves(guesses)[0].shape[0]
        per = -(-(n_rows * n_g) // n_devices)

        def local(guesses: PyTree, rows: Params, args: tuple) -> Result:
            first = lax.axis_index(names) * per
            return solve_batch(
                value_and_grad,
                (guesses, first),
                rows,
                args,
                opts,
                packed,
                stall_test,
                build=grid_build(1),
                size=per,
            )

        flat = jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(P(), P(), P()),
            out_specs=P(names),
            check_vma=False,  # as in `_solver`
        )(guesses, rows, args)
        grid = to_grid(flat, n_rows, n_g)
        # each device its share of the guesses, else of the rows (XLA splits no axis unevenly)
        spec = P(None, names) if n_g % n_devices == 0 else P()
        spec = P(names) if spec == P() and n_rows % n_devices == 0 else spec
        layout = NamedSharding(mesh, spec)
        return jax.tree.map(lambda leaf: lax.with_sharding_constraint(leaf, layout), grid)

    return jax.jit(program, compiler_options=compiler_options())


def solve_grid(
    mesh: Mesh,
    guesses: PyTree,
    params: Params,
    args: tuple,
    *,
    cost_fn: Callable,
    grad_fn: Callable | None,
    opts: Options,
) -> Result:
    """Every row of `params` (its learning rates, and any other number a sweep grids over)
    from every guess, on the devices of a `mesh` within this process, as one chunk: a
    `Result` of JAX arrays with the grid axes `(n_lr, n_g)` in front, laid out as
    `_grid_solver` says. Inputs that other devices hold (a result of another sweep) are
    copied to every device of the mesh first."""
    packed, stall_test = static_choices(params)
    program = _grid_solver(mesh, cost_fn, grad_fn, opts, packed, stall_test)
    inputs = jax.device_put((guesses, params, args), NamedSharding(mesh, P()))
    return program(*inputs)


def _put(host: Any, mesh: Mesh, spec: P) -> jax.Array:
    """A global array laid out by `spec`; each process fills only its own devices' blocks."""
    host = np.asarray(host)
    return jax.make_array_from_callback(
        host.shape, NamedSharding(mesh, spec), lambda index: host[index]
    )


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Shared inputs (the extra `args`) as arrays held whole by every device of the mesh."""
    return jax.tree.map(lambda leaf: _put(jax.device_get(leaf), mesh, P()), tree)


def solve_chunk(
    mesh: Mesh,
    x0: PyTree,
    params: Params,
    args: tuple,
    *,
    cost_fn: Callable,
    grad_fn: Callable | None,
    opts: Options,
    deal: str = _devices.DEFAULT_DEAL,
) -> Result:
    """Solve a chunk of members on the devices of `mesh`; a host `Result` in the chunk's order.

    Args:
        mesh: the devices; members are split over all its axes.
        x0: host arrays, the chunk's members on the leading axis (a multiple of the device count).
        params: `learning_rate` per member (host array), and any other number the sweep
            grids over; the other fields shared scalars.
        args: the extra arguments of the cost, already `replicate`d on `mesh`.
        cost_fn, grad_fn, opts: as for `_batch.solve_members`.
        deal: how members are dealt to devices (`_devices.deal`).

    Returns:
        The chunk's `Result` as NumPy arrays, member `k` at position `k`, on every process.
    """
    names = _devices.axis_names(mesh)
    size = np.shape(params.learning_rate)[0]
    order = _devices.deal(size, mesh.devices.size, deal)
    spec = P(names)
    x_global = jax.tree.map(lambda leaf: _put(np.asarray(leaf)[order], mesh, spec), x0)
    params = jax.tree.map(
        lambda leaf: _put(np.asarray(leaf)[order], mesh, spec) if np.ndim(leaf) else leaf, params
    )
    if opts.progress_every:  # each device's reports name it
        opts = opts._replace(device_axes=tuple(names))
    out = _solver(mesh, cost_fn, grad_fn, opts)(x_global, params, args)
    if _devices.spans_processes(mesh):
        host = multihost_utils.process_allgather(out, tiled=True)
    else:
        host = jax.device_get(out)
    undo = np.argsort(order)
    return jax.tree.map(lambda leaf: np.asarray(leaf)[undo], host)
