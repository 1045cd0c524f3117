"""Progress of a long batched run, reported from inside the compiled loop.

`monitor` is traced into the batched loop when `Options.progress_every` is set: every k trips
it sends a few counts to the host with `jax.debug.callback`, where the active sink (if any)
receives them. Nothing is sent when progress is off (the default).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array, lax

from ._result import RUNNING, Status

_sink: Callable[..., None] | None = None


def _deliver(trips: Any, running: Any, converged: Any, diverged: Any, best_cost: Any) -> None:
    if _sink is not None:
        _sink(int(trips), int(running), int(converged), int(diverged), float(best_cost))


def monitor(state: Any, trips: Array, every: int) -> None:
    """Inside the loop: every `every` trips, send counts of the batch `state` to the host."""

    def send() -> None:
        finished = state.status == Status.CONVERGED
        best = jnp.min(jnp.where(finished, state.cost, jnp.inf))
        jax.debug.callback(
            _deliver,
            trips,
            jnp.sum(state.status == RUNNING),
            jnp.sum(finished),
            jnp.sum(state.status == Status.DIVERGED),
            best,
        )

    lax.cond(trips % every == 0, send, lambda: None)
