"""A quiet progress logger for ``hydra run``: one line per finished step, not Dagster's
full debug stream (which stays in the run's event log, visible in the UI)."""

from __future__ import annotations

import logging
import sys

import dagster as dg

_SHOWN = {"STEP_SUCCESS", "STEP_FAILURE", "ASSET_CHECK_EVALUATION"}


class _ProgressHandler(logging.Handler):
    def __init__(self, prefix: str) -> None:
        super().__init__(level=logging.DEBUG)
        self.prefix = prefix
        self.check_steps: set[str] = set()  # their success line would repeat the check's

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None)
        event = meta.get("dagster_event") if isinstance(meta, dict) else None
        line = None
        if event is not None and event.event_type_value in _SHOWN:
            line = self._event_line(event)
        elif event is None and record.levelno >= logging.WARNING:
            line = f"{self.prefix}  ! {record.getMessage()}"
        if line:
            print(line, file=sys.stderr, flush=True)

    def _event_line(self, event: dg.DagsterEvent) -> str:
        data = event.event_specific_data
        if event.event_type_value == "STEP_SUCCESS":
            if event.step_key in self.check_steps:
                return ""
            seconds = getattr(data, "duration_ms", 0.0) / 1000
            return f"{self.prefix}  done {event.step_key} ({seconds:.1f}s)"
        if event.event_type_value == "STEP_FAILURE":
            error = getattr(data, "error", None)
            message = error.message.strip().splitlines()[-1] if error is not None else ""
            return f"{self.prefix}  FAILED {event.step_key}: {message}"
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
