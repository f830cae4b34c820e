"""Background fits of the service: one at a time, never in a request's way.

A card put with ``labels`` is served compiled (zero-shot) at once and adapted to its
labels (:mod:`hydra_core.evaluation.adaptation`) here, on one daemon thread, in the order
the cards were put. The queue holds at most one fit per task (a newer one replaces it), so
it is bounded by the service's number of tasks. A fit that fails is kept as ``failed`` with
its reason until the task is put again or deleted.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

from hydra_core.errors import HydraInputError

log = logging.getLogger(__name__)


class FitState(StrEnum):
    QUEUED = "queued"
    FITTING = "fitting"
    FAILED = "failed"


@dataclass(eq=False)
class _Fit:
    name: str
    run: Callable[[], None]
    state: FitState = FitState.QUEUED
    error: str | None = None
    cancelled: bool = False


@dataclass(frozen=True)
class FitStatus:
    """Where a task's fit stands (none once it is served adapted)."""

    state: FitState
    error: str | None = None


class FitQueue:
    """Fits tasks one at a time on a daemon thread (started by the first fit)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Fit] = queue.SimpleQueue()
        self._fits: dict[str, _Fit] = {}
        self._running: _Fit | None = None
        """The fit under way, even one cancelled meanwhile (its end is still to wait for)."""
        self._changed = threading.Condition()
        self._open = threading.Event()
        self._open.set()
        self._worker: threading.Thread | None = None

    def submit(self, name: str, run: Callable[[], None]) -> None:
        """Queue ``run`` as ``name``'s fit, replacing a fit of ``name`` not yet done."""
        fit = _Fit(name, run)
        with self._changed:
            self.cancel(name)
            self._fits[name] = fit
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="hydra-fit", daemon=True)
                self._worker.start()
        self._queue.put(fit)

    def cancel(self, name: str) -> None:
        """Forget ``name``'s fit: a queued one never runs; a running one finishes, and the
        registry ignores what it returns (the task it started from is no longer served)."""
        with self._changed:
            fit = self._fits.pop(name, None)
            if fit is not None:
                fit.cancelled = True
            self._changed.notify_all()

    def status(self, name: str) -> FitStatus | None:
        fit = self._fits.get(name)
        return None if fit is None else FitStatus(fit.state, fit.error)

    def wait_until(self, name: str, state: FitState, timeout: float) -> bool:
        """Whether ``name``'s fit reached ``state`` within ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: self.status(name) == FitStatus(state), timeout)

    def wait(self, timeout: float) -> bool:
        """Whether every queued or running fit (cancelled ones too) ended within
        ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(
                lambda: (
                    self._running is None
                    and all(fit.state is FitState.FAILED for fit in self._fits.values())
                ),
                timeout,
            )

    @contextmanager
    def held(self) -> Iterator[None]:
        """No fit runs while the block runs (the next one is taken from the queue, says
        ``fitting`` and waits): what the service serves before a fit lands can be looked
        at, and a fit already under way can be made stale."""
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    def _work(self) -> None:
        while True:
            fit = self._queue.get()
            with self._changed:
                if fit.cancelled:
                    continue
                fit.state, self._running = FitState.FITTING, fit
                self._changed.notify_all()
            self._open.wait()
            error = self._run(fit)
            with self._changed:
                if error is not None:
                    fit.state, fit.error = FitState.FAILED, error
                elif self._fits.get(fit.name) is fit:
                    del self._fits[fit.name]
                self._running = None
                self._changed.notify_all()

    @staticmethod
    def _run(fit: _Fit) -> str | None:
        """Run ``fit``; why it failed, in words that name no server path, or None."""
        try:
            fit.run()
        except Exception as error:  # the service goes on; GET of the task says why
            log.exception("fitting task %s failed", fit.name)
            if isinstance(error, HydraInputError):
                return error.problem
            return f"{type(error).__name__} (see the service's log)"
        return None
