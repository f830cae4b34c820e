"""Errors that tell the user exactly which file, line or field is wrong."""

from __future__ import annotations

from pathlib import Path


class HydraInputError(ValueError):
    """Bad user input: a card, corpus, qrels file or checkpoint that cannot be used.

    The message always starts with the location (``file:line`` or ``file: field``)
    so that a user can jump straight to the problem.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: Path | str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.line = line
        self.field = field
        self.problem = problem
        where = str(path) if path is not None else ""
        if line is not None:
            where += f":{line}"
        if field is not None:
            where += f" (field {field!r})" if where else f"field {field!r}"
        super().__init__(f"{where}: {problem}" if where else problem)
