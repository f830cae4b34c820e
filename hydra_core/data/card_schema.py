"""The task card's schema: its fields, their limits and rules, and its YAML form.

``source`` says where the task's data lives: either an ir-datasets id (``beir/scifact``,
``cranfield``), resolved elsewhere, or a path to a BEIR folder. Paths must look like paths
(absolute, or starting with ``./``, ``../`` or ``~``) and are resolved relative to the card file;
anything shaped like a lower-case ir-datasets id is treated as an id and not checked on disk.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
MAX_NAME_CHARS = 64
MAX_TEXT_CHARS = 4_000
MAX_EXAMPLE_CHARS = 2_000
MAX_EXAMPLES = 10
MAX_SOURCE_CHARS = 1_000

GENERIC_CARD_NAME = "hydra-generic"
TEXT_FIELDS: tuple[str, ...] = ("description", "relevance", "domain", "query_type")
CARD_SUFFIXES: tuple[str, ...] = (".yaml", ".yml")

# Validation context flag: set by load_card so file-only rules (non-empty source, reserved
# name) apply to card files but not to cards built in code such as generic_card().
FROM_FILE = "hydra_card_from_file"
_IR_DATASETS_ID = re.compile(r"[a-z0-9][a-z0-9_.-]*(?:/[a-z0-9][a-z0-9_.-]*)*")

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
    return isinstance(info.context, dict) and bool(info.context.get(FROM_FILE))


def char_limit(field: str) -> int | None:
    limits = {"name": MAX_NAME_CHARS, "source": MAX_SOURCE_CHARS}
    limits.update(dict.fromkeys(TEXT_FIELDS, MAX_TEXT_CHARS))
    limits.update(dict.fromkeys(("example_queries", "example_documents"), MAX_EXAMPLE_CHARS))
    return limits.get(field)
