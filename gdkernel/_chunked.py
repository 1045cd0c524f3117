"""A long sweep cut into equal chunks of learning rates, with a progress bar on stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ._result import SweepResult
from ._sweep import sweep

# Members per compiled call of a long sweep: the learning-rate axis is cut into chunks of
# about this many members (all the same size, so the program compiles once) and the progress
# bar advances per chunk. Big enough that the per-call overhead stays small.
CHUNK_MEMBERS = 4096


class Progress:
    """A tqdm bar on stderr (a line per chunk without tqdm); nothing when not `enabled`."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self.bar: Any = None
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, unit=" members", desc="sweep", file=sys.stderr, leave=False)

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
        else:
            pct = 100 * self.done // self.total
            print(f"sweep: {self.done}/{self.total} members ({pct}%)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def sweep_in_chunks(
    fn: Callable[..., Any],
    guesses: np.ndarray,
    lrs: np.ndarray,
    options: dict[str, Any],
    chunk_members: int = CHUNK_MEMBERS,
    show: bool = False,
) -> tuple[SweepResult, int]:
    """`sweep` over the grid, the learning-rate axis cut into equal chunks.

    Each chunk holds `max(1, chunk_members // n_x0)` learning rates; the last is padded with
    copies of the last learning rate (dropped afterwards), so every chunk reuses one compiled
    program. With `show`, a progress bar advances per chunk (when there is more than one).
    Returns the whole grid (NumPy leaves) and the number of chunks.

    Example:
        >>> import numpy as np
        >>> grid, chunks = sweep_in_chunks(
        ...     lambda x: x**2, np.linspace(-1, 1, 4), np.geomspace(0.01, 0.5, 6), {}, 8
        ... )
        >>> grid.status.shape, chunks
        ((6, 4), 3)
    """
    n_lr, n_g = lrs.shape[0], guesses.shape[0]
    rows = max(1, min(n_lr, chunk_members // n_g))
    n_chunks = -(-n_lr // rows)
    padded = np.concatenate([lrs, np.repeat(lrs[-1:], n_chunks * rows - n_lr)])
    bar = Progress(n_lr * n_g, show and n_chunks > 1)
    parts = []
    try:
        for c in range(n_chunks):
            grid = sweep(fn, guesses, padded[c * rows : (c + 1) * rows], **options)
            parts.append(jax.tree.map(np.asarray, grid))  # waits for the chunk
            bar.update(min(rows, n_lr - c * rows) * n_g)
    finally:
        bar.close()
    stacked = ("x", "cost", "grad", "step_size", "iterations", "status", "learning_rate")
    fields = {f: np.concatenate([getattr(p, f) for p in parts])[:n_lr] for f in stacked}
    return SweepResult(history=None, initial_guess=parts[0].initial_guess, **fields), n_chunks
