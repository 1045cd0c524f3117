"""The command line's progress display: a tqdm bar, or a line per report without tqdm."""

from __future__ import annotations

import sys
from typing import Any

from ._progress import Progress


class Display:
    """Receives `Progress` reports from `sweep` (after every chunk and from inside the
    compiled loop); shows them on stderr when `enabled`.

    The first report shows the display (at 0 members done when none has stopped yet), later
    ones when more members have stopped; a sweep whose first report is its last shows
    nothing. The display remembers how many chunks the sweep ran in (`chunks`), for the summary.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.chunks = 1
        self.shown = 0
        self.bar: Any = None

    def __call__(self, p: Progress) -> None:
        self.chunks = p.chunks_total
        if not self.enabled:
            return
        if self.bar is None:  # the first report: show that the sweep runs, unless it is done
            if p.members_done >= p.members_total:
                return
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
        elif p.members_done <= self.shown:
            return
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
