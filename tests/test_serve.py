"""``hydra serve`` on what a real ``hydra run`` stored for two small real slices.

One module-scoped run materializes the pipeline; the service is built from its stored
results and answered by a real uvicorn on 127.0.0.1 in this process (so tests can also look
at the registry), and once more through the real console script.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch
import yaml
from pipeline_support import Project, make_project
from playwright.sync_api import Page, Route, expect
from system_tools import HYDRA, free_port, mounted, wait_until_answering

from hydra_core.data.beir_folder import load_beir_folder
from hydra_core.data.cards import TaskCard, find_card, load_card, write_card
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.data.tasks import load_task
from hydra_core.model.retriever import RetrieverIndex
from hydra_core.serving.fit_queue import FitState
from hydra_core.serving.http_api import (
    MAX_BODY_BYTES,
    MAX_K,
    Access,
    ServerLimits,
    create_app,
    running_server,
)
from hydra_core.serving.registry import (
    UNREADABLE_SOURCE,
    ChangePolicy,
    RetrieverSearcher,
    TaskRegistry,
)
from hydra_pipeline.artifacts import load_value, save_beir_folder, save_value
from hydra_pipeline.definitions import build_definitions
from hydra_pipeline.defs.jobs import REGISTERED_ASSET
from hydra_pipeline.load_test import local_address, run_load_test
from hydra_pipeline.project_config import ProjectConfig
from hydra_pipeline.runner import champion_checkpoint, current_checkpoint, run_pipeline
from hydra_pipeline.serve import build_registry

TASKS = ("scifact", "nfcorpus")
DOCS = 120
STARTUP_SECONDS = 300
KEY = "a-test-write-key-of-some-length"


@dataclass
class Served:
    project: Project
    config: ProjectConfig
    registry: TaskRegistry
    url: str
    started: datetime

    def call(self, method: str, path: str, body: object = None, **headers: str) -> tuple[int, Any]:
        """One request with the write key; ``body`` is sent as JSON, or as is when it is
        text or bytes."""
        return call(self.url, method, path, body, key=KEY, **headers)


def call(
    url: str,
    method: str,
    path: str,
    body: object = None,
    *,
    key: str | None = None,
    **headers: str,
) -> tuple[int, Any]:
    """One request; ``headers`` (``Content_Type`` for ``Content-Type``) add to or replace
    the ones sent."""
    data, kind = None, "application/json"
    if isinstance(body, bytes | str):
        data, kind = (body.encode() if isinstance(body, str) else body), "application/yaml"
    elif body is not None:
        data = json.dumps(body).encode()
    sent = {"Content-Type": kind} | ({"Authorization": f"Bearer {key}"} if key else {})
    sent |= {name.replace("_", "-"): value for name, value in headers.items()}
    request = urllib.request.Request(url + path, data=data, method=method, headers=sent)
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
        registry = build_registry(config, None, echo=lambda _: None, policy=_policy(project))
        with running_server(create_app(registry, Access(write_key=KEY))) as url:
            yield Served(project, config, registry, url, started)


def _policy(project: Project, **changes: Any) -> ChangePolicy:
    """Cards may read the project's data folder, as the data dir would be for hydra serve."""
    return replace(ChangePolicy(data_roots=(project.root / "data",)), **changes)


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
        ({"query": "a query", "k": MAX_K + 1}, "k"),  # not cut silently to what exists
        ({"query": "a query", "k": "3"}, "k"),  # strict types
        ({"query": "a query", "k": True}, "k"),
        ({"query": "a query", "k": 3.0}, "k"),
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
    # Inputs FastAPI's own handler could not echo as JSON (they used to answer 500).
    for raw, field in (
        ('{"query": "\\ud800"}', "query"),
        ('{"query": "a query", "k": 1e400}', "k"),
        ('{"query": "a query", "k": NaN}', "k"),
        ('{"query": NaN}', "query"),
        ('{"queries": ["\\udfff", "fine"]}', 0),
    ):
        path = search + "/batch" if "queries" in raw else search
        status, body = served.call("POST", path, raw, Content_Type="application/json")
        assert status == 422, raw
        assert body["detail"][0]["loc"][-1] == field, (raw, body)
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

    # A source under the data roots that does not load: the source field's problem, naming
    # the file that failed from its data root (no server path).
    corpus_file = unencoded / "corpus.jsonl"
    corpus_file.write_text("{not json\n" + corpus_file.read_text(), encoding="utf-8")
    card_text = _card(served.project, "broken", source="../data/unencoded").to_yaml()
    status, body = served.call("PUT", "/tasks/broken", card_text)
    assert (status, body["field"]) == (422, "source")
    problem = "card (field 'source'): unencoded/corpus.jsonl:1: invalid JSON"
    assert body["detail"].startswith(problem) and str(served.project.root) not in body["detail"]
    assert "broken" not in [task.card.name for task in served.registry.tasks()]


def test_put_sources_stay_under_the_data_roots(
    served: Served, tmp_path: Path, scifact_slice: RetrievalTask
) -> None:
    """Anything outside the data roots, missing, a file, or an ir_datasets id without a
    local copy gets one answer that names no server path (no existence oracle), and nothing
    is downloaded."""
    outside = tmp_path / "beir-outside"  # a valid BEIR folder, but not under a data root
    save_beir_folder(scifact_slice.head(20, 2), outside)
    inside_link = served.project.root / "data" / "link-out"
    inside_link.symlink_to(outside, target_is_directory=True)
    ir_home = Path(os.environ.get("IR_DATASETS_HOME", Path.home() / ".ir_datasets"))
    before = sorted(ir_home.rglob("*")) if ir_home.is_dir() else []
    answers = set()
    for source in (
        "/root/.ssh",
        "/etc",
        "/etc/passwd",
        "/no/such/folder",
        str(outside),
        "../data/link-out",  # a link under the root to a folder outside it
        "../data/../../" + outside.name,
        "antique",  # an ir_datasets id: would start a download
        "beir/nothing-here",
        "../data/unencoded-nowhere",
    ):
        card_text = _card(served.project, "probe", source=source).to_yaml()
        status, body = served.call("PUT", "/tasks/probe", card_text)
        answers.add((status, json.dumps(body, sort_keys=True)))
    assert answers == {
        (
            422,
            json.dumps(
                {"detail": f"card (field 'source'): {UNREADABLE_SOURCE}", "field": "source"},
                sort_keys=True,
            ),
        )
    }
    assert (sorted(ir_home.rglob("*")) if ir_home.is_dir() else []) == before
    assert "probe" not in [task.card.name for task in served.registry.tasks()]


def test_changes_need_the_write_key(served: Served) -> None:
    """PUT and DELETE: 401 without a key, 403 with a wrong one, 403 on a service started
    without a key (read-only); searches need none."""
    card_text = _card(served.project, "scifact-keyed").to_yaml()
    for method, body in (("PUT", card_text), ("DELETE", None)):
        status, answer = call(served.url, method, "/tasks/scifact-keyed", body)
        assert (status, answer["detail"]) == (401, "a write key is needed"), method
        status, answer = call(served.url, method, "/tasks/scifact-keyed", body, key=KEY[:-1] + "!")
        assert (status, answer["detail"]) == (403, "wrong write key"), method
    status, _ = call(served.url, "POST", "/tasks/scifact/search", {"query": "statins"})
    assert status == 200
    with running_server(create_app(served.registry)) as url:  # no key: read-only
        for method, body in (("PUT", card_text), ("DELETE", None)):
            status, answer = call(url, method, "/tasks/scifact-keyed", body, key=KEY)
            assert status == 403 and "read-only" in answer["detail"]
        assert call(url, "GET", "/tasks")[0] == 200
    assert "scifact-keyed" not in [task.card.name for task in served.registry.tasks()]
    schema = served.call("GET", "/openapi.json")[1]
    assert {"401", "403"} <= set(schema["paths"]["/tasks/{name}"]["delete"]["responses"])


def test_a_foreign_host_header_is_refused(served: Served) -> None:
    """DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends its own Host."""
    status, body = served.call("GET", "/tasks", Host="evil.example")
    assert (status, body) == (400, "Invalid host header")
    for host in ("localhost", "127.0.0.1"):
        port = served.url.rsplit(":", 1)[1]
        assert served.call("GET", "/health", Host=f"{host}:{port}")[0] == 200


def test_pipeline_tasks_are_kept_unless_allowed(served: Served) -> None:
    card_text = _card(served.project, "scifact").to_yaml()
    before = served.registry.get("scifact")
    for method, body in (("PUT", card_text), ("DELETE", None)):
        status, answer = served.call(method, "/tasks/scifact", body)
        assert status == 409 and "--replace-pipeline-tasks" in answer["detail"], method
    assert served.registry.get("scifact") is before
    status, answer = served.call("DELETE", "/tasks/nope")
    assert status == 404


def test_task_limit_delete_and_graph_files(served: Served) -> None:
    """At most ``max_tasks``; a DELETE frees the task (once no search holds it) and its
    HNSW graph file; a replaced task's graph leaves the cache folder too."""
    policy = _policy(served.project, max_tasks=len(TASKS) + 1, replace_pipeline_tasks=True)
    registry = build_registry(served.config, None, echo=lambda _: None, index="hnsw", policy=policy)
    ann = served.config.cache_dir / "ann"

    def graphs() -> set[Path]:
        return set(ann.glob("*.faiss"))

    with running_server(create_app(registry, Access(write_key=KEY))) as url:
        for revision in range(3):
            card = _card(served.project, "extra", description=f"Revision {revision}.")
            status, _ = call(url, "PUT", "/tasks/extra", card.to_yaml(), key=KEY)
            assert status == (201 if revision == 0 else 200)
            served_graphs = {task.searcher.graph_path for task in registry.tasks()}
            assert graphs() >= served_graphs and len(served_graphs) == len(TASKS) + 1
        extra_graph = registry.get("extra").searcher.graph_path
        status, body = call(
            url, "PUT", "/tasks/more", _card(served.project, "more").to_yaml(), key=KEY
        )
        assert status == 409 and "maximum of 3 tasks" in body["detail"]
        searcher = weakref.ref(registry.get("extra").searcher)
        assert call(url, "DELETE", "/tasks/extra", key=KEY)[0] == 204
        gc.collect()
        assert searcher() is None  # nothing holds its projection and graph any more
        assert extra_graph is not None and not extra_graph.exists()
        assert call(url, "POST", "/tasks/extra/search", {"query": "statins"})[0] == 404
        status, _ = call(
            url, "PUT", "/tasks/more", _card(served.project, "more").to_yaml(), key=KEY
        )
        assert status == 201
        assert call(url, "DELETE", "/tasks/nfcorpus", key=KEY)[0] == 204  # allowed here
        assert [task.card.name for task in registry.tasks()] == ["more", "scifact"]


def test_a_put_builds_its_task_outside_the_registry_lock(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading a corpus, compiling and building a graph take time: other changes must not
    wait for them (the lock is held only to check and swap)."""
    registry = served.registry
    held: list[bool] = []
    build = registry._build

    def watched(*args: Any) -> Any:
        held.append(registry._changes.locked())
        return build(*args)

    monkeypatch.setattr(registry, "_build", watched)  # the real build, observed
    card = _card(served.project, "scifact-unlocked")
    assert served.call("PUT", "/tasks/scifact-unlocked", card.to_yaml())[0] == 201
    monkeypatch.undo()
    assert held == [False]
    assert served.call("DELETE", "/tasks/scifact-unlocked")[0] == 204


def test_connections_that_never_finish_their_headers_are_closed(served: Served) -> None:
    """A silent connection and one stuck in its headers are closed by the server, and a
    real request is answered meanwhile (they used to stay open until no descriptor was
    left). The reads wait for the server to close, far longer than the timeout."""
    app = create_app(served.registry)
    with running_server(app, limits=ServerLimits(header_seconds=0.5)) as url:
        address = local_address(url)
        silent = socket.create_connection(address, timeout=120)
        partial = socket.create_connection(address, timeout=120)
        partial.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert call(url, "GET", "/health")[0] == 200
        for connection in (silent, partial):
            with connection:
                assert connection.recv(1024) == b""  # closed, not timed out (120 s)


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


def test_a_card_with_labels_is_served_at_once_and_adapted_in_the_background(
    served: Served,
) -> None:
    """The PUT answers with the compiled retriever serving; searches are answered while
    the fit waits (held, so nothing here depends on how long a fit takes); once it is done
    the adapted retriever serves, and GET says on how many judged queries."""
    registry, name = served.registry, "scifact-labelled"
    card = _card(served.project, name, labels="train")
    train = load_beir_folder(served.project.root / "data" / "scifact").split_qrels("train")
    judged = train.filter(pl.col("score") > 0)["query_id"].n_unique()
    with registry.fits.held():
        status, put = served.call("PUT", f"/tasks/{name}", card.to_yaml())
        assert status == 201
        assert (put["adapted"], put["labelled_queries"]) == (False, 0)
        assert put["fit"] in ("queued", "fitting")
        assert registry.fits.wait_until(name, FitState.FITTING, timeout=STARTUP_SECONDS)
        zero_shot = registry.get(name)
        status, body = served.call("POST", f"/tasks/{name}/search", {"query": "statins", "k": 3})
        assert status == 200 and len(body["hits"]) == 3
        status, got = served.call("GET", f"/tasks/{name}")
        assert status == 200 and (got["adapted"], got["fit"]) == (False, "fitting")
    assert registry.fits.wait(timeout=STARTUP_SECONDS)
    status, got = served.call("GET", f"/tasks/{name}")
    assert status == 200
    assert (got["adapted"], got["labelled_queries"], got["fit"]) == (True, judged, None)
    adapted = registry.get(name)
    assert adapted is not zero_shot and adapted.checkpoint == zero_shot.checkpoint
    assert isinstance(adapted.searcher, RetrieverSearcher)
    assert isinstance(zero_shot.searcher, RetrieverSearcher)
    assert adapted.searcher.compiled.labelled_queries == judged
    adapted_head, start_head = adapted.searcher.compiled.head, zero_shot.searcher.compiled.head
    assert adapted_head is not None and start_head is not None
    assert not torch.equal(adapted_head.weight, start_head.weight)
    status, body = served.call("POST", f"/tasks/{name}/search", {"query": "statins", "k": 3})
    assert status == 200 and len(body["hits"]) == 3
    assert served.call("DELETE", f"/tasks/{name}")[0] == 204


def test_a_replaced_or_deleted_task_drops_its_fit(served: Served) -> None:
    """One fit at a time: a task replaced while its fit runs keeps its replacement (the
    fit's result is dropped), and a task deleted while its fit waits in the queue is never
    fitted; labels the card's folder does not have are refused at once."""
    registry = served.registry
    running, waiting = "scifact-running", "scifact-waiting"
    with registry.fits.held():
        for name in (running, waiting):
            card = _card(served.project, name, labels="train")
            assert served.call("PUT", f"/tasks/{name}", card.to_yaml())[0] == 201
        assert registry.fits.wait_until(running, FitState.FITTING, timeout=STARTUP_SECONDS)
        assert served.call("GET", f"/tasks/{waiting}")[1]["fit"] == "queued"
        status, replaced = served.call(
            "PUT", f"/tasks/{running}", _card(served.project, running).to_yaml()
        )
        assert status == 200 and replaced["fit"] is None
        assert served.call("DELETE", f"/tasks/{waiting}")[0] == 204
        replacement = registry.get(running)
    assert registry.fits.wait(timeout=STARTUP_SECONDS)
    assert registry.get(running) is replacement and replacement.labelled_queries == 0
    assert served.call("GET", f"/tasks/{waiting}")[0] == 404

    status, body = served.call(
        "PUT", "/tasks/scifact-dev", _card(served.project, "scifact-dev", labels="dev").to_yaml()
    )
    assert (status, body["field"]) == (422, "labels") and "no 'dev' qrels" in body["detail"]
    assert served.call("DELETE", f"/tasks/{running}")[0] == 204


def test_load_test_while_a_card_is_replaced(served: Served, scifact_slice: RetrievalTask) -> None:
    queries = scifact_slice.queries["text"].to_list()
    card = _card(served.project, "scifact-load")
    report = run_load_test(
        served.url,
        TASKS,
        card,
        queries,
        clients=3,
        seconds=5,
        max_requests=3000,
        revisions=2,
        key=KEY,
    )
    assert report.puts == [201, 200, 200]
    assert report.requests > 0 and report.qps > 0
    assert (report.errors, report.dropped) == (0, 0)
    assert report.during_puts > 0 and report.failed_during_puts == 0
    assert 0 < report.p50_ms <= report.p99_ms
    # Without the key, or with a wrong one, every PUT is refused and no search fails.
    for key, refused in ((None, 401), ("a-wrong-key-of-the-same-size-x", 403)):
        other = card.model_copy(update={"name": "scifact-denied"})
        report = run_load_test(
            served.url, TASKS, other, queries, clients=2, seconds=2, max_requests=500, key=key
        )
        assert report.puts == [refused] * 4
        assert (report.errors, report.dropped) == (0, 0) and report.requests > 0
    assert "scifact-denied" not in [task.card.name for task in served.registry.tasks()]
    with pytest.raises(ValueError, match="127.0.0.1"):
        run_load_test("http://localhost:8000", TASKS, card, queries)


def _schema(schema: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """The component schema a documented response refers to."""
    reference = response["content"]["application/json"]["schema"]["$ref"]
    return schema["components"]["schemas"][reference.rsplit("/", 1)[1]]


def test_openapi_docs(served: Served) -> None:
    """The schema documents each error as the service sends it, and real examples."""
    status, page = served.call("GET", "/docs")
    assert status == 200 and "/docs/assets/swagger-ui-bundle.js" in page
    status, schema = served.call("GET", "/openapi.json")
    assert status == 200
    paths = schema["paths"]
    assert {"/tasks", "/health", "/tasks/{name}/search", "/tasks/{name}/search/batch"} <= set(paths)
    put = paths["/tasks/{name}"]["put"]
    assert {"application/yaml", "application/json"} <= set(put["requestBody"]["content"])
    assert set(put["responses"]) == {"200", "201", "401", "403", "409", "413", "422"}
    assert _schema(schema, put["responses"]["422"])["properties"]["detail"]["type"] == "string"
    search = paths["/tasks/{name}/search"]["post"]
    invalid = _schema(schema, search["responses"]["422"])
    assert invalid["properties"]["detail"]["type"] == "array"  # as FastAPI sends it
    status, sent = served.call("POST", "/tasks/scifact/search", {"query": "a", "k": "3"})
    assert status == 422 and isinstance(sent["detail"], list)
    field = schema["components"]["schemas"]["InvalidField"]
    assert set(sent["detail"][0]) == set(field["required"])
    request = schema["components"]["schemas"]["SearchRequest"]
    assert request["examples"] == [{"query": "statins and breast cancer", "k": 5}]
    assert request["properties"]["query"]["examples"] == ["statins and breast cancer"]
    assert "redoc" not in served.call("GET", "/redoc")[1]  # its page needs a CDN: not served


def test_docs_page_works_offline_in_a_browser(served: Served, page: Page) -> None:
    """Real chromium opens /docs with every request outside the service refused: the
    operations are listed, and the search example is a real query, not "string"."""
    outside: list[str] = []

    def only_the_service(route: Route) -> None:
        if route.request.url.startswith(served.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_service)
    page.goto(f"{served.url}/docs")
    search = page.locator("#operations-default-search_tasks__name__search_post")
    expect(search).to_be_visible()
    expect(search.get_by_text("/tasks/{name}/search", exact=True)).to_be_visible()
    search.get_by_text("/tasks/{name}/search", exact=True).click()
    expect(search.get_by_text('"statins and breast cancer"').first).to_be_visible()
    assert outside == []


def test_a_head_of_another_checkpoint_is_compiled_again(served: Served) -> None:
    """After a partial run the stored heads of other tasks are a former hypernet's: a
    champion other than the one that compiled them is compiled again."""
    record = champion_checkpoint(served.config)
    stored = served.config.workspace / "assets" / REGISTERED_ASSET
    messages: list[str] = []
    try:
        save_value(replace(record, checkpoint_id="a-later-one"), stored)
        registry = build_registry(served.config, None, echo=messages.append)
    finally:
        save_value(record, stored)
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


@contextmanager
def _hydra_serve(
    served: Served,
    log: Path,
    *arguments: str,
    mount: str | None = None,
    sigint_ignored: bool = False,
) -> Iterator[str]:
    """The real ``hydra serve`` (in a mount namespace after ``mount``, if given; started
    with SIGINT ignored, as a non-interactive shell starts a background job, if
    ``sigint_ignored``) on a free port: yields its URL once it answers, then stops it with
    Ctrl+C (SIGINT) and checks it ended with 130 (typer: KeyboardInterrupt)."""
    port = free_port()
    env = {**os.environ, **served.project.env(served.project.root / "cache")}
    env.pop("HYDRA_API_KEY", None)
    command = [str(HYDRA), "serve", "--port", str(port), *arguments]
    if sigint_ignored:  # an ignored signal stays ignored across exec
        command = ["sh", "-c", 'trap "" INT && exec "$@"', "sh", *command]
    with log.open("w") as stderr:
        server = subprocess.Popen(
            command if mount is None else mounted(mount, command),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(f"{url}/health", server, log, STARTUP_SECONDS, "hydra serve")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=120)
    assert server.returncode == 130, log.read_text()[-3000:]


def test_hydra_serve_console_script(served: Served, tmp_path: Path) -> None:
    """The real ``hydra serve``: binds 127.0.0.1 by default, searches, Ctrl+C stops it (130)."""
    log = tmp_path / "serve.log"
    with _hydra_serve(served, log, "--index", "hnsw") as url:
        status, body = call(url, "POST", "/tasks/nfcorpus/search", {"query": "vitamin D", "k": 2})
        assert status == 200 and len(body["hits"]) == 2
        assert call(url, "GET", "/health")[1]["index"] == "hnsw"
        assert call(url, "DELETE", "/tasks/nfcorpus", key=KEY)[0] == 403  # no key: read-only
    stderr = log.read_text()
    assert "hydra serve: 2 tasks (nfcorpus, scifact) over 2 corpora" in stderr
    assert "hnsw dense search, read-only;" in stderr
    assert "Uvicorn running on http://127.0.0.1:" in stderr


def test_hydra_serve_started_with_sigint_ignored_ends_with_130(
    served: Served, tmp_path: Path
) -> None:
    """A background job (``hydra serve &`` in a script) starts with SIGINT ignored: uvicorn
    still stops on Ctrl+C and raises the signal again under the ignoring handler, so nothing
    is raised after it; the status is 130 all the same (it was 0)."""
    log = tmp_path / "serve.log"
    with _hydra_serve(served, log, sigint_ignored=True) as url:
        assert call(url, "GET", "/health")[0] == 200
    assert "Traceback" not in log.read_text()


def test_hydra_serve_on_a_read_only_workspace(served: Served, tmp_path: Path) -> None:
    """Everything of the project (workspace, Dagster's stores, caches) on a read-only
    filesystem: served as it is, one line saying so, nothing written, no traceback."""
    root = served.project.root
    read_only = f"mount --bind {root} {root} && mount -o remount,bind,ro {root}"
    log = tmp_path / "serve.log"
    with _hydra_serve(served, log, mount=read_only) as url:
        body = {"query": "vitamin D deficiency", "k": 3}
        status, answer = call(url, "POST", "/tasks/scifact/search", body)
        assert status == 200 and len(answer["hits"]) == 3
        expected = served.call("POST", "/tasks/scifact/search", body)[1]["hits"]
        assert [hit["doc_id"] for hit in answer["hits"]] == [hit["doc_id"] for hit in expected]
    stderr = log.read_text()
    assert "Traceback" not in stderr
    assert f"{served.config.workspace} is read-only: serving without Dagster's record" in stderr
    assert "is read-only: new vectors are not stored" in stderr


def test_a_put_with_a_read_only_graph_cache_is_searched_exactly(
    served: Served, tmp_path: Path
) -> None:
    """``--index hnsw`` with the graph folder read-only: the stored graphs still serve, and
    a PUT card whose graph cannot be stored is served with exact dense search and a warning
    in the log."""
    ann = served.config.cache_dir / "ann"
    build_registry(served.config, None, echo=lambda _: None, index="hnsw")  # graphs stored
    graphs = sorted(ann.glob("*.faiss"))
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    read_only = f"mount --bind {ann} {ann} && mount -o remount,bind,ro {ann}"
    log = tmp_path / "serve.log"
    arguments = ("--index", "hnsw", "--api-key-file", str(key_file))
    with _hydra_serve(served, log, *arguments, mount=read_only) as url:
        card = _card(served.project, "extra", description="Claims about statins and cancer.")
        status, task = call(url, "PUT", "/tasks/extra", card.to_yaml(), key=KEY)
        assert status == 201, task  # it was a 500
        assert task["name"] == "extra"
        status, answer = call(url, "POST", "/tasks/extra/search", {"query": "statins", "k": 3})
        assert status == 200 and len(answer["hits"]) == 3
    stderr = log.read_text()
    assert "Traceback" not in stderr
    assert (
        f"HNSW graph not stored in {ann} (Read-only file system): this task's dense channel "
        "is searched exactly" in stderr
    )
    assert stderr.count("HNSW graph not stored") == 1  # the stored graphs were loaded
    assert sorted(ann.glob("*.faiss")) == graphs


def test_hydra_serve_without_a_champion_says_to_run_first(
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
        f"error: {project.workspace / 'assets' / 'registered_model'}: no champion hypernet "
        "yet: run `hydra run` (a checkpoint becomes the champion once every task passed its "
        "quality check), or pass --checkpoint DIR"
    ]


def test_hydra_serve_refuses_an_unknown_index() -> None:
    result = subprocess.run(
        [str(HYDRA), "serve", "--index", "ivf"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown index 'ivf': choose one of exact, hnsw"
    ]


@pytest.mark.parametrize(
    ("arguments", "key", "message"),
    [
        (
            ["--host", "0.0.0.0"],
            None,
            "error: --host 0.0.0.0 reaches beyond this machine, and the service has no write "
            "key: set HYDRA_API_KEY (or --api-key-file), or pass --public-without-key to serve "
            "it read-only to anyone who reaches it",
        ),
        (
            [],
            "short",
            "error: field 'HYDRA_API_KEY': the write key must have at least 16 characters, got 5",
        ),
    ],
)
def test_hydra_serve_refuses_an_open_or_weak_setup(
    arguments: list[str], key: str | None, message: str
) -> None:
    """Refused before anything loads, in one line."""
    env = {name: value for name, value in os.environ.items() if name != "HYDRA_API_KEY"}
    env |= {"HYDRA_API_KEY": key} if key else {}
    result = subprocess.run(
        [str(HYDRA), "serve", *arguments], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [message]
