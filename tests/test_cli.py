"""The hydra command line on real data slices, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pipeline_support import TABLE_METHODS
from system_tools import HYDRA, mounted
from typer.testing import CliRunner

from hydra_core.data.cards import find_card, load_card, write_card
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.data.synthetic_tasks import made_from
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.model.compiled_retriever import CompiledRetriever
from hydra_core.model.hypernet import Hypernet, initial_hypernet
from hydra_pipeline.artifacts import save_beir_folder
from hydra_pipeline.cli import app
from hydra_pipeline.metrics_store import DESCRIPTIONS, latest_long, record_metrics
from hydra_pipeline.runner import DAGSTER_YAML


@pytest.fixture(scope="module")
def cards_dir(
    tmp_path_factory: pytest.TempPathFactory,
    scifact_slice: RetrievalTask,
    nfcorpus_slice: RetrievalTask,
) -> Path:
    """Cards for two real slices, in their own folder, with BEIR folders beside them."""
    root = tmp_path_factory.mktemp("cli")
    for name, task in (("scifact", scifact_slice), ("nfcorpus", nfcorpus_slice)):
        save_beir_folder(task, root / "data" / name)
        card = find_card(name).model_copy(update={"source": f"./data/{name}"})
        write_card(card, root / f"{name}.yaml")
    return root


def hydra(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script as a user runs it: its real exit status and streams."""
    return subprocess.run(
        [str(HYDRA), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture()
def runner(cards_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("HYDRA_CARDS_DIR", str(cards_dir))
    monkeypatch.setenv("HYDRA_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("HYDRA_CACHE_DIR", str(cards_dir / "cache"))
    return CliRunner()


def _assert_significance(result: dict[str, Any], method: str, task: RetrievalTask) -> None:
    """``method`` tested against base, teacher and hybrid over every judged test query."""
    tests = result["significance"]
    assert set(tests) == {method} and set(tests[method]) == {"base", "teacher", "hybrid"}
    methods = result["methods"]
    for reference, test in tests[method].items():
        assert test["metric"] == "ndcg@10"
        assert test["queries"] == len(task.qrels_dict("test"))
        difference = methods[method]["ndcg@10"] - methods[reference]["ndcg@10"]
        assert test["delta"] == pytest.approx(difference, abs=1e-12)
        assert 0.0 < test["p_value"] <= 1.0
        assert test["significant"] == (test["p_value"] < 0.05)


def test_baselines_json_then_cached(runner: CliRunner) -> None:
    first = runner.invoke(app, ["baselines", "scifact", "nfcorpus", "--json"])
    assert first.exit_code == 0, first.output
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    assert [line["task"] for line in lines] == ["scifact", "nfcorpus"]
    assert set(lines[0]["methods"]) == {"bm25", "base", "teacher"}
    assert set(lines[0]["methods"]["bm25"]) == {"ndcg@10", "mrr@10", "recall@100"}
    second = runner.invoke(app, ["baselines", "scifact", "--json"])
    assert second.exit_code == 0
    assert ", 0 encoded," in second.stderr
    assert json.loads(second.stdout)["methods"] == lines[0]["methods"]


def test_train_with_labels_adds_a_stream_per_card_that_declares_them(
    runner: CliRunner, tmp_path: Path, cards_dir: Path
) -> None:
    checkpoint = tmp_path / "labelled"
    args = ["train", "--labels", "--tasks", "scifact", "--tasks", "nfcorpus"]
    trained = runner.invoke(app, [*args, "--out", str(checkpoint), "--epochs", "1"])
    assert trained.exit_code == 0, trained.output
    metadata = json.loads((checkpoint / "config.json").read_text())["metadata"]
    assert metadata["tasks"] == ["scifact", "scifact+labels", "nfcorpus", "nfcorpus+labels"]
    assert metadata["pairs"]["scifact+labels"] > 0

    leaky = find_card("scifact", cards_dir).model_dump(mode="json")
    (cards_dir / "leaky.yaml").write_text(
        json.dumps({**leaky, "name": "leaky", "labels": "test"}), encoding="utf-8"
    )
    refused = runner.invoke(app, ["train", "--labels", "--tasks", "leaky", "--out", str(tmp_path)])
    assert refused.exit_code != 0
    assert "leaky.yaml" in str(refused.exception) and "'labels'" in str(refused.exception)
    (cards_dir / "leaky.yaml").unlink()

    plain = {key: value for key, value in leaky.items() if key != "labels"}
    (cards_dir / "plain.yaml").write_text(json.dumps({**plain, "name": "plain"}), encoding="utf-8")
    unlabelled = runner.invoke(
        app,
        ["train", "--labels", "--tasks", "plain", "--out", str(tmp_path / "p"), "--epochs", "1"],
    )
    (cards_dir / "plain.yaml").unlink()
    assert unlabelled.exit_code == 0, unlabelled.output
    assert "no card among --tasks declares labels" in unlabelled.stderr


def test_leave_one_out_scores_each_task_as_unseen(
    runner: CliRunner,
    tmp_path: Path,
    scifact_slice: RetrievalTask,
    nfcorpus_slice: RetrievalTask,
) -> None:
    slices = {"scifact": scifact_slice, "nfcorpus": nfcorpus_slice}
    args = ["eval", "--loo", "--tasks", "scifact", "--tasks", "nfcorpus", "--refine", "3"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "loo"), "--json"])
    assert result.exit_code == 0, result.output
    *rows, pool = map(json.loads, result.stdout.splitlines())
    tables = {row["task"]: row["methods"] for row in rows}
    assert set(tables) == {"scifact", "nfcorpus"}
    unseen = {"hydra-unseen", "hydra-unseen-dense", "hydra-unseen-generic", "hydra-unseen-shuffled"}
    references = {"bm25", "base", "teacher", "hybrid", "hydra-unseen-refined", "oracle"}
    for methods in tables.values():
        assert set(methods) == references | unseen
        # the oracle is the best grid point on test: no fixed fusion of the base beats it
        assert methods["oracle"]["ndcg@10"] >= methods["hybrid"]["ndcg@10"] - 1e-9
    for row in rows:
        _assert_significance(row, "hydra-unseen", slices[row["task"]])
        assert set(row["fusion"]) == {"hydra-unseen", "hydra-unseen-generic", "oracle"}
        assert row["fusion"]["hydra-unseen"]["query_gate"] is True
    assert pool["pool"]["tasks"] == 2
    assert {"hybrid", "hydra-unseen-generic", "better-channel", "oracle"} <= set(pool["pool"])
    for held_out, trained_on in (("scifact", "nfcorpus"), ("nfcorpus", "scifact")):
        config = json.loads((tmp_path / "loo" / f"without-{held_out}" / "config.json").read_text())
        assert config["metadata"]["tasks"] == [trained_on]
        # the gate learned from the other task's labels only, never from the held-out one's
        taught = config["metadata"]["fusion_labels"]
        assert {made_from(name) for name in taught} == {trained_on}, taught


def test_train_eval_compile_search(
    runner: CliRunner, tmp_path: Path, cards_dir: Path, nfcorpus_slice: RetrievalTask
) -> None:
    checkpoint = tmp_path / "ck"
    trained = runner.invoke(
        app,
        [
            "train",
            "--tasks",
            "scifact",
            "--tasks",
            "nfcorpus",
            "--out",
            str(checkpoint),
            "--epochs",
            "1",
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert "trainable parameters:" in trained.stdout
    assert (checkpoint / "model.safetensors").is_file()
    # Both cards declare train labels: they taught the fusion gate (with their synthetic
    # variants), and no test label did, so no row of theirs is in-pool.
    taught = json.loads((checkpoint / "config.json").read_text())["metadata"]["fusion_labels"]
    assert {made_from(name) for name in taught} == {"scifact", "nfcorpus"}, taught
    assert set(taught.values()) == {"train"}, taught

    # The installed console script, as a user runs it (environment from the runner fixture).
    evaluated = subprocess.run(
        [
            str(HYDRA),
            "eval",
            "--checkpoint",
            str(checkpoint),
            "--card",
            str(cards_dir / "nfcorpus.yaml"),
            "--refine",
            "3",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert "in-pool" not in evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["task"] == "nfcorpus"
    # nfcorpus has training labels, so the supervised reference is reported too.
    assert set(result["methods"]) == set(TABLE_METHODS) | {"hydra-refined", "supervised-head"}
    _assert_significance(result, "hydra", nfcorpus_slice)

    head_file = tmp_path / "head.safetensors"
    compiled = runner.invoke(
        app,
        ["compile", "scifact", "--checkpoint", str(checkpoint), "--out", str(head_file)]
        + ["--refine", "2"],
    )
    assert compiled.exit_code == 0, compiled.output
    assert "compiled in" in compiled.stdout and "the task's profile included" in compiled.stdout
    assert "refined with 2 steps" in compiled.stdout
    assert CompiledRetriever.load(head_file).task == "scifact"

    found = runner.invoke(
        app,
        [
            "search",
            "--checkpoint",
            str(checkpoint),
            "--card",
            "scifact",
            "-k",
            "3",
            "cholesterol and breast cancer",
        ],
    )
    assert found.exit_code == 0, found.output
    assert [line.split()[0] for line in found.stdout.splitlines()] == ["1", "2", "3"]


def test_unknown_card_is_a_clear_error(runner: CliRunner) -> None:
    result = runner.invoke(app, ["baselines", "no-such-task"])
    assert result.exit_code != 0
    assert "unknown task card 'no-such-task'" in str(result.exception)


def test_failures_exit_with_a_non_zero_status(tmp_path: Path) -> None:
    empty = {"HYDRA_WORKSPACE": str(tmp_path / "empty")}
    no_store = hydra("metrics", env=empty)
    assert no_store.returncode == 1, no_store.stderr
    assert no_store.stderr.startswith("error: no metrics database at ")
    no_config = hydra("metrics", env={"HYDRA_CONFIG": str(tmp_path / "nonexistent.yaml")})
    assert no_config.returncode == 2, no_config.stderr
    assert "nonexistent.yaml: project config file not found" in no_config.stderr
    unknown = hydra("run", "--tasks", "nosuch", env=empty)
    assert unknown.returncode == 2, unknown.stderr
    assert "unknown task card 'nosuch'" in unknown.stderr
    assert hydra("no-such-command").returncode == 2
    assert hydra("--help").returncode == 0


def test_a_bad_perturbation_in_the_config_stops_hydra_run_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "hydra.yaml"
    config.write_text('tasks: [scifact]\nrobustness: {perturbations: [typos, "drop:2"]}\n')
    result = hydra("run", env={"HYDRA_CONFIG": str(config), "HYDRA_WORKSPACE": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: {config} (field 'robustness.perturbations.1'): 'drop:2': bad rate '2'; "
        "expected KIND[:RATE] with KIND one of typos, drop, swap, noise, inflect and RATE in (0, 1]"
    ]
    assert list(tmp_path.iterdir()) == [config]  # nothing written


def test_metrics_sql_cannot_touch_files_and_the_store_survives_it(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    store = workspace / "metrics.duckdb"
    rows = {"task": ["a"], "method": ["base"], "split": ["test"], "metric": ["ndcg@10"]}
    record_metrics(str(store), pl.DataFrame({**rows, "value": [0.5]}), run_id="r", checkpoint="c")
    before = latest_long(str(store))
    env = {"HYDRA_WORKSPACE": str(workspace)}
    outside = tmp_path / "outside.csv"
    secret = tmp_path / "secret.txt"
    secret.write_text("not for SQL", encoding="utf-8")
    refused = {
        f"COPY (select 1) TO '{store}' (FORMAT csv)": "file system operations are disabled",
        f"COPY (select 1) TO '{outside}'": "file system operations are disabled",
        f"select * from read_text('{secret}')": "file system operations are disabled",
        "INSTALL httpfs": "file system operations are disabled",
        "SET enable_external_access = true": "the configuration has been locked",
        "DROP TABLE metrics": "read-only",
    }
    for sql, reason in refused.items():
        result = hydra("metrics", sql, env=env)
        assert result.returncode == 2, (sql, result.stdout, result.stderr)
        assert result.stderr.startswith("error: ") and reason in result.stderr, result.stderr
        assert "not for SQL" not in result.stdout
    assert not outside.exists()
    assert latest_long(str(store)).equals(before)
    counted = hydra("metrics", "select count(*) as n from metrics", "--format", "csv", env=env)
    assert counted.returncode == 0 and counted.stdout.splitlines() == ["n", "1"]


def test_metrics_prints_a_narrow_table_with_gains_and_help_lists_every_table(
    tmp_path: Path,
) -> None:
    """The default view fits a terminal line per row and has the gains; the per-query rows
    carry the query's text; every table and view has a comment, and --help lists them."""
    workspace = tmp_path / "workspace"
    store = str(workspace / "metrics.duckdb")
    methods = ["base", "hybrid", "hydra"]
    long = pl.DataFrame(
        {
            "task": ["a"] * 3,
            "method": methods,
            "split": ["test"] * 3,
            "metric": ["ndcg@10"] * 3,
            "value": [0.5, 0.52, 0.55],
        }
    )
    per_query = long.with_columns(pl.lit("q1").alias("query_id"))
    queries = pl.DataFrame({"query_id": ["q1", "q2"], "text": ["statins and cancer", "other"]})
    record_metrics(
        store, long, run_id="r" * 32, checkpoint="c", per_query=per_query, queries=queries
    )
    env = {"HYDRA_WORKSPACE": str(workspace)}
    shown = hydra("metrics", env=env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 4 + len(methods) and max(map(len, lines)) <= 100, shown.stdout
    assert "gain_over_base" in lines[1] and "gain_over_hybrid" in lines[1]
    as_csv = pl.read_csv(hydra("metrics", "--format", "csv", env=env).stdout.encode())
    hydra_row = as_csv.filter(pl.col("method") == "hydra").row(0, named=True)
    assert hydra_row["gain_over_base"] == pytest.approx(0.05)
    assert hydra_row["gain_over_hybrid"] == pytest.approx(0.03)
    texts = hydra("metrics", "select distinct query_id, query from latest_per_query", env=env)
    assert texts.returncode == 0 and "statins and cancer" in texts.stdout
    comments = pl.read_csv(
        hydra(
            "metrics",
            "select table_name as name, comment from duckdb_tables() union all "
            "select view_name, comment from duckdb_views() where not internal",
            "--format",
            "csv",
            env=env,
        ).stdout.encode()
    )
    assert comments["comment"].null_count() == 0
    assert set(comments["name"]) == set(DESCRIPTIONS)  # every table and view
    helped = hydra("metrics", "--help")
    assert helped.returncode == 0
    for name in comments["name"]:
        assert f"{name}:" in helped.stdout, name


def test_search_refuses_fewer_than_one_result_and_an_empty_query(tmp_path: Path) -> None:
    search = ("search", "--checkpoint", str(tmp_path), "--card", "scifact")
    for k in ("-1", "0"):
        refused = hydra(*search, "-k", k, "cancer")
        assert refused.returncode == 2 and f"{k} results: ask for at least 1" in refused.stderr
    for query in ("", "   "):
        refused = hydra(*search, query)
        assert refused.returncode == 2 and f"{query!r} is empty" in refused.stderr


def test_a_read_only_workspace_is_named_and_still_readable(tmp_path: Path) -> None:
    """A real read-only bind mount. With the Dagster folders already there, this used to end in
    SQLite's "unable to open database file", naming nothing."""
    workspace = tmp_path / "workspace"
    for folder in ("history", "storage", "schedules"):
        (workspace / "dagster" / folder).mkdir(parents=True)
    (workspace / "dagster" / "dagster.yaml").write_text(DAGSTER_YAML.format(max_concurrent=1))
    rows = {"task": ["a"], "method": ["base"], "split": ["test"], "metric": ["ndcg@10"]}
    store = str(workspace / "metrics.duckdb")
    record_metrics(store, pl.DataFrame({**rows, "value": [0.5]}), run_id="r", checkpoint="c")
    read_only = f"mount --bind {workspace} {workspace} && mount -o remount,bind,ro {workspace}"
    env = {**os.environ, "HYDRA_WORKSPACE": str(workspace)}

    def on_read_only_workspace(*args: str) -> subprocess.CompletedProcess[str]:
        command = mounted(read_only, [str(HYDRA), *args])
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)

    ran = on_read_only_workspace("run", "--tasks", "scifact")
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.splitlines() == [
        f"error: {workspace}: the workspace is not writable (Read-only file system); set "
        "HYDRA_WORKSPACE (or workspace in hydra.yaml) to a writable folder"
    ]
    shown = on_read_only_workspace("metrics", "--format", "csv")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[1].startswith("a,base,0.5,0.0,")


def test_a_full_disk_fails_naming_the_file_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """A real 64 KB tmpfs: the 400 KB head cannot fit. ``hydra train --out`` writes its
    checkpoint through the same save_tensors_atomic, but needs minutes to get there."""
    checkpoint = Hypernet(base_model="all-MiniLM-L6-v2").save(tmp_path / "checkpoint")
    full = tmp_path / "full"
    full.mkdir()
    head = full / "head.safetensors"
    compile_head = [str(HYDRA), "compile", "scifact", "--checkpoint", str(checkpoint)]
    then_list = ["sh", "-c", f'"$@"; status=$?; ls -A {full}; exit $status', "sh"]
    result = subprocess.run(
        mounted(
            f"mount -t tmpfs -o size=64k tmpfs {full}",
            [*then_list, *compile_head, "--out", str(head)],
        ),
        env={**os.environ, "HYDRA_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"error: {head}: Error while serializing: I/O error: No space left on device (os error 28)"
    )
    assert result.stdout == ""  # what the full disk holds after: no head, no temporary file


def test_compile_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    checkpoint = Hypernet(base_model="all-MiniLM-L6-v2").save(tmp_path / "checkpoint")
    head = tmp_path / "head.safetensors"
    head.write_bytes(b"a head the user keeps")
    compile_head = ["compile", "scifact", "--checkpoint", str(checkpoint), "--out", str(head)]
    refused = _console(*compile_head)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        f"error: {head}: exists already: pass --force to overwrite it"
    ]
    assert head.read_bytes() == b"a head the user keeps"
    forced = _console(*compile_head, "--force")
    assert forced.returncode == 0, forced.stderr
    assert CompiledRetriever.load(head).head is not None


def _console(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``hydra`` script in its own process: real exit status and streams."""
    return subprocess.run([str(HYDRA), *args], capture_output=True, text=True, check=False)


def test_train_refuses_a_folder_trained_on_other_tasks_unless_forced(
    runner: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "ck"
    first = runner.invoke(app, ["train", "--tasks", "nfcorpus", "--out", str(out), "--epochs", "1"])
    assert first.exit_code == 0, first.output
    written = {path.name: path.read_bytes() for path in out.iterdir()}

    refused = _console("train", "--tasks", "scifact", "--out", str(out), "--epochs", "1")
    assert refused.returncode == 2, refused.stderr
    error = refused.stderr.splitlines()[-1]
    assert error.startswith(f"error: {out}: ") and "tasks nfcorpus -> scifact" in error
    assert "--force" in error and f"resuming {out}" not in refused.stderr
    assert {path.name: path.read_bytes() for path in out.iterdir()} == written

    forced = runner.invoke(
        app, ["train", "--tasks", "scifact", "--out", str(out), "--epochs", "1", "--force"]
    )
    assert forced.exit_code == 0, forced.output
    metadata = Hypernet.load(out).metadata
    assert metadata["tasks"] == ["scifact"] and list(metadata["fingerprints"]) == ["scifact"]


def _add_card(folder: Path, name: str, like: Path, source: Path, labels: str | None = None) -> None:
    """A card ``name`` in ``folder`` with the text of the card file ``like``, reading ``source``
    (relative to ``folder``) and declaring ``labels``."""
    update = {"name": name, "source": str(source if source.is_absolute() else f"./{source}")}
    write_card(
        load_card(like).model_copy(update=update | {"labels": labels}), folder / f"{name}.yaml"
    )


def _tiny_task(folder: Path, task: RetrievalTask, like: Path) -> None:
    """``tiny``: ten documents, too few for the fused teachers to rank any below their top."""
    save_beir_folder(task.head(10, 5), folder / "data" / "tiny")
    _add_card(folder, "tiny", like, Path("data/tiny"))


def test_tasks_too_small_for_pairs_are_left_out_and_alone_fail_in_one_line(
    runner: CliRunner,
    tmp_path: Path,
    cards_dir: Path,
    scifact_slice: RetrievalTask,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``one`` has a single short document and so no training query at all."""
    small = tmp_path / "cards"
    _tiny_task(small, scifact_slice, cards_dir / "scifact.yaml")
    one = small / "data" / "one"
    (one / "qrels").mkdir(parents=True)
    (one / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "Bone density"}\n')
    (one / "queries.jsonl").write_text('{"_id": "q1", "text": "bone density"}\n')
    (one / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    _add_card(small, "one", cards_dir / "nfcorpus.yaml", Path("data/one"))
    nfcorpus = cards_dir / "nfcorpus.yaml"
    _add_card(small, "nfcorpus", nfcorpus, cards_dir / "data" / "nfcorpus", labels="train")
    monkeypatch.setenv("HYDRA_CARDS_DIR", str(small))

    alone = _console("train", "--tasks", "tiny", "--tasks", "one", "--out", str(tmp_path / "no"))
    assert alone.returncode == 2, alone.stderr
    assert "Traceback" not in alone.stderr
    assert alone.stderr.splitlines()[-1].startswith(
        "error: no task yields preference pairs to train on "
        "(tiny: 10 documents, 5 training queries; one: 1 document, 0 training queries)"
    )
    assert not (tmp_path / "no").exists()

    checkpoint = tmp_path / "ck"
    tasks = ["--tasks", "nfcorpus", "--tasks", "tiny", "--tasks", "one"]
    trained = runner.invoke(app, ["train", *tasks, "--out", str(checkpoint), "--epochs", "1"])
    assert trained.exit_code == 0, trained.output
    assert "tiny is left out of training" in caplog.text
    assert "one is left out of training" in caplog.text
    assert Hypernet.load(checkpoint).metadata["tasks"] == ["nfcorpus"]

    # The small tasks still get baselines, a compiled head and their table.
    assert runner.invoke(app, ["baselines", "tiny", "one"]).exit_code == 0
    head = tmp_path / "tiny.safetensors"
    compiled = runner.invoke(
        app, ["compile", "tiny", "--checkpoint", str(checkpoint), "--out", str(head)]
    )
    assert compiled.exit_code == 0, compiled.output
    assert CompiledRetriever.load(head).task == "tiny"
    evaluated = runner.invoke(
        app, ["eval", "--checkpoint", str(checkpoint), "--card", "one", "--refine", "2", "--json"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert set(json.loads(evaluated.stdout)["methods"]) == set(TABLE_METHODS) | {"hydra-refined"}
    assert "one: no preference pairs to refine on" in caplog.text


def test_eval_borrows_only_cards_that_load_for_the_shuffled_row(
    runner: CliRunner,
    tmp_path: Path,
    cards_dir: Path,
    scifact_slice: RetrievalTask,
    encoder: FrozenEncoder,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A card elsewhere in the folder whose source is missing must not fail eval of tiny."""
    folder = tmp_path / "cards"
    _tiny_task(folder, scifact_slice, cards_dir / "scifact.yaml")
    nfcorpus = cards_dir / "nfcorpus.yaml"
    _add_card(folder, "other", nfcorpus, cards_dir / "data" / "nfcorpus")
    _add_card(folder, "broken", nfcorpus, Path("data/missing"))
    monkeypatch.setenv("HYDRA_CARDS_DIR", str(folder))
    checkpoint = tmp_path / "untrained"
    reference = encoder.encode(scifact_slice.doc_texts(), "document")
    initial_hypernet(encoder.model_name, reference).save(checkpoint)

    evaluated = _console("eval", "--checkpoint", str(checkpoint), "--card", "tiny", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert set(json.loads(evaluated.stdout)["methods"]) == set(TABLE_METHODS)
    assert "skipping a card that does not load" in evaluated.stderr
    assert str(folder / "broken.yaml") in evaluated.stderr

    (folder / "other.yaml").unlink()  # no other card loads: no shuffled row, and a warning
    alone = runner.invoke(app, ["eval", "--checkpoint", str(checkpoint), "--card", "tiny"])
    assert alone.exit_code == 0, alone.output
    assert "hydra-shuffled" not in alone.stdout and "hydra-generic" in alone.stdout
    assert "no other task's card to shuffle with" in caplog.text
