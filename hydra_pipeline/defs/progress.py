"""A quiet progress logger for ``hydra run``: one line per finished step, not Dagster's
full debug stream (which stays in the run's event log, visible in the UI)."""

from __future__ import annotations

import logging
import os
import sys
import weakref
from typing import TextIO

import dagster as dg
from dagster_shared.error import SerializableErrorInfo

_SHOWN = {"STEP_SUCCESS", "STEP_FAILURE", "ASSET_CHECK_EVALUATION"}
# Dagster's wrapper around whatever a step raised ("Error occurred while executing op ..."):
# it names the step, which is shown anyway, and hides the cause.
_STEP_WRAPPER = "DagsterExecutionStepExecutionError"
# Ctrl-C: Dagster's interrupt, raised inside a step, and Python's, raised anywhere else.
_INTERRUPTS = {"DagsterExecutionInterruptedError", "KeyboardInterrupt"}


def is_interrupt(error: SerializableErrorInfo) -> bool:
    """Whether Ctrl-C, not a fault, ended the step or run that ``error`` describes."""
    current: SerializableErrorInfo | None = error
    while current is not None:
        if current.cls_name in _INTERRUPTS:
            return True
        current = current.cause or current.context
    return False


def cause_chain(error: SerializableErrorInfo) -> list[str]:
    """``Class: first line of the message`` for each error of the chain, outermost first,
    without Dagster's step wrapper or a link whose message ends the one before (a wrapper
    that quotes its cause, as SQLAlchemy does sqlite's)."""
    lines: list[str] = []
    current: SerializableErrorInfo | None = error
    while current is not None:
        name = current.cls_name or "Error"
        message = current.message.strip()
        qualified, _, rest = message.partition(": ")
        text = rest if qualified.endswith(name) else message
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        if name != _STEP_WRAPPER and not (lines and first and lines[-1].endswith(first)):
            lines.append(f"{name}: {first}" if first else name)
        current = current.cause or current.context
    return lines


def _terminal_stderr() -> TextIO:
    """A stream on stderr as it is now, which a run's log capture does not reach.

    Dagster captures a run's stderr into its compute log file and copies that file back with
    ``tail -F``, which it stops when the run ends: a line written in the run's last moments
    (the last step's ``done``) was often never copied. Loggers start before the capture, so a
    duplicate of the stderr descriptor taken then still reaches the terminal.
    """
    try:
        descriptor = os.dup(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # a stderr without a descriptor
        return sys.stderr
    return os.fdopen(descriptor, "w", buffering=1, encoding="utf-8", errors="replace")


class _ProgressHandler(logging.Handler):
    def __init__(self, prefix: str) -> None:
        super().__init__(level=logging.DEBUG)
        self.prefix = prefix
        self.check_steps: set[str] = set()  # their success line would repeat the check's
        self.stream = _terminal_stderr()
        if self.stream is not sys.stderr:
            weakref.finalize(self, self.stream.close)

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None)
        event = meta.get("dagster_event") if isinstance(meta, dict) else None
        line = None
        if event is not None and event.event_type_value in _SHOWN:
            line = self._event_line(event)
        elif event is None and record.levelno >= logging.WARNING:
            line = f"{self.prefix}  ! {record.getMessage()}"
        if line:
            print(line, file=self.stream, flush=True)

    def _event_line(self, event: dg.DagsterEvent) -> str:
        data = event.event_specific_data
        if event.event_type_value == "STEP_SUCCESS":
            if event.step_key in self.check_steps:
                return ""
            seconds = getattr(data, "duration_ms", 0.0) / 1000
            return f"{self.prefix}  done {event.step_key} ({seconds:.1f}s)"
        if event.event_type_value == "STEP_FAILURE":
            error = getattr(data, "error", None)
            if error is not None and is_interrupt(error):
                return f"{self.prefix}  interrupted {event.step_key}"
            causes = cause_chain(error) if error is not None else []
            return f"{self.prefix}  FAILED {event.step_key}: {causes[0] if causes else ''}"
        self.check_steps.add(event.step_key or "")
        passed = getattr(data, "passed", False)
        name = getattr(data, "check_name", event.step_key)
        return f"{self.prefix}  check {name}: {'passed' if passed else 'FAILED'}"


@dg.logger(
    config_schema={"prefix": dg.Field(str, default_value="")},
    description="One line per finished step and check, on stderr.",
)
def hydra_progress(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("hydra_progress", level=logging.DEBUG)
    logger.addHandler(_ProgressHandler(init_context.logger_config["prefix"]))
    return logger
