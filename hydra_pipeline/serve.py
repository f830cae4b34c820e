"""``hydra serve``: the pipeline's results behind one search API
(:mod:`hydra_core.serving.http_api`).

Serves every task of the configured list from what ``hydra run`` stored in the workspace:
its card, corpus, document embeddings and compiled retriever, with one encoder for all tasks and
each corpus loaded once. The stored hypernet checkpoint compiles the cards put later; a
retriever that Dagster's record says another checkpoint compiled (a partial run since) is
compiled again at start. With ``--checkpoint DIR`` nothing stored is needed: the cards
folder's cards are compiled by that hypernet and their corpora's embeddings come from the
embedding cache (what is missing is encoded). With ``index="hnsw"`` each task's dense
channel is searched through an HNSW graph, built at start once per task and kept beside
the embedding cache (``<cache>/ann/``), so a restart loads it.

It lives beside the pipeline because it reads the pipeline's storage; the service itself
(:mod:`hydra_core.serving.registry`, :mod:`hydra_core.serving.http_api`) knows nothing of
it. The modelling
stack is imported inside the functions, so a workspace without results is refused fast.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from hydra_core.data.cards import TaskCard, find_card
from hydra_core.encoding.embeddings import Embeddings
from hydra_core.errors import HydraInputError
from hydra_core.settings import load_settings
from hydra_pipeline.artifacts import CheckpointRecord, load_value, stored_path
from hydra_pipeline.defs.resources import _encoder
from hydra_pipeline.project_config import ProjectConfig
from hydra_pipeline.runner import current_checkpoint, prepare_dagster_home

if TYPE_CHECKING:
    from hydra_core.encoding.encoder import FrozenEncoder
    from hydra_core.ranking.ann_index import IndexKind
    from hydra_core.serving.registry import Corpus, TaskRegistry

Echo = Callable[[str], None]
RETRIEVER_ASSET = "compiled_retriever"
STORED_ASSETS: tuple[str, ...] = ("task_card", "corpus", "doc_embeddings", RETRIEVER_ASSET)


def stored_checkpoint(config: ProjectConfig) -> CheckpointRecord:
    """The hypernet ``hydra run`` stored, or an error saying to run it."""
    record = current_checkpoint(config)
    if record is None:
        raise HydraInputError(
            "no pipeline results to serve: run `hydra run` first (or pass --checkpoint DIR)",
            path=config.workspace / "assets",
        )
    return record


def _stored_corpus(assets: Path, task: str, key: str) -> Corpus:
    from hydra_core.data.opened_task import corpus_task
    from hydra_core.ranking.teachers import BM25Teacher
    from hydra_core.serving.registry import Corpus

    frame = load_value(assets / "corpus" / task)
    embeddings: Embeddings = load_value(assets / "doc_embeddings" / task)
    if embeddings.ids != frame["doc_id"].to_list():
        raise HydraInputError(
            f"the stored embeddings of {task!r} do not match its stored corpus: run `hydra run`",
            path=assets / "doc_embeddings",
        )
    lexical = BM25Teacher().index(embeddings.ids, corpus_task(frame).doc_texts())
    return Corpus(key, embeddings.ids, frame["title"].to_list(), embeddings.vectors, lexical)


def _compiled_by(instance: dg.DagsterInstance, task: str) -> tuple[str, datetime] | None:
    """The checkpoint that compiled ``task``'s stored retriever and when, from Dagster's record."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(RETRIEVER_ASSET), asset_partitions=[task]),
        limit=1,
    ).records
    materialization = records[0].asset_materialization if records else None
    checkpoint = materialization.metadata.get("checkpoint") if materialization else None
    if checkpoint is None:
        return None
    return str(checkpoint.value), datetime.fromtimestamp(records[0].timestamp, UTC)


def stored_registry(
    config: ProjectConfig,
    record: CheckpointRecord,
    encoder: FrozenEncoder,
    echo: Echo,
    index: IndexKind = "exact",
) -> TaskRegistry:
    """Every configured task from the stored results of ``hydra run``; ``record`` is its
    hypernet."""
    from hydra_core.model.hypernet import Hypernet
    from hydra_core.serving.registry import TaskRegistry, corpus_key

    assets = config.workspace / "assets"
    registry = TaskRegistry(
        encoder,
        Hypernet.load(record.path),
        record.checkpoint_id,
        load_settings().cards_dir,
        index=index,
        cache_dir=config.cache_dir,
    )
    prepare_dagster_home(config)
    with dg.DagsterInstance.get() as instance:
        for name in config.tasks:
            missing = [a for a in STORED_ASSETS if stored_path(assets / a / name) is None]
            if missing:
                raise HydraInputError(
                    f"task {name!r} has no stored {', '.join(missing)}: run `hydra run` first",
                    path=assets,
                )
            card: TaskCard = load_value(assets / "task_card" / name)
            key = corpus_key(card)
            corpus = registry.corpus(key) or _stored_corpus(assets, name, key)
            compiled = _compiled_by(instance, name)
            if compiled is not None and compiled[0] == record.checkpoint_id:
                stored = load_value(assets / RETRIEVER_ASSET / name)
                registry.add(card, corpus, stored, checkpoint=compiled[0], compiled_at=compiled[1])
            else:
                by = record.checkpoint_id
                echo(f"{name}: stored retriever not by checkpoint {by}; compiling it")
                registry.add(card, corpus)
    return registry


def checkpoint_registry(
    config: ProjectConfig, checkpoint: Path, encoder: FrozenEncoder, index: IndexKind = "exact"
) -> TaskRegistry:
    """Every configured task's card from the cards folder, compiled by ``checkpoint``; its
    id is the folder's name, as for the checkpoints ``hydra run`` trains."""
    from hydra_core.model.hypernet import Hypernet
    from hydra_core.serving.registry import TaskRegistry, card_corpus, corpus_key

    cards_dir = load_settings().cards_dir
    hypernet = Hypernet.load(checkpoint)
    registry = TaskRegistry(
        encoder,
        hypernet,
        checkpoint.resolve().name,
        cards_dir,
        index=index,
        cache_dir=config.cache_dir,
    )
    for name in config.tasks:
        card = find_card(name, cards_dir)
        corpus = registry.corpus(corpus_key(card)) or card_corpus(card, encoder, encode=True)
        registry.add(card, corpus)
    return registry


def build_registry(
    config: ProjectConfig, checkpoint: Path | None, echo: Echo, index: IndexKind = "exact"
) -> TaskRegistry:
    """The tasks to serve, with the model loaded (a text no cache holds is encoded once,
    so the first request does not pay for it) and, with ``index="hnsw"``, every task's
    graph built or loaded."""
    if checkpoint is None:
        record = stored_checkpoint(config)  # before the modelling stack loads: refused fast
        encoder = _encoder(config.encoder_model, str(config.cache_dir))
        registry = stored_registry(config, record, encoder, echo, index)
    else:
        encoder = _encoder(config.encoder_model, str(config.cache_dir))
        registry = checkpoint_registry(config, checkpoint, encoder, index)
    registry.encoder.queries([f"warm-up {uuid.uuid4()}"])
    return registry


def serve(
    config: ProjectConfig,
    *,
    checkpoint: Path | None,
    host: str,
    port: int,
    echo: Echo,
    index: IndexKind = "exact",
) -> None:
    """Serve the configured tasks on ``host:port`` until interrupted."""
    registry = build_registry(config, checkpoint, echo, index)
    import uvicorn

    from hydra_core.serving.http_api import create_app

    tasks = registry.tasks()
    corpora = {task.corpus.key for task in tasks}
    echo(
        f"hydra serve: {len(tasks)} tasks ({', '.join(t.card.name for t in tasks)}) over "
        f"{len(corpora)} corpora, checkpoint {registry.checkpoint}, {index} dense search; "
        f"API docs on http://{host}:{port}/docs"
    )
    uvicorn.Server(uvicorn.Config(create_app(registry), host=host, port=port)).run()
