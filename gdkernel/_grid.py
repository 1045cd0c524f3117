"""A sweep's grid: its axes, and which member sits where in it.

A sweep grids the learning rates and, given as 1-D arrays, `momentum`, `precision`,
`grad_tol` and the numeric entries of `hyperparams` (in that order), then the starting
points. The settings axes (all but the guesses) are flattened, row-major, into *rows*: a
`Params` whose gridded fields hold one value per row. Member `r * n_guesses + j` of the flat
batch is row `r` from guess `j` (`_batch.grid_members`, `_chunks.members`); `to_sweep_result`
gives a flat-row result the grid's shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as v
from ._kernel import Params
from ._result import Axes, Result, SweepResult
from ._types import Numbers, PyTree

GRIDDED = ("momentum", "precision", "grad_tol")  # Params fields a sweep may grid, in order


def _is_axis(value: Any) -> bool:
    return not isinstance(value, str | dict) and np.ndim(value) >= 1


def _axis(value: Any, name: str) -> Numbers:
    """A 1-D array of an axis's values (traced values pass as they are)."""
    if v.is_traced(value):
        if jnp.ndim(value) != 1:
            raise TypeError(f"`{name}` must be a scalar or a 1-D array (a grid axis)")
        return value
    try:
        values = np.asarray(value)
    except ValueError:
        raise TypeError(f"`{name}` must be a scalar or a 1-D array (a grid axis)") from None
    if values.ndim != 1:
        raise TypeError(
            f"`{name}` must be a scalar or a 1-D array (a grid axis), got shape {values.shape}"
        )
    if values.size == 0:
        raise ValueError(f"`{name}` is an empty grid axis: give at least one value")
    if values.dtype == bool or not np.issubdtype(values.dtype, np.number):
        raise TypeError(
            f"`{name}` must be a real number or a 1-D array of them (a grid axis); got an "
            f"array of dtype {values.dtype}"
        )
    return values


class Axis(NamedTuple):
    name: str
    values: Numbers
    hyper: bool  # an entry of `hyperparams` (else a field of `Params`)


def split(settings: Mapping[str, Any], hyperparams: Any) -> tuple[dict[str, Any], Any, list[Axis]]:
    """(the settings with each grid axis replaced by its first value, likewise `hyperparams`,
    the axes in grid order).

    `settings` maps each of `GRIDDED` to its value as the user gave it.
    """
    axes: list[Axis] = []
    scalars = dict(settings)
    for name in GRIDDED:
        if _is_axis(settings[name]):
            values = _axis(settings[name], name)
            axes.append(Axis(name, values, False))
            scalars[name] = values[0]
    if isinstance(hyperparams, dict):
        hyperparams = dict(hyperparams)
        for name, value in hyperparams.items():
            if _is_axis(value):
                values = _axis(value, f"hyperparams[{name!r}]")
                if name == "learning_rate" or name in (a.name for a in axes):
                    break  # `split_hyperparams` names the clash; a name is one axis
                axes.append(Axis(name, values, True))
                hyperparams[name] = values[0]
    return scalars, hyperparams, axes


def check_axis(values: Numbers, check: Callable[[Any], Any]) -> None:
    """Each concrete value of an axis through its scalar check (the same errors as a scalar)."""
    if v.is_traced(values):
        return
    for value in np.asarray(values):
        check(value.item())


def rows(params: Params, learning_rates: Numbers, axes: list[Axis]) -> Params:
    """`params` with one row per point of the settings grid (learning rate first)."""
    dtype = learning_rates.dtype
    values = [learning_rates, *(axis.values for axis in axes)]
    xp: Any = jnp if any(v.is_traced(a) for a in values) else np
    mesh = xp.meshgrid(*values, indexing="ij")
    flat = [xp.asarray(grid).reshape(-1).astype(dtype) for grid in mesh]
    fields = {"learning_rate": flat[0]}
    hyper = dict(params.hyperparams)
    for axis, column in zip(axes, flat[1:], strict=True):
        if axis.hyper:
            hyper[axis.name] = column
        else:
            fields[axis.name] = column
    return params._replace(**fields, hyperparams=hyper)


def shape(learning_rates: Numbers, axes: Axes) -> tuple[int, ...]:
    """The settings grid's shape (the guesses' axis not included)."""
    return (np.shape(learning_rates)[0], *(np.shape(a)[0] for a in axes.values))


def to_sweep_result(
    result: Result, learning_rates: Numbers, axes: Axes, initial_guess: PyTree
) -> SweepResult:
    """A result with axes `(n_rows, n_guesses)` in front, as a `SweepResult` of the grid's
    shape: `(n_learning_rates, *other settings, n_guesses)`."""
    grid = shape(learning_rates, axes)
    if len(grid) > 1:
        n_g = jax.tree.leaves(initial_guess)[0].shape[0]
        result = jax.tree.map(lambda leaf: leaf.reshape(*grid, n_g, *leaf.shape[2:]), result)
    return SweepResult(
        **result._asdict(),
        learning_rate=learning_rates,
        initial_guess=initial_guess,
        grid_axes=axes,
    )
