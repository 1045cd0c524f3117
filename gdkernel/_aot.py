"""`compile_sweep`: a sweep compiled ahead of time, to be called many times at steady state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Unpack

import jax
import numpy as np

from . import _validate as v
from ._batch import (
    default_threads,
    grid_program,
    interleave,
    run_parts,
    static_choices,
)
from ._grid import to_sweep_result
from ._kernel import Params
from ._options import RunOptions, resolve
from ._result import Axes, SweepResult
from ._sweep import WHOLE_GRID, as_guesses, prepare

PyTree = Any


class CompiledSweep:
    """A `sweep` compiled for one shape and dtype of guesses, learning rates and `args`.

    Call it with new values of the same shapes: `compiled(initial_guesses, learning_rates)`
    (and `args=` when the cost takes data). The options given to `compile_sweep` are fixed.

    Attributes:
        compile_seconds: the wall time that lowering and compiling took.
        compiled: the `jax.stages.Compiled` program (e.g. `compiled.cost_analysis()`,
            `compiled.memory_analysis()`, `compiled.as_text()`).
    """

    def __init__(
        self,
        compiled: Any,
        compile_seconds: float,
        params: Params,
        args: tuple,
        spec: Any,
        described: str,
        threads: int,
        axes: Axes,
    ):
        self.compiled, self.compile_seconds = compiled, compile_seconds
        self._params, self._args, self._spec = params, args, spec
        self._described, self._threads, self._axes = described, threads, axes
        self._x64 = bool(jax.config.read("jax_enable_x64"))  # as compiled

    def __call__(
        self, initial_guesses: PyTree, learning_rates: Any, args: tuple | None = None
    ) -> SweepResult:
        """Run the compiled sweep on new values (same shapes and dtypes as compiled)."""
        x0, _ = as_guesses(initial_guesses)
        rates = np.asarray(v.as_learning_rates(learning_rates), self._params.precision.dtype)
        args = self._args if args is None else _as_compiled(v.as_args(args), self._args)
        if _spec(x0, rates, args) != self._spec:
            want, got = self._described, _described(x0, rates, args)
            hint = ""
            if self._x64 and not jax.config.read("jax_enable_x64"):
                hint = " (float64 needs jax_enable_x64, on when this was compiled)"
            raise ValueError(
                "`initial_guesses`, `learning_rates` and `args` must have the shapes and dtypes "
                f"compiled for: {want}; got {got}{hint}"
            )
        # the rows run the learning rates slowest (`_grid.rows`): each repeats per other setting
        per_rate = self._params.learning_rate.shape[0] // rates.shape[0]
        rows = self._params._replace(learning_rate=jax.numpy.asarray(np.repeat(rates, per_rate)))
        # on the devices compiled for (arrays another sweep left on other devices move)
        into = self.compiled.input_shardings[0]
        guesses, args = _moved(x0, into[0]), _moved(args, into[2])
        if self._threads == 1:
            result = self.compiled(guesses, rows, args, np.int32(0))
        else:
            parts = run_parts(
                lambda part: self.compiled(guesses, rows, args, np.int32(part)), self._threads
            )
            n_rows = rows.learning_rate.shape[0]
            result = interleave(tuple(parts), n_rows, jax.tree.leaves(x0)[0].shape[0])
        return to_sweep_result(result, rates, self._axes, x0)


def _moved(tree: PyTree, shardings: PyTree) -> PyTree:
    """The JAX arrays of `tree` that lie elsewhere than `shardings` say, moved there; host
    arrays as they are (the call moves them)."""
    return jax.tree.map(
        lambda leaf, to: (
            jax.device_put(leaf, to)
            if isinstance(leaf, jax.Array) and leaf.sharding != to
            else leaf
        ),
        tree,
        shardings,
    )


def _as_compiled(args: tuple, compiled: tuple) -> tuple:
    """`args` converted to the types they were compiled with, as `sweep` converts its own: a
    leaf of the compiled leaf's shape takes its dtype where JAX would cast it (an integer or
    float64 array where float32 was compiled; an integer where a Python float was). Any
    other leaf stays as it is, for the shape check to report."""
    leaves, tree = jax.tree.flatten(args)
    was = jax.tree.leaves(compiled)
    if len(leaves) != len(was):  # (another structure: the spec check reports it)
        return args
    out = []
    for leaf, old in zip(leaves, was, strict=True):
        kind, want = np.result_type(leaf).kind, _dtype(old)
        fits = np.shape(leaf) == np.shape(old) and (
            (want.kind == "f" and kind in "iuf") or (want.kind in "iu" and kind in "iu")
        )
        if fits and type(old) in (float, int):
            leaf = type(old)(leaf)
        elif fits:
            leaf = leaf.astype(want) if isinstance(leaf, jax.Array) else np.asarray(leaf, want)
        out.append(leaf)
    return jax.tree.unflatten(tree, out)


def _spec(x0: PyTree, rates: Any, args: tuple) -> tuple:
    """What the compiled program is specialised on: tree structure, shapes and dtypes."""
    leaves, treedef = jax.tree.flatten((x0, rates, args))
    return treedef, tuple((np.shape(leaf), _dtype(leaf)) for leaf in leaves)


def _dtype(leaf: Any) -> np.dtype:
    return np.dtype(leaf.dtype) if hasattr(leaf, "dtype") else np.result_type(leaf)


def _described(x0: PyTree, rates: Any, args: tuple) -> str:
    """The values as the compiled program takes them: a float64 NumPy array is float32
    there unless `jax_enable_x64` is on."""

    def taken(leaf: Any) -> Any:
        if not hasattr(leaf, "dtype"):  # a Python number: described as one
            return leaf
        try:
            dtype = jax.dtypes.canonicalize_dtype(leaf.dtype)
        except TypeError:  # (not a NumPy type: described as it is)
            return leaf
        return jax.ShapeDtypeStruct(np.shape(leaf), dtype)

    x0, rates, args = jax.tree.map(taken, (x0, rates, args))
    return f"{v.describe(x0)}, {v.describe(rates)}, {v.describe(args) if args else '()'}"


def compile_sweep(
    cost_fn: Callable[..., Any],
    initial_guesses: PyTree,
    learning_rates: Any,
    *,
    threads: int | None = None,
    **options: Unpack[RunOptions],
) -> CompiledSweep:
    r"""Compile `sweep` ahead of time, so that later calls run at steady state.

    Takes the arguments of `sweep` but `devices`, `chunk_size`, `memory_budget`, `out` and
    `progress`: the program runs the whole grid at once. It is lowered and compiled here,
    once (the time it took is `compile_seconds`); calling the result with new guesses and
    learning rates of the same shapes runs it without tracing or compiling. Each member's
    result is exactly what `sweep` gives on one device (and a lone `gradient_descent` run's
    where `sweep` says). The program runs on JAX's default device, shared by `threads` host
    threads as in `sweep`.

    Returns:
        A `CompiledSweep`: `compiled(initial_guesses, learning_rates, args=None)` returns a
        `SweepResult`.

    Raises:
        ValueError: at call time, when the shapes or dtypes differ from the compiled ones;
            at compile time, everything `sweep` raises (its `TypeError` too).
        TypeError: one of `sweep`'s keywords that plan the grid's split (`devices`,
            `chunk_size`, `memory_budget`, `out`, `progress`).

    Example:
        >>> import numpy as np
        >>> import gdkernel as gd
        >>> run = gd.compile_sweep(lambda x: x**2, np.linspace(-3, 3, 5), [0.01, 0.1])
        >>> run.compile_seconds < 60
        True
        >>> res = run(np.linspace(-2, 2, 5), [0.02, 0.2])  # no recompilation
        >>> res.status.shape
        (2, 5)
    """
    for name in options:
        if name in WHOLE_GRID:
            raise TypeError(
                f"compile_sweep() does not take `{name}`: its program runs the whole grid at "
                "once on the default device, without chunks, streaming or progress (call "
                "`gd.sweep` for them)"
            )
    cost_fn, grad_fn, x0, params, opts, args, rates, axes = prepare(
        cost_fn, initial_guesses, learning_rates, resolve(options, "compile_sweep", ("threads",))
    )
    n_members = params.learning_rate.shape[0] * jax.tree.leaves(x0)[0].shape[0]
    threads = v.as_threads(threads) or default_threads(n_members)
    packed, stall_test = static_choices(params)
    start = time.perf_counter()
    compiled = (
        grid_program()
        .lower(
            x0,
            params,
            args,
            np.int32(0),
            parts=threads,
            cost_fn=cost_fn,
            grad_fn=grad_fn,
            opts=opts,
            packed=packed,
            stall_test=stall_test,
        )
        .compile()
    )
    seconds = time.perf_counter() - start
    # jax Arrays for the fixed numbers, so each call passes them without conversion
    params = jax.tree.map(jax.numpy.asarray, params)  # (a PRNG key stays a key)
    return CompiledSweep(
        compiled,
        seconds,
        params,
        args,
        _spec(x0, rates, args),
        _described(x0, rates, args),
        threads,
        axes,
    )
