"""Task cards: the YAML description of a retrieval task that the hypernetwork compiles into a head.

A card is user input, so loading one is strict and loud: every failure is a
:class:`~hydra_core.errors.HydraInputError` naming the card file, the field and (when the YAML
says) the line. Card text is data only: it is parsed with PyYAML's safe loader and never evaluated.

``source`` says where the task's data lives: either an ir-datasets id (``beir/scifact``,
``cranfield``), resolved elsewhere, or a path to a BEIR folder. Paths must look like paths
(absolute, or starting with ``./``, ``../`` or ``~``) and are resolved relative to the card file;
anything shaped like a lower-case ir-datasets id is treated as an id and not checked on disk.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
import reprlib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from hydra_core.atomic import write_text_atomic
from hydra_core.errors import HydraInputError
from hydra_core.settings import load_settings

log = logging.getLogger(__name__)

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
MAX_NAME_CHARS = 64
MAX_TEXT_CHARS = 4_000
MAX_EXAMPLE_CHARS = 2_000
MAX_EXAMPLES = 10
MAX_SOURCE_CHARS = 1_000
# The largest legitimate card is ~60k characters; anything far bigger is rejected before YAML
# parsing so that a pasted 1 MB field fails in microseconds instead of after a slow parse.
MAX_CARD_FILE_BYTES = 512 * 1024
_MAX_READ_BYTES = 8 * 1024 * 1024

GENERIC_CARD_NAME = "hydra-generic"
TEXT_FIELDS: tuple[str, ...] = ("description", "relevance", "domain", "query_type")
CARD_SUFFIXES: tuple[str, ...] = (".yaml", ".yml")

# Validation context flag: set by load_card so file-only rules (non-empty source, reserved
# name) apply to card files but not to cards built in code such as generic_card().
_FROM_FILE = "hydra_card_from_file"
_IR_DATASETS_ID = re.compile(r"[a-z0-9][a-z0-9_.-]*(?:/[a-z0-9][a-z0-9_.-]*)*")
_TOP_LEVEL_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)[ \t]*:(?:[ \t]|$)")

_Name = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=MAX_NAME_CHARS, pattern=NAME_PATTERN),
]
_Text = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_TEXT_CHARS)]
_Example = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=MAX_EXAMPLE_CHARS)
]
_Source = Annotated[str, StringConstraints(strict=True, max_length=MAX_SOURCE_CHARS)]
_Split = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=MAX_NAME_CHARS, pattern=NAME_PATTERN),
]
EVALUATION_SPLIT = "test"


def is_path_source(source: str) -> bool:
    """Tell a filesystem path from an ir-datasets id, by shape only (never by looking at disk).

    Deciding by shape keeps a card's meaning independent of the machine it is loaded on.
    """
    if not source:
        return False
    if source in (".", "..") or source.startswith(("/", "./", "../", "~")) or "\\" in source:
        return True
    return Path(source).is_absolute() or _IR_DATASETS_ID.fullmatch(source) is None


class TaskCard(BaseModel):
    """One retrieval task, described in prose plus a few examples, for the hypernetwork.

    Equality and hashing are over the card's content; ``card_path`` is provenance only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: _Name
    description: _Text
    relevance: _Text
    domain: _Text
    query_type: _Text
    example_queries: list[_Example] = Field(min_length=1, max_length=MAX_EXAMPLES)
    example_documents: list[_Example] = Field(min_length=1, max_length=MAX_EXAMPLES)
    source: _Source
    labels: _Split | None = None
    """A split whose qrels may teach (e.g. ``train``): ``hydra train --labels`` adds them as a
    gold teacher, and ``hydra eval`` fits the ``supervised-head`` reference on them."""
    card_path: Path | None = Field(default=None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name_not_reserved_in_files(cls, value: str, info: ValidationInfo) -> str:
        """Keep ``hydra-generic`` unambiguous: it always means the built-in generic card."""
        if value == GENERIC_CARD_NAME and _from_file(info):
            raise PydanticCustomError(
                "reserved_name",
                "'{name}' is reserved for the built-in generic card",
                {"name": value},
            )
        return value

    @field_validator("source")
    @classmethod
    def _source_required_in_files(cls, value: str, info: ValidationInfo) -> str:
        """A card file must say where its data is; only in-code cards may leave it empty."""
        if not value and _from_file(info):
            raise PydanticCustomError("source_empty", "source is empty", {})
        return value

    @field_validator("labels")
    @classmethod
    def _labels_never_test(cls, value: str | None) -> str | None:
        """Test labels score the results; training on them would make the scores meaningless."""
        if value == EVALUATION_SPLIT:
            raise PydanticCustomError(
                "labels_test",
                "'{split}' labels are kept for evaluation; name a training split such as 'train'",
                {"split": value},
            )
        return value

    def _content(self) -> tuple[object, ...]:
        return (
            self.name,
            self.description,
            self.relevance,
            self.domain,
            self.query_type,
            tuple(self.example_queries),
            tuple(self.example_documents),
            self.source,
            self.labels,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskCard):
            return NotImplemented
        return self._content() == other._content()

    def __hash__(self) -> int:
        return hash(self._content())

    def text_fields(self) -> dict[str, str]:
        """The prose the encoder embeds to describe the task, in a fixed order."""
        return {field: getattr(self, field) for field in TEXT_FIELDS}

    def resolved_source_dir(self) -> Path | None:
        """Absolute BEIR folder for path sources (relative to the card file); None for ids.

        A card built in code has no file, so its relative paths are taken from the working dir.
        """
        if not is_path_source(self.source):
            return None
        path = Path(self.source).expanduser()
        if not path.is_absolute():
            base = self.card_path.parent if self.card_path is not None else Path.cwd()
            path = base / path
        return path.resolve()

    def to_yaml(self) -> str:
        """Card as YAML that :func:`load_card` reads back to an equal card."""
        data = self.model_dump(mode="json", exclude_none=True)
        return yaml.dump(
            data,
            Dumper=_CardDumper,
            sort_keys=False,
            allow_unicode=True,
            width=100,
            default_flow_style=False,
        )


CARD_FIELDS: tuple[str, ...] = tuple(f for f in TaskCard.model_fields if f != "card_path")


class _CardDumper(yaml.SafeDumper):
    """Safe dumper that writes multi-line strings as readable ``|`` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # PyYAML falls back to a quoted style by itself when a block scalar cannot hold the value,
    # but it writes YAML 1.1's extra line breaks (NEL, LS, PS) and CR raw in plain and block
    # scalars, where a reader folds them; only double quotes (escaped) keep them intact.
    if any(ch in value for ch in "\r\x85\u2028\u2029"):
        style: str | None = '"'
    else:
        style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_CardDumper.add_representer(str, _represent_str)


def _from_file(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get(_FROM_FILE))


# ---------------------------------------------------------------------------------------------
# Loading


def load_card(path: Path | str) -> TaskCard:
    """Read, parse and validate one card file; every problem names the file and field."""
    card_file = Path(path).expanduser().absolute()
    return parse_card(_read_card_bytes(card_file), card_file)


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
        card = TaskCard.model_validate({**data, "card_path": card_file}, context={_FROM_FILE: True})
    except ValidationError as exc:
        raise _validation_error(exc, node, card_file) from None
    _check_source_exists(card, node, card_file)
    return card


def load_cards(paths_or_dir: Path | str | Sequence[Path | str]) -> list[TaskCard]:
    """Load a folder of cards (all ``*.yaml``/``*.yml``, sorted) or a list of card files.

    Task names must be unique across the set, because the name keys heads, caches and results.
    """
    if isinstance(paths_or_dir, str | Path):
        single = Path(paths_or_dir).expanduser()
        if single.is_dir():
            files = _card_files(single)
            if not files:
                raise HydraInputError("no *.yaml or *.yml card files in this folder", path=single)
        else:
            files = [single]
    else:
        files = [Path(p).expanduser() for p in paths_or_dir]
    cards: list[TaskCard] = []
    seen_files: set[Path] = set()
    by_name: dict[str, TaskCard] = {}
    for file in files:
        absolute = file.absolute()
        if absolute in seen_files:
            continue
        seen_files.add(absolute)
        card = load_card(absolute)
        first = by_name.get(card.name)
        if first is not None:
            raise HydraInputError(
                f"duplicate task name {card.name!r}: already used by {first.card_path}",
                path=absolute,
                field="name",
                line=_key_line_in_file(absolute, "name"),
            )
        by_name[card.name] = card
        cards.append(card)
    return cards


def loadable_cards(directory: Path) -> list[TaskCard]:
    """The folder's cards that load, each one that does not named in a warning.

    For what only borrows other tasks' cards (the shuffled-card ablation): a broken card
    elsewhere in the folder must not fail a command about another task.
    """
    cards: dict[str, TaskCard] = {}
    for file in _card_files(directory) if directory.is_dir() else []:
        try:
            card = load_card(file)
        except HydraInputError as error:
            log.warning("skipping a card that does not load: %s", error)
            continue
        first = cards.setdefault(card.name, card)
        if first is not card:
            log.warning("skipping %s: task name %r is %s's", file, card.name, first.card_path)
    return list(cards.values())


def find_card(name_or_path: str, cards_dir: Path | None = None) -> TaskCard:
    """Resolve what a user typed: a task name from the cards folder, or a card file path.

    ``hydra-generic`` always means :func:`generic_card`. A name is looked up as
    ``<cards_dir>/<name>.yaml`` (or ``.yml``), then among the ``name`` fields of that folder.
    """
    wanted = name_or_path.strip()
    if wanted == GENERIC_CARD_NAME:
        return generic_card()
    if _looks_like_file(wanted):
        return load_card(wanted)
    directory = Path(cards_dir if cards_dir is not None else load_settings().cards_dir).expanduser()
    for suffix in CARD_SUFFIXES:
        candidate = directory / f"{wanted}{suffix}"
        if candidate.is_file():
            return load_card(candidate)
    available = {GENERIC_CARD_NAME}
    files = _card_files(directory) if directory.is_dir() else []
    for file in files:
        available.add(file.stem)
        try:
            card = load_card(file)
        except HydraInputError:
            continue  # a broken neighbour must not hide the "unknown name" answer
        if card.name == wanted:
            return card
        available.add(card.name)
    where = f"cards folder {directory}" + ("" if directory.is_dir() else " (does not exist)")
    raise HydraInputError(
        f"unknown task card {wanted!r} in {where}; available: {', '.join(sorted(available))}",
        path=directory,
    )


def generic_card() -> TaskCard:
    """A card that says nothing task-specific: the ``hydra-generic`` ablation.

    Its empty ``source`` is allowed only because it is built in code; it is never written out.
    """
    return TaskCard(
        name=GENERIC_CARD_NAME,
        description="Search a collection of text documents for the ones that match a query.",
        relevance="A document is relevant if it contains information that the query asks for.",
        domain="general",
        query_type="query",
        example_queries=["information about a topic"],
        example_documents=["A short text that gives some information about a topic."],
        source="",
    )


def write_card(card: TaskCard, path: Path) -> None:
    """Write ``card`` as YAML atomically, so a reader never sees half a card."""
    if not card.source:
        raise HydraInputError(
            "a card file needs a non-empty source (an ir-datasets id or a BEIR folder path)",
            path=path,
            field="source",
        )
    write_text_atomic(path, card.to_yaml())


# ---------------------------------------------------------------------------------------------
# Helpers: reading and parsing


def _read_card_bytes(card_file: Path) -> bytes:
    try:
        with card_file.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            raw = handle.read(min(size, _MAX_READ_BYTES) + 1)
    except FileNotFoundError:
        raise HydraInputError("card file not found", path=card_file) from None
    except IsADirectoryError:
        raise HydraInputError("is a folder, not a card file", path=card_file) from None
    except OSError as exc:
        raise HydraInputError(f"cannot read card file: {exc.strerror}", path=card_file) from None
    size = max(size, len(raw))
    if size > MAX_CARD_FILE_BYTES:
        key, line, nbytes = _largest_key(raw.decode("utf-8", errors="replace"))
        detail = ""
        if key is not None:
            limit = _char_limit(key)
            detail = f"; most of it ({nbytes:,} bytes) is in this field" + (
                f", whose limit is {limit:,} characters" if limit else ""
            )
        raise HydraInputError(
            f"card file is {size:,} bytes, over the {MAX_CARD_FILE_BYTES:,}-byte limit{detail}",
            path=card_file,
            field=key,
            line=line,
        )
    return raw


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


def _largest_key(text: str) -> tuple[str | None, int | None, int]:
    regions = _top_level_keys(text)
    if not regions:
        return None, None, 0
    return max(regions, key=lambda region: region[2])


def _key_before_end(text: str) -> str | None:
    regions = _top_level_keys(text)
    return regions[-1][0] if regions else None


def _key_line_in_file(card_file: Path, key: str) -> int | None:
    try:
        text = card_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None
    return next((line for name, line, _ in _top_level_keys(text) if name == key), None)


def _char_limit(field: str) -> int | None:
    limits = {"name": MAX_NAME_CHARS, "source": MAX_SOURCE_CHARS}
    limits.update(dict.fromkeys(TEXT_FIELDS, MAX_TEXT_CHARS))
    limits.update(dict.fromkeys(("example_queries", "example_documents"), MAX_EXAMPLE_CHARS))
    return limits.get(field)


def _card_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.iterdir()
        if p.suffix.lower() in CARD_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )


def _looks_like_file(text: str) -> bool:
    return (
        text.lower().endswith(CARD_SUFFIXES)
        or "/" in text
        or os.sep in text
        or text.startswith(("~", "."))
    )
