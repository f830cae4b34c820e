"""Task cards: the YAML description of a retrieval task that the hypernetwork compiles into a head.

A card is user input, so loading one is strict and loud: every failure is a
:class:`~hydra_core.errors.HydraInputError` naming the card file, the field and (when the YAML
says) the line (``card_yaml``). The schema is ``card_schema``; this module finds, loads and
writes card files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from hydra_core.atomic import write_text_atomic
from hydra_core.data.card_schema import (
    CARD_SUFFIXES,
    GENERIC_CARD_NAME,
    TaskCard,
    char_limit,
)
from hydra_core.data.card_yaml import key_line_in_file, largest_key, parse_card
from hydra_core.errors import HydraInputError
from hydra_core.settings import load_settings

log = logging.getLogger(__name__)

# The largest legitimate card is ~60k characters; anything far bigger is rejected before YAML
# parsing so that a pasted 1 MB field fails in microseconds instead of after a slow parse.
MAX_CARD_FILE_BYTES = 512 * 1024
_MAX_READ_BYTES = 8 * 1024 * 1024


def load_card(path: Path | str) -> TaskCard:
    """Read, parse and validate one card file; every problem names the file and field."""
    card_file = Path(path).expanduser().absolute()
    return parse_card(_read_card_bytes(card_file), card_file)


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
                line=key_line_in_file(absolute, "name"),
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
        key, line, nbytes = largest_key(raw.decode("utf-8", errors="replace"))
        detail = ""
        if key is not None:
            limit = char_limit(key)
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
