"""Hypernet training from stored stage results, tracked as one MLflow run.

The pipeline has every task's embeddings and preference pairs on disk already; this trains
on them, records the run (parameters, data fingerprints, per-epoch losses, the checkpoint)
and says where the checkpoint is. It registers nothing: the ``registered_model`` asset makes
the checkpoint a model version once it has been evaluated and its checks passed.

The checkpoint folder is named by a hash of everything that determines the weights
(training config and code, base encoder, each task's data and card). That hash is the
checkpoint's one id: the MLflow run's name, the registered version's ``checkpoint_id``
tag, the ``checkpoint`` column of DuckDB and the report all show it. The MLflow run is
named by what it trains (``hypernet``, ``labels``, ``without-<task>``), readable among its
siblings under the ``hydra run`` it nests in. The trainer
resumes a folder that holds a finished or interrupted run of the same inputs, so retrying
a crashed training continues where it stopped instead of starting over.

Training never depends on the tracking store: if MLflow is unreachable or misconfigured,
the hypernet still trains and its checkpoint is saved, and then
:class:`TrackingUnavailableError` names the store, the checkpoint and the setting to fix.
Running again after the fix resumes the finished checkpoint and only tracks it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
from filelock import FileLock

from hydra_core.data.cards import TaskCard
from hydra_core.data.fingerprints import text_digest
from hydra_core.encoding.embeddings import Embeddings
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.evaluation.fusion_examples import examples_from_frame
from hydra_core.model.hypernet import DEFAULT_ARCHITECTURE, Hypernet, HypernetConfig
from hydra_core.training.trainer import (
    TrainConfig,
    TrainingTask,
    run_identity,
    train_hypernet,
    with_pairs,
)
from hydra_core.training.training_data import training_task
from hydra_pipeline.artifacts import CheckpointRecord
from hydra_pipeline.tracking import TRACKING_ERRORS, TrackingTarget, TrainingRun

log = logging.getLogger(__name__)


class TrackingUnavailableError(RuntimeError):
    """The hypernet trained and its checkpoint is saved, but MLflow could not record it."""

    def __init__(self, target: TrackingTarget, checkpoint: Path, cause: Exception) -> None:
        self.checkpoint = checkpoint
        self.tracking_uri = target.tracking_uri
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
        super().__init__(
            f"MLflow tracking store {target.tracking_uri} is unavailable ({reason}). "
            f"The trained checkpoint is saved at {checkpoint}. Start that MLflow server, or "
            "set MLFLOW_TRACKING_URI (or tracking_uri in hydra.yaml) to a store you can "
            "reach, then run again: the saved checkpoint is reused, only tracking is redone."
        )


def train_tracked(
    cards: Mapping[str, TaskCard],
    documents: Mapping[str, Embeddings],
    queries: Mapping[str, Embeddings],
    training_queries: Mapping[str, pl.DataFrame],
    pairs: Mapping[str, pl.DataFrame],
    fusion_examples: Mapping[str, pl.DataFrame],
    *,
    encoder: FrozenEncoder,
    config: TrainConfig,
    architecture: HypernetConfig = DEFAULT_ARCHITECTURE,
    checkpoints_dir: Path,
    target: TrackingTarget,
    run_name: str = "hypernet",
    code_version: str = "",
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    label_streams: Sequence[TrainingTask] = (),
) -> CheckpointRecord:
    """Train on the tasks named by ``pairs`` (the head) and on the ``fusion_examples`` of
    those that have labels (the gate; see :func:`examples_frame`), tracked as one MLflow run.

    ``code_version`` names the training code: a changed trainer must not resume a folder
    trained by the old one, so it is part of the checkpoint folder's name.
    ``label_streams`` (see ``label_training_task``) train beside the teachers' pairs.
    A task or stream without pairs is left out, with a warning (see ``with_pairs``).
    """
    if not pairs:
        raise ValueError("no training tasks: the hypernet needs at least one task's pairs")
    built = [
        training_task(cards[n], encoder, documents[n], queries[n], training_queries[n], pairs[n])
        for n in sorted(pairs)
    ]
    tasks = with_pairs([*built, *label_streams])
    names = [task.name for task in tasks if task.name in pairs]
    label_streams = [task for task in tasks if task.name not in pairs]
    fingerprints = {task.name: task.fingerprint for task in tasks}
    examples = [
        example
        for name in sorted(fusion_examples)
        for example in examples_from_frame(fusion_examples[name])
    ]
    identity = {
        "run": run_identity(tasks, config, encoder.model_name, architecture),
        "fusion": [example.digest() for example in examples],
        "encoder": encoder.identity,
        "code": code_version,
    }
    checkpoint_id = text_digest(json.dumps(identity, sort_keys=True))
    out_dir = checkpoints_dir / checkpoint_id
    all_params = {
        "train": asdict(config),
        "architecture": asdict(architecture),
        "tasks": names,
        "label_streams": [stream.name for stream in label_streams],
        "encoder": encoder.identity,
        "fingerprints": fingerprints,
        "pairs": {task.name: task.num_pairs for task in tasks},
        "code_version": code_version,
        **dict(params or {}),
    }
    train = partial(  # tracked, or untracked when MLflow fails first: the same training
        train_hypernet,
        tasks,
        config,
        out_dir,
        base_model=encoder.model_name,
        architecture=architecture,
        show_progress=False,
        fusion_examples=examples,
    )
    # Two runs of the same inputs (two `hydra run`s at once) share the folder: the second
    # waits, then resumes the finished state instead of writing beside the first's upload.
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(checkpoints_dir / f".{checkpoint_id}.lock"):
        path: Path | None = None
        training = False
        try:
            run_tags = {**dict(tags or {}), "checkpoint_id": checkpoint_id}
            with TrainingRun(target, run_name=run_name, params=all_params, tags=run_tags) as run:
                logged: set[int] = set()
                epoch_errors: list[Exception] = []

                def on_epoch(epoch: int, values: dict[str, float]) -> None:
                    if epoch_errors:  # the store went away: keep training, report at the end
                        return
                    try:
                        run.log_epoch(epoch, values)
                        logged.add(epoch)
                    except TRACKING_ERRORS as error:
                        log.warning("MLflow stopped accepting epoch metrics: %s", error)
                        epoch_errors.append(error)

                def on_losses(step: int, values: dict[str, float]) -> None:
                    if not epoch_errors:
                        try:
                            run.log_losses(step, values)
                        except TRACKING_ERRORS as error:
                            log.warning("MLflow stopped accepting losses: %s", error)
                            epoch_errors.append(error)

                training = True
                path = train(on_epoch=on_epoch, on_losses=on_losses)
                training = False
                if epoch_errors:
                    raise epoch_errors[0]
                history = Hypernet.read_config(path).get("metadata", {}).get("history", [])
                for epoch, values in enumerate(history, start=1):
                    if epoch not in logged:  # epochs done by an earlier, resumed attempt
                        run.log_epoch(epoch, values)
                run.log_checkpoint(path, cards[names[0]].to_yaml())
        except TRACKING_ERRORS as error:
            if training:  # the training itself failed (e.g. a full disk): not a tracking problem
                raise
            if path is None:  # MLflow failed before training: train anyway, so nothing is lost
                log.warning(
                    "MLflow at %s is unavailable (%s); training untracked",
                    target.tracking_uri,
                    error,
                )
                path = train()
            raise TrackingUnavailableError(target, path, error) from error
    log.info("hypernet %s trained on %s: MLflow run %s", checkpoint_id, names, run.run_id)
    return CheckpointRecord(
        path=str(path),
        checkpoint_id=checkpoint_id,
        tasks=names,
        mlflow_run_id=run.run_id,
        tracking_uri=target.tracking_uri,
        model_name=target.registered_model,
        extra={
            "label_streams": [stream.name for stream in label_streams],
            "fusion_labels": {example.task: example.split for example in examples},
        },
    )
