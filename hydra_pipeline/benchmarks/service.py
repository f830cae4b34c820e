"""Figures 8, 9 and the quality comparison: the pipeline, the HTTP service under load,
and the encoder backends' NDCG@10."""

from __future__ import annotations

import gc
import itertools
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from http.client import HTTPConnection
from typing import Any

import numpy as np
import yaml

from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.data.tasks import load_task
from hydra_core.encoding.embedding_cache import EmbeddingCache
from hydra_core.encoding.encoder import (
    BACKENDS,
    Backend,
    FrozenEncoder,
    Precision,
    default_precision,
)
from hydra_core.settings import PROJECT_ROOT
from hydra_pipeline.benchmarks.inputs import (
    BASE_DIM,
    BenchSizes,
    benchmark_corpus,
    benchmark_documents,
    unit_vectors,
    untrained_hypernet,
)
from hydra_pipeline.benchmarks.measuring import Figure, interleaved, rss_mib, scratch_dir


def serve_figure(sizes: BenchSizes) -> Figure:
    """9. Tasks served by one process over one corpus: memory per extra task, single-query
    latency over HTTP against ``hydra search``'s in-process path, and the load test.

    The service (:mod:`hydra_core.serving.registry`) holds the corpus' base vectors once and each
    task its head and projection of the corpus; it runs on a real uvicorn on 127.0.0.1 in
    this process. The vectors are synthetic (as in figures 4-7), the cards the shipped
    SciFact card under new names (compiled by a hypernet of the real architecture), and
    the queries the development collections' real ones, each made new per measurement (a
    suffix), so both sides encode every query. The in-process side is ``hydra search``
    without its loading: a ``RetrieverIndex`` of the same retriever and ``search`` (which also
    stores each query in the embedding cache). ``service`` is the service's own search
    without HTTP, so ``http`` minus ``service`` is what HTTP costs. Memory is resident
    memory (VmRSS) before and after the extra tasks are added.
    """
    from hydra_core.data.cards import find_card
    from hydra_core.model.retriever import RetrieverIndex
    from hydra_core.model.task_profile import CorpusSample
    from hydra_core.ranking.teachers import BM25Teacher
    from hydra_core.serving.http_api import Access, create_app, running_server
    from hydra_core.serving.registry import Corpus, RetrieverSearcher, TaskRegistry
    from hydra_pipeline.load_test import local_address, run_load_test

    template = find_card("scifact", PROJECT_ROOT / "cards").model_copy(
        update={"source": "bench", "labels": None}  # served as compiled: no fit to wait on
    )

    def card(name: str) -> Any:
        return template.model_copy(
            update={"name": name, "description": f"{template.description} ({name})"}
        )

    n_docs = sizes.corpus_docs
    _, queries = benchmark_corpus(0, sizes.single_queries)
    with scratch_dir() as folder:
        encoder = FrozenEncoder(cache=EmbeddingCache(folder / "e.sqlite"), show_progress=False)
        registry = TaskRegistry(encoder, untrained_hypernet(), "benchmark", PROJECT_ROOT / "cards")
        ids = [str(i) for i in range(n_docs)]
        texts = list(benchmark_documents(n_docs))
        lexical = BM25Teacher().index(ids, texts)
        titles = [f"document {i}" for i in ids]
        vectors = unit_vectors(n_docs, BASE_DIM, 5)
        corpus = Corpus("bench", ids, titles, vectors, lexical, CorpusSample.of(texts))
        first = registry.add(card("task-0"), corpus)  # loads the model: compiling encodes
        registry.encoder.queries(["load the query path before measuring"])
        gc.collect()
        before = rss_mib()
        for index in range(1, sizes.serve_tasks):
            registry.add(card(f"task-{index}"), corpus)
        gc.collect()
        extra_task_mib = (rss_mib() - before) / (sizes.serve_tasks - 1)
        searcher = first.searcher
        assert isinstance(searcher, RetrieverSearcher)
        search_index = RetrieverIndex(searcher.compiled, ids, corpus.vectors, lexical, encoder)
        key = secrets.token_urlsafe(24)
        with running_server(create_app(registry, Access(write_key=key))) as url:
            connection = HTTPConnection(*local_address(url), timeout=60)
            turns = {side: itertools.count() for side in ("http", "service", "in_process")}

            def new_query(side: str) -> str:
                """The next query, made new for this side so that it is encoded."""
                return f"{queries[next(turns[side]) % len(queries)]} ({side})"

            def over_http() -> None:
                body = json.dumps({"query": new_query("http"), "k": 10})
                kind = {"Content-Type": "application/json"}
                connection.request("POST", "/tasks/task-0/search", body, kind)
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"search answered {response.status}")

            times = interleaved(
                {
                    "http": over_http,
                    "service": lambda: first.search([new_query("service")], 10),
                    "in_process": lambda: search_index.search(["q"], [new_query("in_process")], 10),
                },
                sizes.single_queries,
            )
            connection.close()
            load = run_load_test(
                url,
                ["task-0", "task-1"],
                card("task-put"),
                queries,
                clients=3,
                seconds=sizes.load_seconds,
                max_requests=sizes.load_requests,
                key=key,
            )
    figure: Figure = {
        "documents": n_docs,
        "tasks": sizes.serve_tasks,
        "corpus_mib": round(corpus.vectors.nbytes / 2**20, 1),
        "task_mib_accounted": round(first.searcher.nbytes / 2**20, 2),
        "extra_task_rss_mib": round(extra_task_mib, 1),
        "single_queries": sizes.single_queries,
    }
    for name, seconds in times.items():
        figure[f"{name}_p50_ms"] = round(float(np.percentile(seconds, 50)) * 1e3, 2)
        figure[f"{name}_p99_ms"] = round(float(np.percentile(seconds, 99)) * 1e3, 2)
    figure["http_vs_in_process_p50_ratio"] = round(
        figure["http_p50_ms"] / figure["in_process_p50_ms"], 2
    )
    figure.update({f"load_{key}": value for key, value in asdict(load).items()})
    return figure


def pipeline_figure(sizes: BenchSizes) -> Figure:
    """8. Wall time of a cold and a warm ``hydra run`` on one small task (a SciFact slice).

    Runs the real command in a throwaway project with its own empty cache and counts the
    texts each run encodes (new cache entries): the warm one must encode none.
    """
    if sizes.quick:
        return {"skipped": "--quick: a cold hydra run trains a hypernet (minutes)"}
    from hydra_core.data.cards import find_card, write_card
    from hydra_pipeline.artifacts import save_beir_folder

    task = load_task("beir/scifact").head(sizes.pipeline_docs, sizes.pipeline_queries)
    with scratch_dir() as root:
        save_beir_folder(task, root / "data" / "scifact")
        card = find_card("scifact", PROJECT_ROOT / "cards")
        write_card(
            card.model_copy(update={"source": "../data/scifact"}), root / "cards" / "scifact.yaml"
        )
        config = {
            "tasks": ["scifact"],
            "workspace": "workspace",
            "executor": {"kind": "in_process"},
            "training": {"train": {"epochs": 2, "steps_per_epoch": 8, "pairs_per_task": 32}},
        }
        (root / "hydra.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        env = {
            **os.environ,
            "HYDRA_CONFIG": str(root / "hydra.yaml"),
            "HYDRA_CARDS_DIR": str(root / "cards"),
            "HYDRA_WORKSPACE": str(root / "workspace"),
            "HYDRA_CACHE_DIR": str(root / "cache"),
            "DAGSTER_HOME": str(root / "dagster_home"),
        }
        cache = root / "cache" / "embeddings.sqlite"
        figure: Figure = {"documents": task.corpus.height, "task": "scifact slice"}
        cached = 0
        for name in ("cold", "warm"):
            seconds, launched, code = _hydra_run(env)
            now_cached = EmbeddingCache(cache).count() if cache.is_file() else 0
            figure[f"{name}_s"] = round(seconds, 1)
            figure[f"{name}_runs_launched"] = launched
            figure[f"{name}_texts_encoded"] = now_cached - cached
            figure[f"{name}_exit_code"] = code
            cached = now_cached
    return figure


def _hydra_run(env: dict[str, str]) -> tuple[float, int, int]:
    """Run ``hydra run``; return wall seconds, Dagster runs launched and the exit code.

    Texts encoded are counted by the caller from the cache: the encoder encodes only
    misses and stores each, so new cache entries are exactly the texts it encoded.
    """
    command = [sys.executable, "-c", "from hydra_pipeline.cli import main; main()", "run"]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    launched = re.search(r"done in [\d.]+s: (\d+) runs", result.stderr)
    return seconds, int(launched.group(1)) if launched else 0, result.returncode


def quality_figure(tasks: Sequence[str] = ("scifact", "nfcorpus")) -> Figure:
    """NDCG@10 of the frozen base per backend and precision, on each task's full test split.

    Decides whether the fast backend may be the default: its difference from the torch
    path must stay within 0.002 everywhere. Uses the project's embedding cache (backends
    have distinct cache identities), so a second run is quick.
    """
    from hydra_core.data.cards import find_card
    from hydra_core.data.opened_task import load_card_task
    from hydra_core.evaluation.methods import EVAL_SPLIT, score_ranking
    from hydra_core.ranking.teacher_rankings import FUSED_DEPTH
    from hydra_core.ranking.teachers import DenseTeacher

    precision = default_precision()
    precisions: list[Precision] = ["fp32"] if precision == "fp32" else ["fp32", precision]
    configs: list[tuple[Backend, Precision]] = [(b, p) for p in precisions for b in BACKENDS]
    figure: Figure = {}
    for name in tasks:
        task: RetrievalTask = load_card_task(find_card(name, PROJECT_ROOT / "cards"))
        queries = task.split_queries(EVAL_SPLIT)
        scores: dict[str, float] = {}
        for backend, config_precision in configs:
            encoder = FrozenEncoder(backend=backend, precision=config_precision)
            index = DenseTeacher(encoder).index(task.corpus["doc_id"].to_list(), task.doc_texts())
            ranking = index.search(
                queries["query_id"].to_list(), queries["text"].to_list(), FUSED_DEPTH
            )
            scores[f"{backend}_{config_precision}"] = score_ranking(ranking, task)["ndcg@10"]
        figure[name] = {key: round(value, 5) for key, value in scores.items()}
    deltas = [
        abs(per_task[f"openvino_{p}"] - per_task[f"torch_{p}"])
        for per_task in figure.values()
        for p in precisions
    ]
    figure["max_abs_ndcg_difference"] = round(max(deltas), 5)
    figure["within_0.002"] = max(deltas) <= 0.002
    return figure
