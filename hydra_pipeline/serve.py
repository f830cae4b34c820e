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

A card PUT with ``labels`` is adapted to them in the background, one fit at a time (see
:mod:`hydra_core.serving.fit_queue`); pipeline tasks are served as stored.

Changes (PUT, DELETE) need the write key (``HYDRA_API_KEY`` or ``--api-key-file``);
without one the service is read-only, and it binds beyond loopback only when told to
(:func:`access_for`).

It lives beside the pipeline because it reads the pipeline's storage; the service itself
(:mod:`hydra_core.serving.registry`, :mod:`hydra_core.serving.http_api`) knows nothing of
it. The modelling
stack is imported inside the functions, so a workspace without results is refused fast.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
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
from hydra_pipeline.runner import champion_checkpoint, prepare_dagster_home

if TYPE_CHECKING:
    from hydra_core.encoding.encoder import FrozenEncoder
    from hydra_core.ranking.ann_index import IndexKind
    from hydra_core.serving.http_api import Access
    from hydra_core.serving.registry import ChangePolicy, Corpus, TaskRegistry

Echo = Callable[[str], None]
RETRIEVER_ASSET = "compiled_retriever"
STORED_ASSETS: tuple[str, ...] = ("task_card", "corpus", "doc_embeddings", RETRIEVER_ASSET)
KEY_VARIABLE = "HYDRA_API_KEY"
MIN_KEY_CHARS = 16
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class ServeOptions:
    """Who may change what a ``hydra serve`` process serves (see docs/serving.md)."""

    key_file: Path | None = None
    """A file whose first line is the write key; else ``HYDRA_API_KEY``; else read-only."""
    public_without_key: bool = False
    """Bind beyond loopback without a write key (read-only, with a warning)."""
    allowed_hosts: tuple[str, ...] = ()
    """``Host`` names answered besides the loopback names and the bound address."""
    max_tasks: int = 32
    replace_pipeline_tasks: bool = False
    data_roots: tuple[Path, ...] = ()
    """Folders a PUT card's corpus may come from; none: the data dir."""


def write_key(options: ServeOptions) -> str | None:
    """The write key from ``options.key_file`` or ``HYDRA_API_KEY``; too short a key is
    refused (a key is only as good as its guessing is hard)."""
    if options.key_file is not None:
        lines = options.key_file.read_text(encoding="utf-8").splitlines()
        key, where = (lines[0].strip() if lines else ""), options.key_file
    else:
        key, where = os.environ.get(KEY_VARIABLE, "").strip(), None
        if not key:
            return None
    if len(key) < MIN_KEY_CHARS:
        raise HydraInputError(
            f"the write key must have at least {MIN_KEY_CHARS} characters, got {len(key)}",
            path=where,
            field=None if where else KEY_VARIABLE,
        )
    return key


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def access_for(host: str, options: ServeOptions, echo: Echo) -> Access:
    """The service's :class:`Access` when bound to ``host``: beyond loopback only with a
    write key or ``public_without_key`` (then with a warning)."""
    from hydra_core.serving.http_api import LOOPBACK_HOSTS, Access

    key = write_key(options)
    if not is_loopback(host):
        if key is None and not options.public_without_key:
            raise HydraInputError(
                f"--host {host} reaches beyond this machine, and the service has no write "
                f"key: set {KEY_VARIABLE} (or --api-key-file), or pass --public-without-key "
                "to serve it read-only to anyone who reaches it"
            )
        if key is None:
            echo(
                f"warning: serving {host} read-only without a key: anyone who reaches it can search"
            )
        echo("note: the key and the queries travel in clear: put a TLS reverse proxy in front")
    own = () if host in WILDCARD_HOSTS or is_loopback(host) else (host,)
    return Access(write_key=key, allowed_hosts=(*LOOPBACK_HOSTS, *own, *options.allowed_hosts))


def change_policy(options: ServeOptions) -> ChangePolicy:
    """What PUT and DELETE may do; a PUT card's corpus comes from the data dir by default."""
    from hydra_core.serving.registry import ChangePolicy

    data_dir = load_settings().data_dir
    roots = options.data_roots or (() if data_dir is None else (data_dir,))
    return ChangePolicy(roots, options.max_tasks, options.replace_pipeline_tasks)


def _stored_corpus(assets: Path, task: str, key: str) -> Corpus:
    from hydra_core.data.opened_task import corpus_task
    from hydra_core.model.task_profile import CorpusSample
    from hydra_core.ranking.teachers import BM25Teacher
    from hydra_core.serving.registry import Corpus

    frame = load_value(assets / "corpus" / task)
    embeddings: Embeddings = load_value(assets / "doc_embeddings" / task)
    if embeddings.ids != frame["doc_id"].to_list():
        raise HydraInputError(
            f"the stored embeddings of {task!r} do not match its stored corpus: run `hydra run`",
            path=assets / "doc_embeddings",
        )
    texts = corpus_task(frame).doc_texts()
    lexical = BM25Teacher().index(embeddings.ids, texts)
    titles = frame["title"].to_list()
    return Corpus(key, embeddings.ids, titles, embeddings.vectors, lexical, CorpusSample.of(texts))


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
    policy: ChangePolicy | None = None,
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
        policy=policy,
    )
    read_only = not os.access(config.workspace, os.W_OK)
    if read_only:  # Dagster's sqlite stores cannot even be opened for reading
        echo(
            f"{config.workspace} is read-only: serving without Dagster's record, every "
            f"stored card compiled again by checkpoint {record.checkpoint_id}"
        )
    else:
        prepare_dagster_home(config)
    with contextlib.nullcontext() if read_only else dg.DagsterInstance.get() as instance:
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
            compiled = None if instance is None else _compiled_by(instance, name)
            if compiled is not None and compiled[0] == record.checkpoint_id:
                stored = load_value(assets / RETRIEVER_ASSET / name)
                registry.add(card, corpus, stored, checkpoint=compiled[0], compiled_at=compiled[1])
            elif instance is None:
                registry.add(card, corpus)
            else:
                by = record.checkpoint_id
                echo(f"{name}: stored retriever not by checkpoint {by}; compiling it")
                registry.add(card, corpus)
    return registry


def checkpoint_registry(
    config: ProjectConfig,
    checkpoint: Path,
    encoder: FrozenEncoder,
    index: IndexKind = "exact",
    policy: ChangePolicy | None = None,
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
        policy=policy,
    )
    for name in config.tasks:
        card = find_card(name, cards_dir)
        corpus = registry.corpus(corpus_key(card)) or card_corpus(card, encoder, encode=True)
        registry.add(card, corpus)
    return registry


def build_registry(
    config: ProjectConfig,
    checkpoint: Path | None,
    echo: Echo,
    index: IndexKind = "exact",
    policy: ChangePolicy | None = None,
) -> TaskRegistry:
    """The tasks to serve, with the model loaded (a text no cache holds is encoded once,
    so the first request does not pay for it) and, with ``index="hnsw"``, every task's
    graph built or loaded."""
    if checkpoint is None:
        record = champion_checkpoint(config)  # before the modelling stack loads: refused fast
        encoder = _encoder(config.encoder_model, str(config.cache_dir))
        registry = stored_registry(config, record, encoder, echo, index, policy)
    else:
        encoder = _encoder(config.encoder_model, str(config.cache_dir))
        registry = checkpoint_registry(config, checkpoint, encoder, index, policy)
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
    options: ServeOptions | None = None,
) -> None:
    """Serve the configured tasks on ``host:port`` until interrupted.

    Ends with ``KeyboardInterrupt`` (status 130) once a signal has stopped the server,
    whenever it came: before uvicorn took signals over (asyncio's handler raises), or after
    (uvicorn stops, then raises the signal again under the handler it found, which a
    process started with SIGINT ignored, as a shell's background job is, ignores).
    """
    options = options or ServeOptions()
    access = access_for(host, options, echo)  # refused before the model loads
    registry = build_registry(config, checkpoint, echo, index, change_policy(options))
    import uvicorn

    from hydra_core.serving.http_api import ServerLimits, create_app, server_config

    tasks = registry.tasks()
    corpora = {task.corpus.key for task in tasks}
    writes = "PUT/DELETE with the write key" if access.write_key else "read-only"
    echo(
        f"hydra serve: {len(tasks)} tasks ({', '.join(t.card.name for t in tasks)}) over "
        f"{len(corpora)} corpora, checkpoint {registry.checkpoint}, {index} dense search, "
        f"{writes}; answers Host {', '.join(access.allowed_hosts)}; "
        f"API docs on http://{host}:{port}/docs"
    )
    server = uvicorn.Server(server_config(create_app(registry, access), host, port, ServerLimits()))
    interrupted = False
    try:
        server.run()
    except KeyboardInterrupt:
        interrupted = True
    if interrupted or server.should_exit:  # should_exit: uvicorn's handler saw a signal
        raise KeyboardInterrupt
    raise SystemExit(1)  # it stopped by itself: uvicorn said why
