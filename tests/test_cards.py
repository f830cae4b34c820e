"""Task cards: the shipped cards are valid and leak no test queries; bad cards fail loudly."""

from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hydra_core.data.card_schema import (
    GENERIC_CARD_NAME,
    MAX_EXAMPLE_CHARS,
    MAX_TEXT_CHARS,
    TEXT_FIELDS,
    is_path_source,
)
from hydra_core.data.cards import (
    TaskCard,
    find_card,
    generic_card,
    load_card,
    load_cards,
    write_card,
)
from hydra_core.errors import HydraInputError
from hydra_core.settings import PROJECT_ROOT, load_settings

CARDS_DIR = PROJECT_ROOT / "cards"
SHIPPED = ("scifact", "nfcorpus", "cranfield", "cacm", "vaswani", "med", "time", "adi", "lisa")
SOURCES = {
    "scifact": "beir/scifact",
    "nfcorpus": "beir/nfcorpus",
    **{name: name for name in SHIPPED[2:]},
}

VALID: dict[str, Any] = {
    "name": "toy",
    "description": "A toy task for tests.",
    "relevance": "Documents about the query topic.",
    "domain": "testing",
    "query_type": "keyword query",
    "example_queries": ["first query", "second query"],
    "example_documents": ["a document"],
    "source": "beir/toy",
}


def _dump(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _write(tmp_path: Path, text: str | bytes, name: str = "card.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _card_file(tmp_path: Path, filename: str = "card.yaml", /, **changes: Any) -> Path:
    data = {**VALID, **changes}
    return _write(tmp_path, _dump({k: v for k, v in data.items() if v is not DROP}), filename)


DROP = object()


def _fails(path: Path, field: str | None, line: int | None = None) -> HydraInputError:
    """Load ``path`` expecting an error that names the file and (if given) the field and line."""
    with pytest.raises(HydraInputError) as info:
        load_card(path)
    err = info.value
    message = str(err)
    assert str(path) in message
    assert err.path == path
    if field is not None:
        assert err.field == field
        assert repr(field) in message
    if line is not None:
        assert err.line == line
        assert f"{path}:{line}" in message
    return err


# ---------------------------------------------------------------------------------------------
# Shipped cards


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_card_loads(name: str) -> None:
    card = load_card(CARDS_DIR / f"{name}.yaml")
    assert card.name == name
    assert card.source == SOURCES[name]
    assert card.resolved_source_dir() is None  # ir-datasets ids are resolved by the data loader
    assert card.card_path == (CARDS_DIR / f"{name}.yaml").absolute()
    assert 3 <= len(card.example_queries) <= 5
    assert 3 <= len(card.example_documents) <= 5
    assert all(len(doc) <= 320 for doc in card.example_documents)
    assert list(card.text_fields()) == list(TEXT_FIELDS)
    assert all(card.text_fields().values())


def test_load_cards_reads_the_whole_folder_sorted() -> None:
    cards = load_cards(CARDS_DIR)
    assert [c.name for c in cards] == sorted(SHIPPED)
    assert len({c.description for c in cards}) == len(cards)


def _data_dir(name: str) -> Path:
    data_dir = load_settings().data_dir
    if data_dir is None or not (data_dir / name / "queries.jsonl").is_file():
        pytest.fail(f"dataset {name} is missing: set HYDRA_DATA_DIR to ../shared/data")
    return data_dir / name


def _test_query_texts(folder: Path) -> set[str]:
    with (folder / "qrels" / "test.tsv").open(encoding="utf-8") as handle:
        rows = csv.reader(handle, delimiter="\t")
        next(rows)
        test_ids = {row[0] for row in rows}
    texts: set[str] = set()
    with (folder / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            query = json.loads(line)
            if query["_id"] in test_ids:
                texts.add(" ".join(query["text"].split()).lower())
    return texts


@pytest.mark.parametrize("name", SHIPPED)
def test_no_example_query_is_a_test_query(name: str) -> None:
    """Card text must not leak evaluation queries (checked for all five, required for two)."""
    test_texts = _test_query_texts(_data_dir(name))
    assert test_texts
    card = load_card(CARDS_DIR / f"{name}.yaml")
    for query in card.example_queries:
        assert " ".join(query.split()).lower() not in test_texts, query


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


@pytest.mark.parametrize("name", SHIPPED)
def test_example_documents_are_corpus_excerpts(name: str) -> None:
    folder = _data_dir(name)
    excerpts = [_tokens(doc) for doc in load_card(CARDS_DIR / f"{name}.yaml").example_documents]
    found = [False] * len(excerpts)
    with (folder / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            for text in (doc["text"], f"{doc['title']} {doc['text']}"):
                tokens = _tokens(text)
                for i, excerpt in enumerate(excerpts):
                    found[i] = found[i] or tokens[: len(excerpt)] == excerpt
    assert all(found)


# ---------------------------------------------------------------------------------------------
# Errors: each names the file and the field


def test_missing_file(tmp_path: Path) -> None:
    err = _fails(tmp_path / "nope.yaml", None)
    assert "not found" in str(err)


def test_folder_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    assert "folder" in str(_fails(tmp_path / "dir.yaml", None))


def test_non_utf8_bytes(tmp_path: Path) -> None:
    text = _dump(VALID).replace("A toy task", "A t\x00oy task")
    raw = text.encode("utf-8").replace(b"\x00", b"\xff")
    path = _write(tmp_path, raw)
    err = _fails(path, "description", line=2)
    offset = raw.index(b"\xff")
    assert "UTF-8" in str(err) and f"offset {offset}" in str(err) and "0xff" in str(err)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path, b"\xef\xbb\xbf" + _dump(VALID).encode("utf-8"))
    assert load_card(path).name == "toy"


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: toy\ndescription: [unclosed\nrelevance: x\n")
    err = _fails(path, None)
    assert "invalid YAML" in str(err) and err.line is not None and err.line >= 2


def test_control_character_reports_line(tmp_path: Path) -> None:
    path = _write(tmp_path, _dump(VALID).replace("testing", "test\x01ing"))
    err = _fails(path, None, line=4)
    assert "not allowed" in str(err)


def test_unsafe_yaml_tag_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: !!python/object/apply:os.system ['echo hi']\n")
    err = _fails(path, None, line=1)
    assert "invalid YAML" in str(err)


@pytest.mark.parametrize(
    ("text", "got"),
    [("- a\n- b\n", "a list"), ("just text\n", "got text"), ("", "an empty file")],
)
def test_yaml_that_is_not_a_mapping(tmp_path: Path, text: str, got: str) -> None:
    err = _fails(_write(tmp_path, text), None)
    assert "mapping" in str(err) and got in str(err)


@pytest.mark.parametrize("field", ["name", "description", "example_queries", "source"])
def test_missing_field(tmp_path: Path, field: str) -> None:
    err = _fails(_card_file(tmp_path, **{field: DROP}), field)
    assert "missing" in str(err)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("description", "", "empty"),
        ("relevance", "   \n ", "empty"),
        ("domain", None, "no value"),
        ("example_queries", [], "at least 1"),
        ("example_documents", ["ok", "  "], "item 2 must not be empty"),
        ("source", "", "must not be empty"),
    ],
)
def test_empty_field(tmp_path: Path, field: str, value: object, words: str) -> None:
    err = _fails(_card_file(tmp_path, **{field: value}), field, line=None)
    assert words in str(err)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("name", 123, "must be text, got a number"),
        ("description", ["a", "b"], "must be text, got a list"),
        ("query_type", True, "got a boolean"),
        ("example_queries", "one query", "must be a list of strings"),
        ("example_documents", ["fine", 7], "item 2 must be text, got a number"),
        ("domain", {"a": 1}, "got a mapping"),
    ],
)
def test_wrong_type(tmp_path: Path, field: str, value: object, words: str) -> None:
    err = _fails(_card_file(tmp_path, **{field: value}), field)
    assert words in str(err)


def test_field_lines_come_from_the_yaml(tmp_path: Path) -> None:
    path = _card_file(tmp_path, example_queries=["ok", "ok too", 3])
    line = _dump({**VALID, "example_queries": ["ok", "ok too", 3]}).splitlines().index("- 3") + 1
    _fails(path, "example_queries", line=line)


def test_unknown_field(tmp_path: Path) -> None:
    path = _write(tmp_path, _dump(VALID) + "colour: blue\n")
    err = _fails(path, "colour", line=len(_dump(VALID).splitlines()) + 1)
    assert "unknown field" in str(err) and "description" in str(err)


def test_labels_name_a_training_split_never_test(tmp_path: Path) -> None:
    assert load_card(_card_file(tmp_path, labels="train")).labels == "train"
    assert load_card(_card_file(tmp_path, "plain.yaml")).labels is None
    err = _fails(_card_file(tmp_path, "leak.yaml", labels="test"), "labels")
    assert "kept for evaluation" in str(err)


def test_card_path_cannot_be_set_in_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path, _dump(VALID) + "card_path: /etc/passwd\n")
    _fails(path, "card_path")


def test_duplicate_key(tmp_path: Path) -> None:
    path = _write(tmp_path, _dump(VALID) + "domain: again\n")
    err = _fails(path, "domain", line=len(_dump(VALID).splitlines()) + 1)
    assert "twice" in str(err) and "line 4" in str(err)


def test_non_text_key(tmp_path: Path) -> None:
    path = _write(tmp_path, _dump(VALID) + "12: twelve\n")
    err = _fails(path, "12")
    assert "field names must be text" in str(err)


@pytest.mark.parametrize("bad", ["SciFact", "-x", "has space", "a/b", "x" * 65])
def test_bad_name(tmp_path: Path, bad: str) -> None:
    _fails(_card_file(tmp_path, name=bad), "name", line=1)


def test_reserved_generic_name(tmp_path: Path) -> None:
    err = _fails(_card_file(tmp_path, name=GENERIC_CARD_NAME), "name")
    assert "reserved" in str(err)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("description", "d" * (MAX_TEXT_CHARS + 1), f"is 4,001 characters; the limit is {4_000:,}"),
        ("query_type", "q" * 10_000, "the limit is 4,000"),
        ("example_queries", ["ok", "x" * (MAX_EXAMPLE_CHARS + 5)], "item 2 is 2,005 characters"),
        ("example_documents", [f"doc {i}" for i in range(11)], "11 items; the limit is 10"),
    ],
)
def test_field_over_size_limit(tmp_path: Path, field: str, value: object, words: str) -> None:
    err = _fails(_card_file(tmp_path, **{field: value}), field)
    assert words in str(err)
    assert len(str(err)) < 500


def test_megabyte_description_fails_fast_and_briefly(tmp_path: Path) -> None:
    text = _dump(VALID).replace("A toy task for tests.", "word " * 200_000)
    path = _write(tmp_path, text)
    start = time.perf_counter()
    err = _fails(path, "description", line=2)
    assert time.perf_counter() - start < 0.5
    assert len(str(err)) < 500
    assert "limit" in str(err)


def test_several_problems_are_summarised(tmp_path: Path) -> None:
    err = _fails(_card_file(tmp_path, description="", domain=DROP), "description")
    assert "1 more problem(s) in: domain" in str(err)


def test_missing_path_source(tmp_path: Path) -> None:
    path = _card_file(tmp_path, source="./no-such-folder")
    err = _fails(path, "source", line=len(_dump(VALID).splitlines()))
    assert str(tmp_path / "no-such-folder") in str(err)


def test_path_source_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text("{}\n", encoding="utf-8")
    err = _fails(_card_file(tmp_path, source="./corpus.jsonl"), "source")
    assert "not a folder" in str(err)


def test_dataset_ids_are_not_checked_on_disk(tmp_path: Path) -> None:
    for source in ("beir/does-not-exist", "cranfield", "msmarco-passage/dev/small"):
        assert load_card(_card_file(tmp_path, source=source)).resolved_source_dir() is None


def test_duplicate_names_in_load_cards(tmp_path: Path) -> None:
    first = _card_file(tmp_path, "a.yaml")
    second = _card_file(tmp_path, "b.yml")
    with pytest.raises(HydraInputError) as info:
        load_cards(tmp_path)
    err = info.value
    assert err.field == "name" and err.path == second and err.line == 1
    assert str(first) in str(err) and str(second) in str(err) and "'toy'" in str(err)


def test_load_cards_from_a_list_and_from_an_empty_folder(tmp_path: Path) -> None:
    one = _card_file(tmp_path, "one.yaml", name="one")
    two = _card_file(tmp_path, "two.yaml", name="two")
    assert [c.name for c in load_cards([two, str(one), two])] == ["two", "one"]
    assert [c.name for c in load_cards(one)] == ["one"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HydraInputError, match="no \\*.yaml"):
        load_cards(empty)


# ---------------------------------------------------------------------------------------------
# Round trip, lookup, sources, generic card


@pytest.mark.parametrize("name", SHIPPED)
def test_round_trip_shipped(tmp_path: Path, name: str) -> None:
    card = load_card(CARDS_DIR / f"{name}.yaml")
    assert "card_path" not in card.to_yaml()
    write_card(card, tmp_path / "copy.yaml")
    copy = load_card(tmp_path / "copy.yaml")
    assert copy == card and hash(copy) == hash(card)
    assert copy.model_dump() == card.model_dump()
    assert copy.card_path == tmp_path / "copy.yaml"


_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),
    min_size=1,
    max_size=40,
).filter(lambda s: bool(s.strip()))


@settings(max_examples=100, deadline=None)
@given(description=_text, queries=st.lists(_text, min_size=1, max_size=3), domain=_text)
def test_round_trip_arbitrary_text(description: str, queries: list[str], domain: str) -> None:
    """YAML-looking text ('yes', 'null', '- x', '#', newlines, unicode) survives a round trip."""
    card = TaskCard(
        **{**VALID, "description": description, "domain": domain, "example_queries": queries}
    )
    data = yaml.safe_load(card.to_yaml())
    assert TaskCard.model_validate(data) == card


def test_write_card_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "toy.yaml"
    write_card(TaskCard(**VALID), path)
    write_card(TaskCard(**{**VALID, "domain": "changed"}), path)
    assert load_card(path).domain == "changed"
    assert [p.name for p in path.parent.iterdir()] == ["toy.yaml"]


def test_find_card_by_name_and_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_CARDS_DIR", str(CARDS_DIR))
    assert find_card("scifact", CARDS_DIR).name == "scifact"
    assert find_card("cacm").name == "cacm"  # default folder from settings
    assert find_card(str(CARDS_DIR / "vaswani.yaml")).name == "vaswani"
    yml = _card_file(tmp_path, "other.yml", name="other")
    assert find_card("other", tmp_path).card_path == yml
    assert find_card(str(yml)).name == "other"
    _card_file(tmp_path, "file-name.yaml", name="field-name")
    assert find_card("field-name", tmp_path).name == "field-name"
    assert find_card(GENERIC_CARD_NAME, tmp_path) == generic_card()


def test_find_card_unknown_lists_names(tmp_path: Path) -> None:
    with pytest.raises(HydraInputError) as info:
        find_card("scifakt", CARDS_DIR)
    assert "'scifakt'" in str(info.value)
    assert all(name in str(info.value) for name in (*SHIPPED, GENERIC_CARD_NAME))
    with pytest.raises(HydraInputError, match="not found"):
        find_card(str(tmp_path / "missing.yaml"))
    with pytest.raises(HydraInputError, match="does not exist"):
        find_card("x", tmp_path / "nowhere")


def test_relative_path_source_resolves_from_the_card_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data" / "My Set"
    data.mkdir(parents=True)
    cards = tmp_path / "cards"
    cards.mkdir()
    monkeypatch.chdir(tmp_path / "data")  # the working directory must not matter
    card = load_card(_card_file(cards, source="../data/My Set"))
    assert card.resolved_source_dir() == data.resolve()
    beside = load_card(_card_file(tmp_path / "data", source="./My Set"))
    assert beside.resolved_source_dir() == data.resolve()
    absolute = load_card(_card_file(cards, source=str(data)))
    assert absolute.resolved_source_dir() == data.resolve()
    in_code = TaskCard(**{**VALID, "source": "./My Set"})
    assert in_code.resolved_source_dir() == data.resolve()


@pytest.mark.parametrize(
    ("source", "is_path"),
    [
        ("beir/scifact", False),
        ("cranfield", False),
        ("beir/cqadupstack/android", False),
        ("./data", True),
        ("../data/x", True),
        ("/abs/folder", True),
        ("~/data", True),
        ("My Data", True),
        ("", False),
    ],
)
def test_is_path_source(source: str, is_path: bool) -> None:
    assert is_path_source(source) is is_path


def test_generic_card_is_valid_and_distinct() -> None:
    card = generic_card()
    assert card.name == GENERIC_CARD_NAME and card.domain == "general"
    assert card.source == "" and card.resolved_source_dir() is None
    assert TaskCard.model_validate(card.model_dump()) == card
    shipped = load_cards(CARDS_DIR)
    assert all(card != other for other in shipped)
    for field in TEXT_FIELDS:
        assert all(card.text_fields()[field] != other.text_fields()[field] for other in shipped)


def test_generic_card_is_never_written(tmp_path: Path) -> None:
    with pytest.raises(HydraInputError) as info:
        write_card(generic_card(), tmp_path / "g.yaml")
    assert info.value.field == "source"
    assert not (tmp_path / "g.yaml").exists()


def test_card_is_frozen_strict_and_hashable_by_content(tmp_path: Path) -> None:
    card = TaskCard(**VALID)
    with pytest.raises(ValueError):
        card.name = "other"  # type: ignore[misc]
    assert load_card(_card_file(tmp_path)) == card
    assert len({card, load_card(tmp_path / "card.yaml")}) == 1
    padded = TaskCard(**{**VALID, "description": "  padded \n"})
    assert padded.description == "padded"
