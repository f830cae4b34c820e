"""The metrics store: every evaluation's numbers as long rows in one DuckDB table.

One row per task x method x split x metric, tagged with the hypernet run and checkpoint that
produced it and the time, so a question like "how did scifact's NDCG@10 move across
checkpoints?" is one SQL query. Table ``per_query`` holds the values those means average,
one row per query, with the same tags: where a method wins and loses, and what the
significance tests read. Table ``robustness`` holds each method's headline metric on clean
and on perturbed test queries (one row per task x method x perturbation), with the same
tags. Table ``learning_curve`` holds each point of a learning curve (``hydra eval
--learning-curve``): one row per task x method x number of judged queries x draw x
metric. Table ``fusion`` holds the fusion each evaluated card compiled to (lexical weight,
feedback, BM25 ``b``, whether a query gate moves it) beside the ``oracle``'s grid point, one
row per task x method, with the evaluation's tags; view ``latest_fusion`` adds each row's
headline metric. Table ``queries`` holds the query texts ``latest_per_query`` shows beside the ids;
view ``latest_summary`` is the narrow table ``hydra metrics`` prints (headline metric, gains
over base and hybrid). Every table and view carries a ``COMMENT ON`` saying what it holds.
The database is a file in the workspace by default; a
``md:<name>`` location puts it on MotherDuck for a team, with no code change.

DuckDB lets one process write a file at a time, and pipeline partitions run in parallel
processes, so connections are short and retried while another process holds the lock.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import polars as pl

from hydra_core.evaluation.method import HEADLINE_METRIC, METHOD_RANK, Method
from hydra_core.evaluation.metrics import METRIC_NAMES

if TYPE_CHECKING:  # types only: an edit to the perturbations leaves task_metrics up to date
    from collections.abc import Mapping

    from hydra_core.evaluation.learning_curve import CurvePoint
    from hydra_core.evaluation.perturbations import Robustness
    from hydra_core.model.score_fusion import FusionParameters

TABLE = "metrics"
LATEST_VIEW = "latest_metrics"
PER_QUERY_TABLE = "per_query"
LATEST_PER_QUERY_VIEW = "latest_per_query"
ROBUSTNESS_TABLE = "robustness"
LATEST_ROBUSTNESS_VIEW = "latest_robustness"
LEARNING_CURVE_TABLE = "learning_curve"
QUERIES_TABLE = "queries"
FUSION_TABLE = "fusion"
LATEST_FUSION_VIEW = "latest_fusion"
SUMMARY_VIEW = "latest_summary"

DESCRIPTIONS: dict[str, str] = {
    SUMMARY_VIEW: "each task's latest evaluation, one row per method: ndcg@10, its gain over "
    "base and over hybrid, mrr@10, recall@100 (what `hydra metrics` prints)",
    LATEST_VIEW: "the rows of each task's latest evaluation (long: one per method and metric)",
    TABLE: "every evaluation: one row per task, method, split and metric, tagged with the "
    "run, checkpoint and time",
    LATEST_PER_QUERY_VIEW: "the per-query rows of each task's latest evaluation, with the "
    "query's text",
    PER_QUERY_TABLE: "every evaluation's per-query values: one row per task, method, query "
    "and metric",
    QUERIES_TABLE: "each task's query texts by id (the latest seen)",
    LATEST_ROBUSTNESS_VIEW: "the robustness rows of each task's latest robustness evaluation",
    ROBUSTNESS_TABLE: "every robustness evaluation: each method's metric on clean and on "
    "perturbed test queries, and the drop",
    LATEST_FUSION_VIEW: "each task's latest fusion rows, with the row's ndcg@10: the fusion "
    "each card compiled to beside the oracle's",
    FUSION_TABLE: "every evaluation's fusions: one row per task and method (lexical weight, "
    "feedback, BM25 b, query_gate: moved per query), the oracle's grid point among them",
    LEARNING_CURVE_TABLE: "each point of a learning curve (hydra eval --learning-curve): one "
    "row per task, method, number of judged queries, draw and metric",
}
"""What each table and view holds: the store's ``COMMENT ON`` and ``hydra metrics --help``."""


def _evaluation_table(table: str, columns: str) -> str:
    """A table of evaluation rows: ``columns`` between the tags :func:`_append` adds to each
    row (in this order: it is the order ``SELECT *`` shows)."""
    return f"""
CREATE TABLE IF NOT EXISTS {table} (
    run_id VARCHAR NOT NULL,
    checkpoint VARCHAR NOT NULL,
    {columns},
    created_at TIMESTAMPTZ NOT NULL,
    evaluation_id VARCHAR NOT NULL,
    dagster_run_id VARCHAR NOT NULL
);"""


def _latest_by_task(view: str, table: str) -> str:
    """A view of each task's most recent evaluation in ``table``."""
    return f"""
CREATE OR REPLACE VIEW {view} AS
SELECT t.* FROM {table} AS t
JOIN (
    SELECT task, arg_max(evaluation_id, created_at) AS evaluation_id FROM {table} GROUP BY task
) AS latest USING (task, evaluation_id);"""


_SUMMARY = f"""
CREATE OR REPLACE VIEW {SUMMARY_VIEW} AS
WITH wide AS (
    PIVOT (SELECT task, method, metric, value FROM {LATEST_VIEW})
    ON metric IN ({", ".join(f"'{m}'" for m in METRIC_NAMES)}) USING first(value)
    GROUP BY task, method
)
SELECT w.task, w.method, w."{HEADLINE_METRIC}",
    w."{HEADLINE_METRIC}" - b."{HEADLINE_METRIC}" AS gain_over_{Method.BASE},
    w."{HEADLINE_METRIC}" - h."{HEADLINE_METRIC}" AS gain_over_{Method.HYBRID},
    {", ".join(f'w."{m}"' for m in METRIC_NAMES if m != HEADLINE_METRIC)}
FROM wide AS w
LEFT JOIN wide AS b ON b.task = w.task AND b.method = '{Method.BASE}'
LEFT JOIN wide AS h ON h.task = w.task AND h.method = '{Method.HYBRID}';"""

_CREATE = "".join(
    [
        _evaluation_table(
            TABLE,
            "task VARCHAR NOT NULL, method VARCHAR NOT NULL, split VARCHAR NOT NULL, "
            "metric VARCHAR NOT NULL, value DOUBLE NOT NULL",
        ),
        _latest_by_task(LATEST_VIEW, TABLE),
        _evaluation_table(
            PER_QUERY_TABLE,
            "task VARCHAR NOT NULL, method VARCHAR NOT NULL, split VARCHAR NOT NULL, "
            "query_id VARCHAR NOT NULL, metric VARCHAR NOT NULL, value DOUBLE NOT NULL",
        ),
        f"""
CREATE TABLE IF NOT EXISTS {QUERIES_TABLE} (
    task VARCHAR NOT NULL, query_id VARCHAR NOT NULL, text VARCHAR NOT NULL,
    PRIMARY KEY (task, query_id)
);
CREATE OR REPLACE VIEW {LATEST_PER_QUERY_VIEW} AS
SELECT p.task, p.method, p.split, p.query_id, q.text AS query,
    p.* EXCLUDE (task, method, split, query_id)
FROM {PER_QUERY_TABLE} AS p
JOIN (SELECT DISTINCT task, evaluation_id FROM {LATEST_VIEW}) AS latest
USING (task, evaluation_id)
LEFT JOIN {QUERIES_TABLE} AS q USING (task, query_id);""",
        _evaluation_table(
            ROBUSTNESS_TABLE,
            "task VARCHAR NOT NULL, method VARCHAR NOT NULL, kind VARCHAR NOT NULL, "
            "rate DOUBLE NOT NULL, seed BIGINT NOT NULL, metric VARCHAR NOT NULL, "
            "clean DOUBLE NOT NULL, perturbed DOUBLE NOT NULL, drop DOUBLE NOT NULL",
        ),
        _latest_by_task(LATEST_ROBUSTNESS_VIEW, ROBUSTNESS_TABLE),
        _evaluation_table(
            LEARNING_CURVE_TABLE,
            "task VARCHAR NOT NULL, method VARCHAR NOT NULL, n VARCHAR NOT NULL, "
            "draw BIGINT NOT NULL, metric VARCHAR NOT NULL, value DOUBLE NOT NULL",
        ),
        _evaluation_table(
            FUSION_TABLE,
            "task VARCHAR NOT NULL, method VARCHAR NOT NULL, lexical_weight DOUBLE NOT NULL, "
            "feedback DOUBLE NOT NULL, bm25_b DOUBLE NOT NULL, query_gate BOOLEAN NOT NULL",
        ),
        f"""
CREATE OR REPLACE VIEW {LATEST_FUSION_VIEW} AS
SELECT f.task, f.method, m.value AS "{HEADLINE_METRIC}",
    f.* EXCLUDE (task, method)
FROM {FUSION_TABLE} AS f
JOIN (SELECT DISTINCT task, evaluation_id FROM {LATEST_VIEW}) AS latest
USING (task, evaluation_id)
LEFT JOIN {LATEST_VIEW} AS m
ON m.task = f.task AND m.method = f.method AND m.metric = '{HEADLINE_METRIC}';""",
        _SUMMARY,
        *(
            f"\nCOMMENT ON {'VIEW' if name.startswith('latest') else 'TABLE'} {name} IS "
            f"'{text.replace(chr(39), chr(39) * 2)}';"
            for name, text in DESCRIPTIONS.items()
        ),
    ]
)
_LOCK_WAIT_SECONDS = 120.0


ROBUSTNESS_SCHEMA: dict[str, pl.DataType] = {
    "task": pl.String(),
    "method": pl.String(),
    "kind": pl.String(),
    "rate": pl.Float64(),
    "seed": pl.Int64(),
    "metric": pl.String(),
    "clean": pl.Float64(),
    "perturbed": pl.Float64(),
    "drop": pl.Float64(),
}


def robustness_frame(task: str, results: Sequence[Robustness]) -> pl.DataFrame:
    """One task's robustness results as the rows :func:`record_robustness` stores, one per
    method and perturbation."""
    rows = [
        (task, method, p.kind, p.rate, p.seed, HEADLINE_METRIC, *values)
        for result in results
        for p in [result.perturbation]
        for method, values in result.rows().items()
    ]
    return pl.DataFrame(rows, schema=ROBUSTNESS_SCHEMA, orient="row")


LEARNING_CURVE_SCHEMA: dict[str, pl.DataType] = {
    "task": pl.String(),
    "method": pl.String(),
    "n": pl.String(),
    "draw": pl.Int64(),
    "metric": pl.String(),
    "value": pl.Float64(),
}


FUSION_SCHEMA: dict[str, pl.DataType] = {
    "task": pl.String(),
    "method": pl.String(),
    "lexical_weight": pl.Float64(),
    "feedback": pl.Float64(),
    "bm25_b": pl.Float64(),
    "query_gate": pl.Boolean(),
}


def fusion_frame(task: str, fusion: Mapping[str, FusionParameters]) -> pl.DataFrame:
    """Each method's fusion as the rows of table ``fusion``."""
    rows = [
        (task, method, p.lexical_weight, p.feedback, p.bm25_b, p.gate is not None)
        for method, p in fusion.items()
    ]
    return pl.DataFrame(rows, schema=FUSION_SCHEMA, orient="row")


def learning_curve_frame(points: Sequence[CurvePoint]) -> pl.DataFrame:
    """A learning curve's points as the rows :func:`record_learning_curve` stores, one per
    metric (``n``: "0" for the zero-shot point, a number, or "all")."""
    rows = [
        (point.task, point.method, point.n, point.draw, metric, value)
        for point in points
        for metric, value in point.metrics.items()
    ]
    return pl.DataFrame(rows, schema=LEARNING_CURVE_SCHEMA, orient="row")


class NoMetricsError(LookupError):
    """The metrics database does not exist yet: nothing has been evaluated."""


class MetricsDbUnavailable(duckdb.IOException):
    """The database cannot be opened (still locked after the wait, or not a database file).

    A ``duckdb.IOException``, so callers that handle DuckDB errors keep working; the message
    names the database and the setting that moves it.
    """

    def __init__(self, database: str, cause: duckdb.Error, *, locked: bool) -> None:
        if locked:
            fix = (
                f"another process held its lock for {_LOCK_WAIT_SECONDS:.0f}s; close it "
                "(a DuckDB shell, a notebook, another hydra run) or"
            )
        else:
            fix = "make it a writable DuckDB file or"
        super().__init__(
            f"metrics database {database} is unavailable: {cause}. To fix: {fix} set "
            "HYDRA_METRICS_DB (or metrics_db in hydra.yaml) to another database, then run again"
        )


def _is_local(database: str) -> bool:
    return not database.startswith("md:") and database != ":memory:"


@contextmanager
def connect(database: str, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection; waits while another process holds the file's lock."""
    if _is_local(database):
        if read_only and not Path(database).exists():
            raise NoMetricsError(f"no metrics database at {database}: run `hydra run` first")
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + _LOCK_WAIT_SECONDS
    delay = 0.05
    while True:
        try:
            connection = duckdb.connect(database, read_only=read_only)
            break
        except duckdb.IOException as exc:
            locked = "lock" in str(exc).lower()
            if not locked or time.monotonic() > deadline:
                raise MetricsDbUnavailable(database, exc, locked=locked) from exc
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        yield connection
    finally:
        connection.close()


def record_metrics(
    database: str,
    rows: pl.DataFrame,
    *,
    run_id: str,
    checkpoint: str,
    per_query: pl.DataFrame | None = None,
    queries: pl.DataFrame | None = None,
    fusion: pl.DataFrame | None = None,
    dagster_run_id: str = "",
    created_at: datetime | None = None,
) -> str:
    """Append one evaluation (rows of task, method, split, metric, value); returns its id.

    ``per_query`` (rows of task, method, split, query_id, metric, value) goes to the
    ``per_query`` table and ``fusion`` (rows of :func:`fusion_frame`) to the ``fusion``
    table in the same transaction: an evaluation is stored whole or not at all.
    ``queries`` (query_id, text) gives the texts of those queries, which ``latest_per_query``
    shows beside their ids.
    """
    inserts = [(TABLE, rows.select("task", "method", "split", "metric", "value"))]
    if fusion is not None:
        inserts.append((FUSION_TABLE, fusion.select(list(FUSION_SCHEMA))))
    texts = []
    if per_query is not None:
        columns = ("task", "method", "split", "query_id", "metric", "value")
        inserts.append((PER_QUERY_TABLE, per_query.select(columns)))
        if queries is not None:
            ids = per_query.select("task", "query_id").unique()
            texts.append(
                (QUERIES_TABLE, ids.join(queries.select("query_id", "text"), on="query_id"))
            )
    return _append(database, inserts, run_id, checkpoint, dagster_run_id, created_at, texts)


def record_robustness(
    database: str,
    rows: pl.DataFrame,
    *,
    run_id: str,
    checkpoint: str,
    dagster_run_id: str = "",
    created_at: datetime | None = None,
) -> str:
    """Append one robustness evaluation (rows of :func:`robustness_frame`); returns its id."""
    inserts = [(ROBUSTNESS_TABLE, rows.select(list(ROBUSTNESS_SCHEMA)))]
    return _append(database, inserts, run_id, checkpoint, dagster_run_id, created_at)


def record_learning_curve(
    database: str, rows: pl.DataFrame, *, run_id: str, checkpoint: str, dagster_run_id: str = ""
) -> str:
    """Append one learning curve (rows of :func:`learning_curve_frame`); returns its id."""
    inserts = [(LEARNING_CURVE_TABLE, rows.select(list(LEARNING_CURVE_SCHEMA)))]
    return _append(database, inserts, run_id, checkpoint, dagster_run_id, None)


def _append(
    database: str,
    inserts: Sequence[tuple[str, pl.DataFrame]],
    run_id: str,
    checkpoint: str,
    dagster_run_id: str,
    created_at: datetime | None,
    replacements: Sequence[tuple[str, pl.DataFrame]] = (),
) -> str:
    """Insert each (table, frame) with one evaluation's tags, and each untagged (table,
    frame) of ``replacements`` over the rows of the same key, in one transaction."""
    evaluation_id = uuid.uuid4().hex
    tags = {
        "run_id": run_id,
        "checkpoint": checkpoint,
        "created_at": created_at or datetime.now(UTC),
        "evaluation_id": evaluation_id,
        "dagster_run_id": dagster_run_id,
    }
    with connect(database) as db:
        db.execute(_CREATE)
        db.begin()
        try:
            for table, frame in inserts:
                incoming = frame.with_columns(
                    pl.lit(value).alias(name) for name, value in tags.items()
                )
                db.register("incoming", incoming.to_arrow())
                db.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
                db.unregister("incoming")
            for table, frame in replacements:
                db.register("incoming", frame.to_arrow())
                db.execute(f"INSERT OR REPLACE INTO {table} BY NAME SELECT * FROM incoming")
                db.unregister("incoming")
            db.commit()
        except BaseException:
            db.rollback()
            raise
    return evaluation_id


def query(database: str, sql: str) -> pl.DataFrame:
    """Run any SQL on the store and return the result as a frame; the store survives any query.

    The store is opened read-only, and the SQL reaches nothing outside it: external access
    (files, network, extensions) is off and the configuration locked before it runs, so
    ``COPY ... TO`` a file, ``read_text('/etc/passwd')`` or ``INSTALL`` fail.
    """
    with connect(database, read_only=True) as db:
        db.execute("SET enable_external_access = false")
        db.execute("SET lock_configuration = true")
        relation = db.sql(sql)
        return relation.pl() if relation is not None else pl.DataFrame()


def _latest(database: str, view: str, tasks: Sequence[str] | None) -> pl.DataFrame:
    """A latest view's rows, of ``tasks`` only when given."""
    frame = query(database, f"SELECT * FROM {view}")
    return frame if tasks is None else frame.filter(pl.col("task").is_in(list(tasks)))


def latest_long(database: str, tasks: Sequence[str] | None = None) -> pl.DataFrame:
    """The rows of each task's most recent evaluation."""
    return _latest(database, LATEST_VIEW, tasks)


def latest_fusion(database: str, tasks: Sequence[str] | None = None) -> pl.DataFrame:
    """The fusion rows of each task's most recent evaluation, with each row's NDCG@10 (an
    empty frame of that shape for a store from before the table)."""
    if not _has(database, LATEST_FUSION_VIEW):
        return pl.DataFrame(
            schema={**FUSION_SCHEMA, HEADLINE_METRIC: pl.Float64(), "checkpoint": pl.String()}
        )
    return _latest(database, LATEST_FUSION_VIEW, tasks)


def latest_per_query(database: str, tasks: Sequence[str] | None = None) -> pl.DataFrame:
    """The per-query rows of each task's most recent evaluation."""
    return _latest(database, LATEST_PER_QUERY_VIEW, tasks)


def latest_robustness(database: str, tasks: Sequence[str] | None = None) -> pl.DataFrame:
    """The robustness rows of each task's most recent robustness evaluation (none before
    the first one, also in a store older than the table)."""
    if not _has(database, LATEST_ROBUSTNESS_VIEW):
        tags = {"run_id": pl.String(), "checkpoint": pl.String(), "evaluation_id": pl.String()}
        return pl.DataFrame(schema={**ROBUSTNESS_SCHEMA, **tags})
    return _latest(database, LATEST_ROBUSTNESS_VIEW, tasks)


def _has(database: str, name: str) -> bool:
    """Whether the store has table or view ``name`` (a store written by an older version
    gets the newer ones at its next write)."""
    with connect(database, read_only=True) as db:
        exists = db.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
        ).fetchone()
    return bool(exists and exists[0])


def latest_summary(database: str) -> pl.DataFrame:
    """The narrow view ``hydra metrics`` prints (see :data:`DESCRIPTIONS`), in table order;
    the wide latest results on a store written before the view existed."""
    if not _has(database, SUMMARY_VIEW):
        return latest_results(database)
    return _in_table_order(_latest(database, SUMMARY_VIEW, None))


def _in_table_order(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows by task, then method in :class:`~hydra_core.evaluation.method.Method` order."""
    rank = pl.col("method").replace_strict(METHOD_RANK, default=len(METHOD_RANK))
    return frame.sort(pl.col("task"), rank, pl.col("method"))


def latest_results(database: str, tasks: Sequence[str] | None = None) -> pl.DataFrame:
    """The latest results table: one row per task and method, one column per metric."""
    long = latest_long(database, tasks)
    if long.is_empty():
        return pl.DataFrame(schema={"task": pl.String(), "method": pl.String()})
    wide = long.pivot(
        on="metric",
        index=["task", "method", "split", "run_id", "checkpoint", "created_at"],
        values="value",
    )
    metrics = [m for m in METRIC_NAMES if m in wide.columns]
    metrics += [c for c in wide.columns if "@" in c and c not in metrics]
    return _in_table_order(wide).select(
        "task", "method", "split", *metrics, "run_id", "checkpoint", "created_at"
    )
