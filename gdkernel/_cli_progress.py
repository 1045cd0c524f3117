"""The command line's progress display: a tqdm bar, or a line per report without tqdm."""

from __future__ import annotations

import sys
from typing import Any

from ._progress import Progress

# Members per compiled call of a long sweep (`sweep(chunk_size=...)`): every chunk has the
# same size, so the program compiles once, and the display advances at least once per chunk.
CHUNK_MEMBERS = 4096


class Display:
    """Receives `Progress` reports from `sweep`; shows them on stderr when `enabled`.

    It also remembers how many chunks the sweep ran in (`chunks`), for the summary.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.chunks = 1
        self.shown = 0
        self.bar: Any = None

    def __call__(self, p: Progress) -> None:
        self.chunks = p.chunks_total
        if not self.enabled or p.chunks_total < 2 or p.members_done <= self.shown:
            return
        if self.bar is None:
            try:
                from tqdm import tqdm
            except ImportError:
                self.bar = False
            else:
                self.bar = tqdm(
                    total=p.members_total,
                    unit=" members",
                    desc="sweep",
                    file=sys.stderr,
                    leave=False,
                )
        if self.bar:
            self.bar.update(p.members_done - self.shown)
        else:
            pct = 100 * p.members_done // p.members_total
            print(
                f"sweep: {p.members_done}/{p.members_total} members ({pct}%)",
                file=sys.stderr,
                flush=True,
            )
        self.shown = p.members_done

    def close(self) -> None:
        if self.bar:
            self.bar.close()
