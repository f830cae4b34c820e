"""A card's YAML, parsed and validated, with every failure mapped to the card file, the field
and (when the YAML says) the line. Card text is data only: it is parsed with PyYAML's safe
loader and never evaluated."""

from __future__ import annotations

import codecs
import re
import reprlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)
from pydantic_core import ErrorDetails

from hydra_core.data.card_schema import (
    CARD_FIELDS,
    FROM_FILE,
    TaskCard,
)
from hydra_core.errors import HydraInputError

_TOP_LEVEL_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)[ \t]*:(?:[ \t]|$)")


def parse_card(raw: bytes, card_file: Path) -> TaskCard:
    """Parse and validate a card's bytes as if read from ``card_file``, which need not exist.

    For cards that arrive without a file (``PUT /tasks/{name}`` of ``hydra serve``): a
    relative source resolves against ``card_file``'s folder, and errors carry the line and
    field. The caller bounds the size (:data:`MAX_CARD_FILE_BYTES`).
    """
    text = _decode_utf8(raw, card_file)
    node, data = _parse_yaml(text, card_file)
    if not isinstance(data, dict):
        got = "an empty file" if data is None else _describe_type(data)
        raise HydraInputError(
            f"a card must be a YAML mapping of fields ({', '.join(CARD_FIELDS)}), got {got}",
            path=card_file,
            line=_node_line(node),
        )
    _check_keys(data, node, card_file)
    try:
        card = TaskCard.model_validate({**data, "card_path": card_file}, context={FROM_FILE: True})
    except ValidationError as exc:
        raise _validation_error(exc, node, card_file) from None
    _check_source_exists(card, node, card_file)
    return card


def _decode_utf8(raw: bytes, card_file: Path) -> str:
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = bom + exc.start
        prefix = raw[:offset].decode("utf-8", errors="replace")
        key = _key_before_end(prefix)
        raise HydraInputError(
            f"card file is not valid UTF-8: byte 0x{raw[offset : offset + 1].hex()} at byte "
            f"offset {offset} ({exc.reason}); save the file as UTF-8",
            path=card_file,
            field=key,
            line=prefix.count("\n") + 1,
        ) from None


def _parse_yaml(text: str, card_file: Path) -> tuple[yaml.Node | None, object]:
    """Parse with PyYAML's SafeLoader, keeping the node tree for line numbers.

    This is exactly what ``yaml.safe_load`` does internally (get_single_node, then
    construct_document), done in two steps so one parse gives both data and marks.
    """
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # its reader rejects control characters right here
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = "; ".join(str(p) for p in (exc.context, exc.problem) if p) or "cannot parse"
        raise HydraInputError(
            f"invalid YAML: {problem}",
            path=card_file,
            line=mark.line + 1 if mark is not None else None,
        ) from None
    except yaml.reader.ReaderError as exc:
        raise HydraInputError(
            f"invalid YAML: character {exc.character!r} is not allowed in a YAML file",
            path=card_file,
            line=text.count("\n", 0, exc.position) + 1,
        ) from None
    except yaml.YAMLError as exc:
        raise HydraInputError(f"invalid YAML: {exc}", path=card_file) from None
    except RecursionError:
        raise HydraInputError("invalid YAML: nested too deeply", path=card_file) from None
    finally:
        if loader is not None:
            loader.dispose()
    return node, data


def _check_keys(data: dict[Any, Any], node: yaml.Node | None, card_file: Path) -> None:
    """Catch what pydantic cannot see: non-text keys, repeated keys, a smuggled card_path."""
    for key in data:
        if not isinstance(key, str):
            raise HydraInputError(
                f"field names must be text, got {_describe_type(key)} {_preview(key)}",
                path=card_file,
                field=_preview(key),
            )
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in first_line:
                raise HydraInputError(
                    f"field appears twice (first on line {first_line[key_node.value]})",
                    path=card_file,
                    field=key_node.value,
                    line=line,
                )
            first_line[key_node.value] = line
    if "card_path" in data:
        raise HydraInputError(
            "card_path is set by the loader and cannot appear in a card file",
            path=card_file,
            field="card_path",
            line=_field_line(node, ("card_path",)),
        )


def _check_source_exists(card: TaskCard, node: yaml.Node | None, card_file: Path) -> None:
    source_dir = card.resolved_source_dir()
    if source_dir is None:
        return
    line = _field_line(node, ("source",))
    if not source_dir.exists():
        raise HydraInputError(
            f"source folder {source_dir} does not exist (relative paths are resolved from the "
            "card file's folder; ir-datasets ids look like 'beir/scifact')",
            path=card_file,
            field="source",
            line=line,
        )
    if not source_dir.is_dir():
        raise HydraInputError(
            f"source {source_dir} is not a folder; a path source must be a BEIR folder",
            path=card_file,
            field="source",
            line=line,
        )


def _validation_error(exc: ValidationError, node: yaml.Node | None, card_file: Path) -> Exception:
    """Turn pydantic's errors into one short HydraInputError (never echoing a huge input)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    field = str(first["loc"][0]) if first["loc"] else None
    problem = _describe_error(first)
    others = sorted({str(e["loc"][0]) for e in errors[1:] if e["loc"]} - {field or ""})
    if len(errors) > 1:
        problem += f" (and {len(errors) - 1} more problem(s)"
        problem += f" in: {', '.join(others)})" if others else ")"
    return HydraInputError(
        problem, path=card_file, field=field, line=_field_line(node, first["loc"])
    )


def _describe_error(err: ErrorDetails) -> str:
    loc = err["loc"]
    kind = err["type"]
    value = err.get("input")
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    item = f"item {loc[1] + 1} " if len(loc) > 1 and isinstance(loc[1], int) else ""
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return f"unknown field; the fields of a card are: {', '.join(CARD_FIELDS)}"
    if kind == "string_too_short":
        return f"{item}must not be empty"
    if kind == "string_too_long":
        size = f"is {len(value):,} characters" if isinstance(value, str) else "is too long"
        return f"{item}{size}; the limit is {ctx.get('max_length', 0):,}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length')}"
    if kind == "too_long":
        return f"has {ctx.get('actual_length')} items; the limit is {ctx.get('max_length')}"
    if kind == "string_type":
        if value is None:
            return f"{item}has no value; it must be non-empty text"
        return f"{item}must be text, got {_describe_type(value)} {_preview(value)}"
    if kind == "list_type":
        return f"must be a list of strings, got {_describe_type(value)}"
    if kind == "string_pattern_mismatch":
        return (
            "must be a lower-case slug of letters, digits, '-' and '_' starting with a letter "
            f"or digit (like 'scifact'), got {_preview(value)}"
        )
    if kind == "source_empty":
        return "must not be empty: give an ir-datasets id (e.g. 'beir/scifact') or a BEIR folder"
    return f"{item}{err['msg']}"


def _describe_type(value: object) -> str:
    if value is None:
        return "nothing (an empty value)"
    names = {
        str: "text",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "a mapping",
    }
    for kind, label in names.items():
        if type(value) is kind:
            return label
    return f"a {type(value).__name__}"


_PREVIEW = reprlib.Repr()
_PREVIEW.maxlevel, _PREVIEW.maxlist, _PREVIEW.maxdict = 2, 3, 3
_PREVIEW.maxstring = _PREVIEW.maxother = 40


def _preview(value: object, limit: int = 40) -> str:
    """A bounded repr: a YAML alias bomb expands to a value whose full repr is gigabytes."""
    text = _PREVIEW.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _node_line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _field_line(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """Line of a field (or of one list item) in the card, from the composed YAML nodes."""
    if not isinstance(node, yaml.MappingNode) or not loc:
        return None
    line: int | None = None
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.value != loc[0]:
            continue
        line = key_node.start_mark.line + 1
        index = loc[1] if len(loc) > 1 else None
        if (
            isinstance(index, int)
            and isinstance(value_node, yaml.SequenceNode)
            and 0 <= index < len(value_node.value)
        ):
            line = value_node.value[index].start_mark.line + 1
    return line


def _top_level_keys(text: str) -> list[tuple[str, int, int]]:
    """(key, line, bytes) for each top-level ``key:`` line, by a cheap scan (no YAML parse)."""
    regions: list[tuple[str, int, int]] = []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        match = _TOP_LEVEL_KEY.match(line)
        if match:
            regions.append((match.group(1), number, 0))
        if regions:
            key, start, nbytes = regions[-1]
            regions[-1] = (key, start, nbytes + len(line.encode("utf-8", errors="replace")))
    return regions


def largest_key(text: str) -> tuple[str | None, int | None, int]:
    regions = _top_level_keys(text)
    if not regions:
        return None, None, 0
    return max(regions, key=lambda region: region[2])


def _key_before_end(text: str) -> str | None:
    regions = _top_level_keys(text)
    return regions[-1][0] if regions else None


def key_line_in_file(card_file: Path, key: str) -> int | None:
    try:
        text = card_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None
    return next((line for name, line, _ in _top_level_keys(text) if name == key), None)
