"""Progress lines for long work that runs without a terminal (pipeline steps, services).

tqdm bars need a terminal; in ``hydra run`` and on Dagster's run page what shows is the
log. :class:`ProgressLog` writes one line at most every ``interval`` seconds, with the rate
and the time left, so a step that works for minutes says how far it is.
"""

from __future__ import annotations

import logging
import time


class ProgressLog:
    """``label: done/total unit (rate/s, about Ns left)`` on ``logger``, now and then."""

    def __init__(
        self,
        logger: logging.Logger,
        label: str,
        total: int,
        unit: str,
        *,
        interval: float = 10.0,
    ) -> None:
        self.logger = logger
        self.label = label
        self.total = total
        self.unit = unit
        self.interval = interval
        self.started = time.perf_counter()
        self._last = self.started

    def advance(self, done: int) -> None:
        """Record ``done`` of ``total``; log if ``interval`` passed since the last line, or
        at the end."""
        now = time.perf_counter()
        if now - self._last < self.interval and done < self.total:
            return
        self._last = now
        rate = done / max(now - self.started, 1e-9)
        left = (self.total - done) / rate if rate > 0 else float("inf")
        self.logger.info(
            "%s: %d/%d %s (%.1f/s, about %.0fs left)",
            self.label,
            done,
            self.total,
            self.unit,
            rate,
            left,
        )
