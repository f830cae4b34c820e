"""Task loading on the real datasets, every malformed-input error, and ir_datasets ids offline."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest

from hydra_core.data.beir_folder import load_beir_folder
from hydra_core.data.ir_datasets_source import (
    dataset_name,
    ir_datasets_split_ids,
    load_ir_datasets,
    parse_ir_datasets_id,
)
from hydra_core.data.retrieval_task import RetrievalTask, UnknownSplitError
from hydra_core.data.tasks import load_task
from hydra_core.errors import HydraInputError

# ----------------------------------------------------------------------------- real data


@dataclass(frozen=True)
class Expected:
    """Counts from shared/data/README.md: split -> (qrels rows, judged queries)."""

    source: str
    docs: int
    queries: int
    qrels: dict[str, tuple[int, int]] = field(default_factory=dict)


EXPECTED: dict[str, Expected] = {
    "scifact": Expected("beir/scifact", 5183, 1109, {"train": (919, 809), "test": (339, 300)}),
    "nfcorpus": Expected(
        "beir/nfcorpus",
        3633,
        3237,
        {"train": (110_575, 2590), "dev": (11_385, 324), "test": (12_334, 323)},
    ),
    "cranfield": Expected("cranfield", 1400, 225, {"test": (1612, 225)}),
    "cacm": Expected("cacm", 3204, 64, {"test": (796, 52)}),
    "vaswani": Expected("vaswani", 11_429, 93, {"test": (2083, 93)}),
}


@pytest.fixture(scope="module")
def real_tasks(data_dir: Path) -> dict[str, RetrievalTask]:
    """Each real dataset, loaded once by its ir_datasets-style id through the data dir."""
    return {name: load_task(exp.source, data_dir=data_dir) for name, exp in EXPECTED.items()}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_real_dataset_counts_match_readme(
    real_tasks: dict[str, RetrievalTask], data_dir: Path, name: str
) -> None:
    task, expected = real_tasks[name], EXPECTED[name]
    assert task.name == name
    assert task.source == str(data_dir / name)
    assert task.corpus.height == expected.docs
    assert task.queries.height == expected.queries
    assert task.splits == list(expected.qrels)
    for split, (rows, judged) in expected.qrels.items():
        assert task.split_qrels(split).height == rows
        assert task.split_queries(split).height == judged
        assert len(task.qrels_dict(split)) == judged
        assert sum(len(docs) for docs in task.qrels_dict(split).values()) == rows


@pytest.mark.parametrize("name", list(EXPECTED))
def test_real_dataset_schema(real_tasks: dict[str, RetrievalTask], name: str) -> None:
    task = real_tasks[name]
    assert task.corpus.schema == pl.Schema(
        {"doc_id": pl.String, "title": pl.String, "text": pl.String}
    )
    assert task.queries.schema == pl.Schema({"query_id": pl.String, "text": pl.String})
    for split in task.splits:
        assert task.qrels[split].schema == pl.Schema(
            {"query_id": pl.String, "doc_id": pl.String, "score": pl.Int64}
        )
    assert len(task.doc_texts()) == task.corpus.height


def test_scifact_has_no_dev_split(real_tasks: dict[str, RetrievalTask]) -> None:
    with pytest.raises(KeyError) as caught:
        real_tasks["scifact"].split_qrels("dev")
    assert isinstance(caught.value, UnknownSplitError)
    assert isinstance(caught.value, HydraInputError)
    assert str(caught.value) == "task 'scifact' has no 'dev' split; available: train, test"


def test_doc_texts_join_title_and_text(real_tasks: dict[str, RetrievalTask]) -> None:
    scifact = real_tasks["scifact"].corpus.row(0, named=True)
    assert real_tasks["scifact"].doc_texts()[0] == f"{scifact['title']} {scifact['text']}".strip()
    # CACM: about half the documents are a title only.
    cacm = real_tasks["cacm"]
    assert cacm.corpus.filter(pl.col("text") == "").height == 1617
    assert cacm.doc_texts()[0] == "Preliminary Report-International Algebraic Language"
    # Vaswani has no titles: no leading space from the empty title.
    assert real_tasks["vaswani"].doc_texts()[0].startswith("compact memories")


def test_cranfield_keeps_its_two_empty_documents(real_tasks: dict[str, RetrievalTask]) -> None:
    """Cranfield 471 and 995 are empty in the original collection, and 995 is judged."""
    cranfield = real_tasks["cranfield"]
    empty = cranfield.corpus.filter((pl.col("title") == "") & (pl.col("text") == ""))
    assert empty["doc_id"].to_list() == ["471", "995"]
    assert cranfield.qrels_dict("test")["125"]["995"] == 1


def test_cacm_unjudged_queries_are_not_in_split_queries(
    real_tasks: dict[str, RetrievalTask],
) -> None:
    cacm = real_tasks["cacm"]
    judged = cacm.split_queries("test")["query_id"].to_list()
    assert len(judged) == 52
    all_ids = cacm.queries["query_id"].to_list()
    assert judged == [qid for qid in all_ids if qid in set(judged)]  # queries order kept


def test_nfcorpus_relevance_is_graded(real_tasks: dict[str, RetrievalTask]) -> None:
    nfcorpus = real_tasks["nfcorpus"]
    assert set(nfcorpus.split_qrels("test")["score"].unique().to_list()) == {1, 2}
    assert set(nfcorpus.split_qrels("train")["score"].unique().to_list()) == {1}


def test_same_folder_by_path_by_base_dir_and_by_split_id(
    real_tasks: dict[str, RetrievalTask], data_dir: Path
) -> None:
    by_path = load_task(str(data_dir / "scifact"))
    by_base_dir = load_task("scifact", base_dir=data_dir)
    by_split_id = load_task("beir/scifact/test", data_dir=data_dir, name="sf")
    assert by_split_id.name == "sf"
    for task in (by_path, by_base_dir, by_split_id):
        assert task.source == real_tasks["scifact"].source
        assert task.corpus.equals(real_tasks["scifact"].corpus)
        assert task.splits == ["train", "test"]


# ----------------------------------------------------------------------------- head()


def _assert_consistent(task: RetrievalTask) -> None:
    doc_ids = set(task.corpus["doc_id"].to_list())
    query_ids = set(task.queries["query_id"].to_list())
    judged: set[str] = set()
    for split in task.splits:
        frame = task.split_qrels(split)
        assert set(frame["doc_id"].to_list()) <= doc_ids
        assert set(frame["query_id"].to_list()) <= query_ids
        judged |= set(frame["query_id"].to_list())
    assert judged == query_ids


def _is_subsequence(part: list[str], whole: list[str]) -> bool:
    remaining = iter(whole)
    return all(item in remaining for item in part)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_head_is_a_consistent_slice(real_tasks: dict[str, RetrievalTask], name: str) -> None:
    task = real_tasks[name]
    small = task.head(60, 8)
    _assert_consistent(small)
    assert small.corpus.height == 60
    assert small.name == task.name
    assert _is_subsequence(small.corpus["doc_id"].to_list(), task.corpus["doc_id"].to_list())
    assert _is_subsequence(small.queries["query_id"].to_list(), task.queries["query_id"].to_list())
    for split in task.splits:
        kept = small.split_queries(split)["query_id"].to_list()
        first = task.split_queries(split)["query_id"].head(8).to_list()
        assert 0 < len(kept) <= 8
        assert set(kept) <= set(first)


def test_head_keeps_a_relevant_doc_for_every_kept_query(
    real_tasks: dict[str, RetrievalTask],
) -> None:
    """nfcorpus queries have ~40 judged docs each; round-robin still serves 30 (split, query)s."""
    small = real_tasks["nfcorpus"].head(40, 10)
    for split in ("train", "dev", "test"):
        assert len(small.qrels_dict(split)) == 10


def test_head_fills_with_unjudged_docs_and_caps_at_corpus(
    real_tasks: dict[str, RetrievalTask],
) -> None:
    cranfield = real_tasks["cranfield"]
    small = cranfield.head(500, 2)
    judged = set(small.split_qrels("test")["doc_id"].to_list())
    assert small.corpus.height == 500
    assert len(judged) < 500
    assert (
        cranfield.split_qrels("test").filter(pl.col("query_id").is_in(["1", "2"])).height
        == small.split_qrels("test").height
    )
    whole = cranfield.head(10**6)
    assert whole.corpus.height == 1400
    assert whole.split_qrels("test").height == 1612


def test_head_rejects_non_positive_sizes(real_tasks: dict[str, RetrievalTask]) -> None:
    with pytest.raises(ValueError, match="n_docs"):
        real_tasks["cacm"].head(0)
    with pytest.raises(ValueError, match="n_queries"):
        real_tasks["cacm"].head(10, 0)


def test_head_without_qrels_takes_the_first_documents() -> None:
    task = RetrievalTask(
        name="bare",
        source="memory",
        corpus=pl.DataFrame(
            {"doc_id": ["a", "b", "c"], "title": ["", "", ""], "text": list("xyz")}
        ),
        queries=pl.DataFrame({"query_id": ["q"], "text": ["x"]}),
        qrels={},
    )
    small = task.head(2)
    assert small.corpus["doc_id"].to_list() == ["a", "b"]
    assert (small.queries.height, small.splits) == (0, [])


# ----------------------------------------------------------------------------- BEIR folders

GOOD_CORPUS = [
    {"_id": "d1", "title": "Alpha", "text": "first document"},
    {"_id": "d2", "title": "", "text": "second document", "metadata": {"x": 1}},
    {"_id": "d3", "text": "no title key"},
]
GOOD_QUERIES = [{"_id": "q1", "text": "first query"}, {"_id": "q2", "text": "second query"}]
GOOD_QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq2\td3\t0\n"


def _jsonl(records: list[object]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def write_beir(
    folder: Path,
    *,
    corpus: str | bytes | None = None,
    queries: str | bytes | None = None,
    qrels: dict[str, str] | None = None,
) -> Path:
    """A small valid BEIR folder, with any file replaced by raw content to break it."""
    (folder / "qrels").mkdir(parents=True)
    files = {
        folder / "corpus.jsonl": _jsonl(list(GOOD_CORPUS)) if corpus is None else corpus,
        folder / "queries.jsonl": _jsonl(list(GOOD_QUERIES)) if queries is None else queries,
    }
    for split, text in (qrels if qrels is not None else {"test": GOOD_QRELS}).items():
        files[folder / "qrels" / f"{split}.tsv"] = text
    for path, content in files.items():
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return folder


def test_small_folder_loads(tmp_path: Path) -> None:
    task = load_beir_folder(write_beir(tmp_path / "tiny"))
    assert task.name == "tiny"
    assert task.corpus.rows() == [
        ("d1", "Alpha", "first document"),
        ("d2", "", "second document"),
        ("d3", "", "no title key"),
    ]
    assert task.qrels_dict("test") == {"q1": {"d1": 1}, "q2": {"d2": 2, "d3": 0}}
    assert task.doc_texts() == ["Alpha first document", "second document", "no title key"]
    assert "docs=3" in repr(task)


def test_loading_writes_nothing(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "tiny")

    def snapshot() -> set[tuple[str, int, int]]:
        return {(str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*")}

    before = snapshot()
    load_beir_folder(folder)
    load_task("tiny", base_dir=tmp_path)
    assert snapshot() == before


def test_tolerated_formatting(tmp_path: Path) -> None:
    """CRLF, a BOM, blank lines and padded qrels cells are not errors; odd split names sort last."""
    corpus = "\ufeff" + _jsonl(list(GOOD_CORPUS)).replace("\n", "\r\n") + "\n\n"
    qrels = "query-id\tcorpus-id\tscore\r\n\r\nq1\td1\t 1 \r\n"
    folder = write_beir(
        tmp_path / "t", corpus=corpus, qrels={"validation": qrels, "test": qrels, "train": qrels}
    )
    task = load_beir_folder(folder)
    assert task.corpus.height == 3
    assert task.splits == ["train", "test", "validation"]
    assert task.qrels_dict("validation") == {"q1": {"d1": 1}}


def test_one_empty_document_is_allowed(tmp_path: Path) -> None:
    records = [*GOOD_CORPUS, {"_id": "d4", "title": "", "text": ""}]
    task = load_beir_folder(write_beir(tmp_path / "t", corpus=_jsonl(records)))
    assert task.doc_texts()[-1] == ""


HEADER = "query-id\tcorpus-id\tscore\n"

# (case id, file to write, content, line, field, words the message must contain)
MALFORMED: list[tuple[str, str, str | bytes, int | None, str | None, str]] = [
    ("corpus-bad-json", "corpus.jsonl", '{"_id": "d1", "text": "a"}\n{"_id": "d2",\n', 2, None,
     "invalid JSON"),
    ("corpus-not-object", "corpus.jsonl", '["d1", "text"]\n', 1, None, "got an array"),
    ("corpus-no-id", "corpus.jsonl", '{"title": "t", "text": "a"}\n', 1, "_id", "missing '_id'"),
    ("corpus-number-id", "corpus.jsonl", '{"_id": 12, "text": "a"}\n', 1, "_id",
     'got a number 12 (write it as "12")'),
    ("corpus-empty-id", "corpus.jsonl", '{"_id": " ", "text": "a"}\n', 1, "_id", "empty id"),
    ("corpus-title-not-string", "corpus.jsonl", '{"_id": "d1", "title": null, "text": "a"}\n', 1,
     "title", "must be a JSON string, got null"),
    ("corpus-no-text", "corpus.jsonl", '{"_id": "d1", "title": "t"}\n', 1, "text",
     "missing 'text'"),
    ("corpus-duplicate", "corpus.jsonl",
     '{"_id": "d1", "text": "a"}\n\n{"_id": "d1", "text": "b"}\n', 3, "_id",
     "duplicate id 'd1' (first on line 1)"),
    ("corpus-empty-file", "corpus.jsonl", "\n", None, None, "the corpus file is empty"),
    ("corpus-all-empty", "corpus.jsonl", '{"_id": "d1", "title": "", "text": " "}\n', None, None,
     "every document has an empty title and text"),
    ("corpus-bad-utf8", "corpus.jsonl",
     b'{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": "\xff"}\n', 2, None, "not valid UTF-8"),
    ("queries-bad-json", "queries.jsonl", "{'_id': 'q1'}\n", 1, None, "invalid JSON"),
    ("queries-no-text", "queries.jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q2"}\n', 2, "text",
     "missing 'text'"),
    ("queries-empty-text", "queries.jsonl", '{"_id": "q1", "text": "  "}\n', 1, "text",
     "empty query text"),
    ("queries-text-not-string", "queries.jsonl", '{"_id": "q1", "text": ["a"]}\n', 1, "text",
     "got an array"),
    ("queries-duplicate", "queries.jsonl",
     '{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n', 2, "_id",
     "duplicate id 'q1' (first on line 1)"),
    ("queries-empty-file", "queries.jsonl", "", None, None, "the queries file is empty"),
    ("qrels-empty-file", "qrels/test.tsv", "", None, None, "empty file"),
    ("qrels-no-header", "qrels/test.tsv", "q1\td1\t1\n", 1, None, "missing header line"),
    ("qrels-wrong-header", "qrels/test.tsv", "query_id\tdoc_id\tscore\nq1\td1\t1\n", 1, None,
     "expected the header"),
    ("qrels-header-only", "qrels/test.tsv", HEADER, None, None, "no judgments"),
    ("qrels-spaces", "qrels/test.tsv", HEADER + "q1\td1\t1\nq2 d2 1\n", 3, None,
     "got 1 (is the file tab-separated?)"),
    ("qrels-four-columns", "qrels/test.tsv", HEADER + "q1\t0\td1\t1\n", 2, None,
     "expected 3 tab-separated columns"),
    ("qrels-float-score", "qrels/test.tsv", HEADER + "q1\td1\t1.5\n", 2, "score",
     "score '1.5' is not an integer"),
    ("qrels-unknown-query", "qrels/test.tsv", HEADER + "q1\td1\t1\nq9\td1\t1\n", 3, "query-id",
     "unknown query id 'q9'"),
    ("qrels-unknown-doc", "qrels/test.tsv", HEADER + "q1\td1\t1\n\nq1\td9\t1\n", 4, "corpus-id",
     "unknown document id 'd9'"),
    ("qrels-duplicate", "qrels/test.tsv", HEADER + "q1\td1\t1\nq2\td2\t1\nq1\td1\t2\n", 4, None,
     "duplicate judgment for query 'q1' and document 'd1' (first on line 2)"),
    ("qrels-earliest-line-wins", "qrels/test.tsv", HEADER + "q1\td1\t1\nq1\td9\t1\nq2\td2\tx\n",
     3, "corpus-id", "unknown document id 'd9'"),
    ("qrels-bad-utf8", "qrels/test.tsv", HEADER.encode() + b"q1\td1\t1\nq\xe9\td1\t1\n", 3, None,
     "not valid UTF-8"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("relative", "content", "line", "field_name", "words"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_input_names_file_and_line(
    tmp_path: Path,
    relative: str,
    content: str | bytes,
    line: int | None,
    field_name: str | None,
    words: str,
) -> None:
    folder = write_beir(tmp_path / "bad")
    target = folder / relative
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content, encoding="utf-8")
    with pytest.raises(HydraInputError) as caught:
        load_beir_folder(folder)
    error = caught.value
    assert error.path == target
    assert error.line == line
    assert error.field == field_name
    assert words in str(error)
    where = f"{target}:{line}" if line is not None else str(target)
    assert str(error).startswith(where)


@pytest.mark.parametrize("missing", ["corpus.jsonl", "queries.jsonl"])
def test_missing_jsonl_file(tmp_path: Path, missing: str) -> None:
    folder = write_beir(tmp_path / "bad")
    (folder / missing).unlink()
    with pytest.raises(HydraInputError, match="file not found") as caught:
        load_beir_folder(folder)
    assert caught.value.path == folder / missing


def test_missing_qrels_folder_and_no_split_files(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "bad", qrels={})
    (folder / "qrels" / "README.txt").write_text("not a split", encoding="utf-8")
    with pytest.raises(HydraInputError, match=r"no <split>\.tsv files") as caught:
        load_beir_folder(folder)
    assert caught.value.path == folder / "qrels"
    (folder / "qrels" / "README.txt").unlink()
    (folder / "qrels").rmdir()
    with pytest.raises(HydraInputError, match="qrels folder not found"):
        load_beir_folder(folder)


def test_task_rejects_wrong_columns() -> None:
    frame = pl.DataFrame({"doc_id": ["d1"], "text": ["a"]})
    queries = pl.DataFrame({"query_id": ["q1"], "text": ["a"]})
    with pytest.raises(ValueError, match="corpus must have columns"):
        RetrievalTask(name="x", source="x", corpus=frame, queries=queries, qrels={})


# ----------------------------------------------------------------------------- load_task()


def test_data_dir_folder_wins_over_ir_datasets(tmp_path: Path) -> None:
    write_beir(tmp_path / "scifact")
    task = load_task("beir/scifact/train", data_dir=tmp_path)
    assert (task.name, task.corpus.height) == ("scifact", 3)
    assert task.source == str(tmp_path / "scifact")


def test_relative_path_resolves_against_base_dir(tmp_path: Path) -> None:
    write_beir(tmp_path / "cards" / "data" / "mine")
    task = load_task("./data/mine", base_dir=tmp_path / "cards", name="custom")
    assert (task.name, task.source) == ("custom", str(tmp_path / "cards" / "data" / "mine"))


@pytest.mark.parametrize("source", ["./no/such/folder", "/no/such/folder", "~/no-such-hydra-dir"])
def test_missing_path_is_an_input_error(tmp_path: Path, source: str) -> None:
    with pytest.raises(HydraInputError, match="no such folder") as caught:
        load_task(source, base_dir=tmp_path, data_dir=tmp_path)
    assert caught.value.path is not None
    assert caught.value.path.name == Path(source).name


def test_file_instead_of_folder(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "t")
    with pytest.raises(HydraInputError, match="got a file"):
        load_task(str(folder / "corpus.jsonl"))


def test_empty_source() -> None:
    with pytest.raises(HydraInputError, match="empty task source"):
        load_task("  ")


@pytest.mark.parametrize("source", ["no-such-dataset", "cacm", "beir/no-such-dataset/test"])
def test_unknown_id_without_local_copy(tmp_path: Path, source: str) -> None:
    """CACM is not in ir_datasets (0.6.3): it only exists as a folder in the data dir."""
    with pytest.raises(HydraInputError, match="not a known ir_datasets id") as caught:
        load_task(source, data_dir=tmp_path)
    assert f"{source!r}" in str(caught.value)
    assert str(tmp_path / dataset_name(source)) in str(caught.value)


# ----------------------------------------------------------------------------- names and ids


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("beir/scifact", "scifact"),
        ("beir/scifact/test", "scifact"),
        ("beir/nfcorpus/dev", "nfcorpus"),
        ("cranfield", "cranfield"),
        ("vaswani/", "vaswani"),
        ("beir/cqadupstack/android", "cqadupstack-android"),
        ("msmarco-passage/dev", "msmarco-passage"),
        ("/work/shared/data/cacm", "cacm"),
        ("/work/shared/data/cacm/", "cacm"),
        ("./data/my-task", "my-task"),
        ("~/datasets/my-task", "my-task"),
    ],
)
def test_dataset_name(source: str, name: str) -> None:
    assert dataset_name(source) == name


@pytest.mark.parametrize(
    ("dataset_id", "parsed"),
    [
        ("beir/scifact", ("beir/scifact", None)),
        ("beir/scifact/test", ("beir/scifact", "test")),
        ("beir/nfcorpus/train/", ("beir/nfcorpus", "train")),
        ("cranfield", ("cranfield", None)),
        ("test", ("test", None)),
        ("nfcorpus/dev/video", ("nfcorpus/dev/video", None)),
    ],
)
def test_parse_ir_datasets_id(dataset_id: str, parsed: tuple[str, str | None]) -> None:
    assert parse_ir_datasets_id(dataset_id) == parsed


@pytest.mark.parametrize(
    ("base_id", "split_ids"),
    [
        ("beir/scifact", {"train": "beir/scifact/train", "test": "beir/scifact/test"}),
        (
            "beir/nfcorpus",
            {
                "train": "beir/nfcorpus/train",
                "dev": "beir/nfcorpus/dev",
                "test": "beir/nfcorpus/test",
            },
        ),
        ("cranfield", {"test": "cranfield"}),
        ("vaswani", {"test": "vaswani"}),
        ("beir/arguana", {"test": "beir/arguana"}),  # BEIR test-only sets have no subsets
        ("no-such-dataset", {}),
    ],
)
def test_ir_datasets_split_ids_from_registry(base_id: str, split_ids: dict[str, str]) -> None:
    assert ir_datasets_split_ids(base_id) == split_ids


def test_load_ir_datasets_end_to_end_on_local_files(tmp_path: Path) -> None:
    """A real ir_datasets dataset over local TSV/TREC files, registered under fresh ids."""
    import ir_datasets

    (tmp_path / "docs.tsv").write_text("d1\tfirst doc\nd2\tsecond doc\nd3\tthird\n")
    (tmp_path / "train-q.tsv").write_text("q1\tquery one\n")
    (tmp_path / "test-q.tsv").write_text("q2\tquery two\n")
    (tmp_path / "train.qrels").write_text("q1 0 d1 1\n")
    (tmp_path / "test.qrels").write_text("q2 0 d2 2\nq2 0 d-missing 1\n")

    base_id = f"hydra-test-{uuid.uuid4().hex[:8]}/tiny"
    docs = str(tmp_path / "docs.tsv")
    registry = ir_datasets.registry
    registry.register(base_id, ir_datasets.create_dataset(docs_tsv=docs))
    for split in ("train", "test"):
        subset = ir_datasets.create_dataset(
            docs_tsv=docs,
            queries_tsv=str(tmp_path / f"{split}-q.tsv"),
            qrels_trec=str(tmp_path / f"{split}.qrels"),
        )
        registry.register(f"{base_id}/{split}", subset)

    task = load_ir_datasets(f"{base_id}/test")
    assert task.name == dataset_name(base_id)
    assert task.source == base_id
    assert task.corpus.rows() == [
        ("d1", "", "first doc"),
        ("d2", "", "second doc"),
        ("d3", "", "third"),
    ]
    assert task.queries["query_id"].to_list() == ["q1", "q2"]  # union of the split subsets
    assert task.qrels_dict("train") == {"q1": {"d1": 1}}
    assert task.qrels_dict("test") == {"q2": {"d2": 2}}  # the dangling row is dropped
