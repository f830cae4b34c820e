"""``hydra serve`` on what a real ``hydra run`` stored for two small real slices.

One module-scoped run materializes the pipeline; the service is built from its stored
results and answered by a real uvicorn on 127.0.0.1 in this process (so tests can also look
at the registry), and once more through the real console script.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pytest
import torch
import yaml
from pipeline_support import Project, make_project
from system_tools import HYDRA, free_port

from hydra_core.data.cards import TaskCard, find_card, load_card, write_card
from hydra_core.data.tasks import RetrievalTask, load_task
from hydra_core.model.retriever import RetrieverIndex
from hydra_core.serving.http_api import MAX_BODY_BYTES, create_app, running_server
from hydra_core.serving.registry import RetrieverSearcher, TaskRegistry
from hydra_pipeline.artifacts import load_value, save_beir_folder, save_value
from hydra_pipeline.definitions import build_definitions
from hydra_pipeline.load_test import local_address, run_load_test
from hydra_pipeline.project_config import ProjectConfig
from hydra_pipeline.runner import current_checkpoint, run_pipeline
from hydra_pipeline.serve import build_registry

TASKS = ("scifact", "nfcorpus")
DOCS = 120
STARTUP_SECONDS = 300


@dataclass
class Served:
    project: Project
    config: ProjectConfig
    registry: TaskRegistry
    url: str
    started: datetime

    def call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        """One request; ``body`` is sent as JSON, or as is when it is text or bytes."""
        return call(self.url, method, path, body)


def call(url: str, method: str, path: str, body: object = None) -> tuple[int, Any]:
    data, kind = None, "application/json"
    if isinstance(body, bytes | str):
        data, kind = (body.encode() if isinstance(body, str) else body), "application/yaml"
    elif body is not None:
        data = json.dumps(body).encode()
    request = urllib.request.Request(
        url + path, data=data, method=method, headers={"Content-Type": kind}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    return status, json.loads(raw) if raw.strip().startswith((b"{", b"[")) else raw.decode()


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
    scifact_slice: RetrievalTask,
    nfcorpus_slice: RetrievalTask,
) -> Iterator[Served]:
    started = datetime.now(UTC)
    slices = (scifact_slice, nfcorpus_slice)
    tasks = {name: task.head(DOCS, 10) for name, task in zip(TASKS, slices, strict=True)}
    project = make_project(tmp_path_factory.mktemp("serve"), tasks)
    # What serving needs, and no more: no labels (their reference rows train two more
    # heads and a hypernet) and no refined rows.
    for name in TASKS:
        card_file = project.cards_dir / f"{name}.yaml"
        write_card(load_card(card_file).model_copy(update={"labels": None}), card_file)
    config_data = yaml.safe_load(project.config_file.read_text())
    config_data["training"]["refine_steps"] = 0
    project.config_file.write_text(yaml.safe_dump(config_data))
    with pytest.MonkeyPatch.context() as patch:
        config = project.enter(patch)
        with dg.DagsterInstance.get() as instance:
            run_pipeline(config, build_definitions(config), instance, echo=lambda _: None)
        registry = build_registry(config, None, echo=lambda _: None)
        with running_server(create_app(registry)) as url:
            yield Served(project, config, registry, url, started)


def _card(project: Project, name: str, **changes: object) -> TaskCard:
    """The project's SciFact card under another name (same corpus), with ``changes``."""
    card = find_card("scifact", project.cards_dir)
    return card.model_copy(update={"name": name, **changes})


def test_tasks_and_health(served: Served) -> None:
    record = current_checkpoint(served.config)
    assert record is not None
    status, tasks = served.call("GET", "/tasks")
    assert status == 200
    assert [task["name"] for task in tasks] == sorted(TASKS)
    for task in tasks:
        assert task["corpus_size"] == DOCS
        assert task["checkpoint"] == record.checkpoint_id
        compiled_at = datetime.fromisoformat(task["compiled_at"])
        assert served.started < compiled_at < datetime.now(UTC)
        head_parameters = 256 * 384 + 3 * 256
        assert task["task_bytes"] == (DOCS * 256 + head_parameters) * 4
    status, health = served.call("GET", "/health")
    assert status == 200
    assert health["status"] == "ok" and health["tasks"] == 2
    assert health["checkpoint"] == record.checkpoint_id


def test_tasks_over_one_corpus_share_it(served: Served) -> None:
    scifact = served.registry.get("scifact")
    nfcorpus = served.registry.get("nfcorpus")
    assert scifact.corpus is not nfcorpus.corpus
    status, _ = served.call(
        "PUT", "/tasks/scifact-shared", _card(served.project, "scifact-shared").to_yaml()
    )
    assert status == 201
    shared = served.registry.get("scifact-shared")
    assert shared.corpus is scifact.corpus  # the base embeddings are held once
    assert isinstance(shared.searcher, RetrieverSearcher)
    assert isinstance(scifact.searcher, RetrieverSearcher)
    own, other = shared.searcher.index.doc_vectors, scifact.searcher.index.doc_vectors
    assert own is not other  # its own projection


def test_search_ranks_as_hydra_search_does(served: Served) -> None:
    """The service's hits are the in-process path's (``hydra search``: RetrieverIndex)."""
    assets = served.config.workspace / "assets"
    compiled = load_value(assets / "compiled_retriever" / "scifact")
    embeddings = load_value(assets / "doc_embeddings" / "scifact")
    corpus = load_value(assets / "corpus" / "scifact")
    query = "cholesterol and breast cancer"
    lexical = served.registry.get("scifact").corpus.lexical
    index = RetrieverIndex(
        compiled, embeddings.ids, embeddings.vectors, lexical, served.registry.encoder.encoder
    )
    expected = index.search(["q"], [query], 5)

    status, body = served.call("POST", "/tasks/scifact/search", {"query": query, "k": 5})
    assert status == 200
    hits = body["hits"]
    assert [hit["doc_id"] for hit in hits] == expected["doc_id"].to_list()
    np.testing.assert_allclose([hit["score"] for hit in hits], expected["score"], atol=1e-5)
    titles = dict(zip(corpus["doc_id"], corpus["title"], strict=True))
    assert [hit["title"] for hit in hits] == [titles[hit["doc_id"]] for hit in hits]
    assert body["task"] == "scifact" and body["checkpoint"] == served.registry.checkpoint

    status, batch = served.call(
        "POST", "/tasks/scifact/search/batch", {"queries": [query, "vitamin D"], "k": 5}
    )
    assert status == 200
    assert len(batch["results"]) == 2
    assert [hit["doc_id"] for hit in batch["results"][0]] == [hit["doc_id"] for hit in hits]


def test_hnsw_search_serves_the_exact_top_hits(served: Served) -> None:
    """``--index hnsw``: every task's graph is built once into the cache folder (a second
    start loads it), and on these small corpora a real request gets exact search's hits."""
    registry = build_registry(served.config, None, echo=lambda _: None, index="hnsw")
    graphs = sorted((served.config.cache_dir / "ann").glob("*.faiss"))
    assert len(graphs) == len(TASKS)
    searchers = [registry.get(name).searcher for name in TASKS]
    assert all(isinstance(s, RetrieverSearcher) and s.index.approximate for s in searchers)
    with running_server(create_app(registry)) as url:
        status, health = call(url, "GET", "/health")
        assert (status, health["index"]) == (200, "hnsw")
        for name in TASKS:
            for query in ("cholesterol and breast cancer", "vitamin D deficiency"):
                body = {"query": query, "k": 10}
                status, approximate = call(url, "POST", f"/tasks/{name}/search", body)
                assert status == 200
                status, exact = served.call("POST", f"/tasks/{name}/search", body)
                assert status == 200
                ids = [hit["doc_id"] for hit in approximate["hits"]]
                assert ids == [hit["doc_id"] for hit in exact["hits"]], (name, query)
                np.testing.assert_allclose(
                    [hit["score"] for hit in approximate["hits"]],
                    [hit["score"] for hit in exact["hits"]],
                    atol=1e-5,
                )
        status, tasks = call(url, "GET", "/tasks")
        exact_bytes = {task.card.name: task.searcher.nbytes for task in served.registry.tasks()}
        for task in tasks:  # the graph is the task's own memory too
            assert task["task_bytes"] > exact_bytes[task["name"]]
    assert served.call("GET", "/health")[1]["index"] == "exact"
    again = build_registry(served.config, None, echo=lambda _: None, index="hnsw")
    for name in TASKS:
        searcher = again.get(name).searcher
        assert isinstance(searcher, RetrieverSearcher) and searcher.index.approximate is not None
        assert not searcher.index.approximate.built  # read from the cache
    assert sorted((served.config.cache_dir / "ann").glob("*.faiss")) == graphs


def test_bad_requests_get_json_4xx(served: Served) -> None:
    search = "/tasks/scifact/search"
    status, body = served.call("POST", "/tasks/nope/search", {"query": "a query"})
    names = ", ".join(task.card.name for task in served.registry.tasks())
    assert (status, body["detail"]) == (404, f"unknown task 'nope'; served: {names}")
    for bad, field in (
        ({"query": "a query", "k": 0}, "k"),
        ({"query": "a query", "k": 1001}, "k"),
        ({"query": "   "}, "query"),
        ({"query": "x" * 2001}, "query"),
        ({"query": "a query", "extra": 1}, "extra"),
        ({}, "query"),
    ):
        status, body = served.call("POST", search, bad)
        assert status == 422, bad
        assert body["detail"][0]["loc"][-1] == field, (bad, body)
    status, body = served.call("POST", search + "/batch", {"queries": ["q"] * 65})
    assert status == 422 and body["detail"][0]["loc"][-1] == "queries"
    status, body = served.call("POST", search, '{"query": "unterminated')
    assert status == 422 and isinstance(body["detail"], list)
    for chunked in (False, True):
        assert _oversized(served.url, search, chunked=chunked) == (413, "Content Too Large")


def _oversized(url: str, path: str, *, chunked: bool) -> tuple[int, str]:
    """POST one byte more than the limit: declared up front (and then not sent, since the
    server answers at once), or streamed in chunks without a declared length."""
    connection = HTTPConnection(*local_address(url), timeout=120)
    connection.putrequest("POST", path)
    connection.putheader("Content-Type", "application/json")
    if chunked:
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        chunk = b"x" * (MAX_BODY_BYTES + 1)
        connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    else:
        connection.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
        connection.endheaders()
    response = connection.getresponse()
    detail = json.loads(response.read())["detail"]
    connection.close()
    return response.status, detail


def test_malformed_cards_are_refused_naming_the_field(served: Served, data_dir: Path) -> None:
    card = _card(served.project, "broken")
    text = yaml.safe_dump({**card.model_dump(mode="json"), "domain": ""}, sort_keys=False)
    status, body = served.call("PUT", "/tasks/broken", text)
    assert status == 422
    assert body["field"] == "domain" and body["line"] == text.splitlines().index("domain: ''") + 1
    assert body["detail"].startswith(f"card (line {body['line']}, field 'domain'): ")

    status, body = served.call("PUT", "/tasks/other", card.model_dump_json(exclude={"card_path"}))
    assert (status, body["field"]) == (422, "name")
    status, body = served.call("PUT", "/tasks/broken", "name: [unclosed")
    assert status == 422 and "invalid YAML" in body["detail"]
    status, body = served.call("PUT", "/tasks/broken", b"\xff\xfe")
    assert status == 422 and "UTF-8" in body["detail"]

    # A corpus nobody encoded: the service refuses it rather than encode it in a request.
    unencoded = served.project.root / "data" / "unencoded"
    save_beir_folder(load_task("beir/scifact", data_dir=data_dir).head(DOCS + 30, 5), unencoded)
    status, body = served.call(
        "PUT",
        "/tasks/broken",
        _card(served.project, "broken", source="../data/unencoded").to_yaml(),
    )
    assert status == 409 and body["field"] == "source"
    assert "not in the embedding cache" in body["detail"]

    # A source that does not load: the source field's problem, naming the file that failed.
    corpus_file = unencoded / "corpus.jsonl"
    corpus_file.write_text("{not json\n" + corpus_file.read_text(), encoding="utf-8")
    for source, problem in (
        ("../data/unencoded", "/data/unencoded/corpus.jsonl:1: invalid JSON"),
        ("beir/nothing-here", "'beir/nothing-here' is not a known ir_datasets id"),
    ):
        card_text = _card(served.project, "broken", source=source).to_yaml()
        status, body = served.call("PUT", "/tasks/broken", card_text)
        assert (status, body["field"]) == (422, "source")
        assert body["detail"].startswith("card (field 'source'): ") and problem in body["detail"]
    assert "broken" not in [task.card.name for task in served.registry.tasks()]


def test_a_put_card_replaces_the_old_task_atomically(served: Served) -> None:
    card = _card(served.project, "scifact-claims")
    status, created = served.call("PUT", "/tasks/scifact-claims", card.to_yaml())
    assert status == 201 and created["name"] == "scifact-claims"
    old = served.registry.get("scifact-claims")

    edited = card.model_copy(update={"description": "Find papers that contradict a claim."})
    status, replaced = served.call(
        "PUT", "/tasks/scifact-claims", edited.model_dump_json(exclude={"card_path"})
    )
    assert status == 200  # JSON is a card too
    new = served.registry.get("scifact-claims")
    assert new is not old and new.card.description == edited.description
    assert replaced["compiled_at"] > created["compiled_at"]
    assert isinstance(old.searcher, RetrieverSearcher)
    assert isinstance(new.searcher, RetrieverSearcher)
    old_head, new_head = old.searcher.compiled.head, new.searcher.compiled.head
    assert old_head is not None and new_head is not None
    assert not torch.equal(old_head.weight, new_head.weight)
    # A request that got the old task before the swap finishes on it.
    assert len(old.search(["statins"], 3)[0]) == 3
    status, body = served.call("POST", "/tasks/scifact-claims/search", {"query": "statins", "k": 3})
    assert status == 200 and len(body["hits"]) == 3


def test_load_test_while_a_card_is_replaced(served: Served, scifact_slice: RetrievalTask) -> None:
    queries = scifact_slice.queries["text"].to_list()
    card = _card(served.project, "scifact-load")
    report = run_load_test(
        served.url, TASKS, card, queries, clients=3, seconds=5, max_requests=3000, revisions=2
    )
    assert report.puts == [201, 200, 200]
    assert report.requests > 0 and report.qps > 0
    assert (report.errors, report.dropped) == (0, 0)
    assert report.during_puts > 0 and report.failed_during_puts == 0
    assert 0 < report.p50_ms <= report.p99_ms
    with pytest.raises(ValueError, match="127.0.0.1"):
        run_load_test("http://localhost:8000", TASKS, card, queries)


def test_openapi_docs(served: Served) -> None:
    status, page = served.call("GET", "/docs")
    assert status == 200 and "swagger" in page.lower()
    status, schema = served.call("GET", "/openapi.json")
    assert status == 200
    paths = schema["paths"]
    assert {"/tasks", "/health", "/tasks/{name}/search", "/tasks/{name}/search/batch"} <= set(paths)
    put = paths["/tasks/{name}"]["put"]
    assert {"application/yaml", "application/json"} <= set(put["requestBody"]["content"])
    assert {"201", "404", "409", "413", "422"} <= set(put["responses"])


def test_a_head_of_another_checkpoint_is_compiled_again(served: Served) -> None:
    """After a partial run the stored heads of other tasks are a former hypernet's."""
    record = current_checkpoint(served.config)
    assert record is not None
    stored = served.config.workspace / "assets" / "hypernet_checkpoint"
    original = stored.with_suffix(".json").read_bytes()
    messages: list[str] = []
    try:
        save_value(replace(record, checkpoint_id="a-later-one"), stored)
        registry = build_registry(served.config, None, echo=messages.append)
    finally:
        stored.with_suffix(".json").write_bytes(original)
    assert sorted(messages) == [
        f"{name}: stored retriever not by checkpoint a-later-one; compiling it"
        for name in sorted(TASKS)
    ]
    assert {task.checkpoint for task in registry.tasks()} == {"a-later-one"}
    assert all(task.compiled_at > served.started for task in registry.tasks())


def test_checkpoint_mode_compiles_the_same_heads(served: Served) -> None:
    record = current_checkpoint(served.config)
    assert record is not None
    registry = build_registry(served.config, Path(record.path), echo=lambda _: None)
    assert registry.checkpoint == record.checkpoint_id
    for name in TASKS:
        mine, stored = registry.get(name).searcher, served.registry.get(name).searcher
        assert isinstance(mine, RetrieverSearcher) and isinstance(stored, RetrieverSearcher)
        assert mine.compiled.head is not None and stored.compiled.head is not None
        torch.testing.assert_close(mine.compiled.head.weight, stored.compiled.head.weight)
        assert mine.compiled.fusion == stored.compiled.fusion
        np.testing.assert_allclose(mine.index.doc_vectors, stored.index.doc_vectors, atol=1e-5)


def test_hydra_serve_console_script(served: Served) -> None:
    """The real ``hydra serve``: binds 127.0.0.1 by default, searches, Ctrl+C stops it (130)."""
    port = free_port()
    env = {**os.environ, **served.project.env(served.project.root / "cache")}
    server = subprocess.Popen(
        [str(HYDRA), "serve", "--port", str(port), "--index", "hnsw"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if call(url, "GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        status, body = call(url, "POST", "/tasks/nfcorpus/search", {"query": "vitamin D", "k": 2})
        assert status == 200 and len(body["hits"]) == 2
        assert call(url, "GET", "/health")[1]["index"] == "hnsw"
    finally:
        os.killpg(server.pid, signal.SIGINT)
        _, stderr = server.communicate(timeout=60)
    assert server.returncode == 130, stderr  # typer: KeyboardInterrupt ends with 130
    assert "hydra serve: 2 tasks (nfcorpus, scifact) over 2 corpora" in stderr
    assert "hnsw dense search" in stderr
    assert f"Uvicorn running on http://127.0.0.1:{port}" in stderr


def test_hydra_serve_without_results_says_to_run_first(
    tmp_path: Path, scifact_slice: RetrievalTask
) -> None:
    project = make_project(tmp_path, {"scifact": scifact_slice.head(20, 2)})
    env = {**os.environ, **project.env(tmp_path / "cache")}
    result = subprocess.run(
        [str(HYDRA), "serve"], env=env, capture_output=True, text=True, timeout=STARTUP_SECONDS
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"error: {project.workspace / 'assets'}: no pipeline results to serve: "
        "run `hydra run` first (or pass --checkpoint DIR)"
    ]


def test_hydra_serve_refuses_an_unknown_index() -> None:
    result = subprocess.run(
        [str(HYDRA), "serve", "--index", "ivf"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown index 'ivf': choose one of exact, hnsw"
    ]
