"""Training the hypernet on several tasks' preference pairs at once.

Only hypernet parameters train: the base encoder's embeddings arrive precomputed, so
there is nothing else to update. Each step draws a batch of pairs from every training
task, generates each task's head from its card, and sums the tasks' losses, so every
update has to serve all tasks through their cards.

Reproducible and resumable: a fixed seed gives the same checkpoint, and after every
epoch the model and optimizer state are written atomically, with what trained them (tasks,
their data and cards, config, base model); a run started again on the same directory with
the same inputs resumes after the last completed epoch and ends at the same weights. A
directory trained on other inputs is refused (or, asked to, trained afresh): resuming it
would keep one run's weights under another run's name.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from tqdm import tqdm

from hydra_core.atomic import save_tensors_atomic
from hydra_core.data.fingerprints import array_digest, text_digest
from hydra_core.errors import HydraInputError
from hydra_core.model.fusion_gate import PRIOR_FUSION, FusionExample, FusionGate
from hydra_core.model.head import head_forward
from hydra_core.model.hypernet import (
    DEFAULT_ARCHITECTURE,
    Hypernet,
    HypernetConfig,
    initial_hypernet,
)
from hydra_core.model.score_fusion import FusionFeatures, FusionParameters
from hydra_core.progress import ProgressLog
from hydra_core.training.losses import in_batch_infonce, weighted_pairwise_loss

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.safetensors"
FUSED_TEMPERATURE = 1.0
"""Pair temperature on fused margins, in candidate standard deviations: a cosine margin over
its per-query spread (about 0.05) lands where ``pair_temperature`` puts a bare one."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; small values make a quick run for tests.

    The defaults were chosen on validation data only (20% of SciFact's train queries held
    out with their train qrels, NFCorpus dev), for seen tasks (trained on) and unseen ones
    (left out of training) alike. NDCG@10 change over the base at 1e-4, SciFact / NFCorpus,
    after 250 / 500 / 750 / 1,000 steps (``hydra validate [--loo] --tasks <the five>``):
    seen -0.002 / +0.008, +0.000 / +0.008, +0.010 / +0.008, +0.007 / +0.006; unseen
    +0.004 / -0.002, -0.008 / -0.006, -0.008 / -0.008, -0.018 / -0.009. Longer training
    helps seen tasks as much as it hurts unseen ones; 250 steps keeps every validation task
    within 0.005 of the base, as the targets ask. 3e-4 overfits within 500 steps.
    """

    epochs: int = 1
    steps_per_epoch: int = 250
    pairs_per_task: int = 128
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    pair_temperature: float = 0.05
    nce_temperature: float = 0.05
    nce_weight: float = 0.5
    seed: int = 0
    train_base_weight: bool = True


LOSS_EVERY = 10
"""Steps between two points of the loss curve :func:`train_hypernet` reports."""

LABELLED_TRAINING = TrainConfig(epochs=5)
"""Training with labels streams (``hydra train --labels``, the pipeline's ``hydra+labels``).

Labelled pairs teach more per step than the teachers' and keep teaching longer. Chosen on
validation (the same SciFact holdout, excluded from the labels, and NFCorpus dev; NDCG@10
change over the base after 250 / 500 / 750 / 1,000 / 1,250 / 1,500 steps): SciFact +0.040 /
+0.057 / +0.063 / +0.066 / +0.077 / +0.076, NFCorpus +0.005 / +0.011 / +0.009 / +0.011 /
+0.011 / +0.014, where the supervised head reaches +0.113 / +0.004 at its best. (With the
streams in card order, ``hydra validate --labels --epochs 5 --tasks <the five>`` gives
SciFact +0.038 / +0.059 / +0.070 / +0.085 / +0.086, NFCorpus +0.007 / +0.011 / +0.012 /
+0.012 / +0.013 for the first five: the same curve within seed noise.) Fusing the
labels into the teachers' RRF instead (weight 2) gave SciFact at most +0.028, NFCorpus +0.011
falling to -0.003; the labels stream counted twice, or lr 2e-4, did no better.
"""


@dataclass
class TrainingTask:
    """Everything one task contributes to training, as tensors ready for batching."""

    name: str
    card_parts: torch.Tensor  # (parts x dim) frozen card part embeddings
    query_vectors: torch.Tensor  # (n_queries x dim) base embeddings
    doc_vectors: torch.Tensor  # (n_docs x dim) base embeddings
    query_index: torch.Tensor  # per pair: row of query_vectors
    pos_index: torch.Tensor  # per pair: row of doc_vectors
    neg_index: torch.Tensor
    weight: torch.Tensor
    fingerprint: dict[str, str] = field(default_factory=dict)
    fusion: FusionFeatures | None = None
    """Set on streams whose pairs are scored fused with BM25 (the head learns its part of
    the fused retriever)."""

    @classmethod
    def from_frames(
        cls,
        name: str,
        card_parts: torch.Tensor,
        query_ids: Sequence[str],
        query_vectors: np.ndarray,
        doc_ids: Sequence[str],
        doc_vectors: np.ndarray,
        pairs: pl.DataFrame,
    ) -> TrainingTask:
        """Resolve the pairs' ids to rows of the embedding matrices (there may be none: see
        :func:`with_pairs`)."""
        query_row = {q: i for i, q in enumerate(query_ids)}
        doc_row = {d: i for i, d in enumerate(doc_ids)}
        return cls(
            name=name,
            card_parts=card_parts,
            query_vectors=torch.as_tensor(query_vectors, dtype=torch.float32),
            doc_vectors=torch.as_tensor(doc_vectors, dtype=torch.float32),
            query_index=torch.tensor([query_row[q] for q in pairs["query_id"]], dtype=torch.long),
            pos_index=torch.tensor([doc_row[d] for d in pairs["pos_doc_id"]], dtype=torch.long),
            neg_index=torch.tensor([doc_row[d] for d in pairs["neg_doc_id"]], dtype=torch.long),
            weight=torch.tensor(pairs["weight"].to_numpy(), dtype=torch.float32),
        )

    @property
    def num_pairs(self) -> int:
        return int(self.query_index.shape[0])

    @property
    def size(self) -> str:
        """How much data the task has, for messages about it."""
        docs, queries = self.doc_vectors.shape[0], self.query_vectors.shape[0]
        documents = "document" if docs == 1 else "documents"
        return f"{docs} {documents}, {queries} training quer{'y' if queries == 1 else 'ies'}"

    @cached_property
    def digests(self) -> dict[str, str]:
        """Content hashes of what this task feeds training, so a resume can tell its inputs
        changed whoever built it (a data or card edit, another encoder)."""
        pairs = torch.stack([self.query_index, self.pos_index, self.neg_index]).numpy()
        return {
            "card": array_digest(self.card_parts.numpy()),
            "queries": array_digest(self.query_vectors.numpy()),
            "documents": array_digest(self.doc_vectors.numpy()),
            "pairs": text_digest(array_digest(pairs), array_digest(self.weight.numpy())),
        }


def reference_embeddings(tasks: Sequence[TrainingTask], per_task: int = 2000) -> np.ndarray:
    """A balanced sample of the tasks' documents and queries, to initialise the base head."""
    generator = torch.Generator().manual_seed(0)
    samples = []
    for task in tasks:
        for vectors in (task.doc_vectors, task.query_vectors):
            take = torch.randperm(vectors.shape[0], generator=generator)[: per_task // 2]
            samples.append(vectors[take])
    return torch.cat(samples).numpy()


def task_loss(
    hypernet_output: tuple[torch.Tensor, ...],
    task: TrainingTask,
    batch: torch.Tensor,
    config: TrainConfig,
    fusion: FusionParameters | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise and InfoNCE losses of one task's head on one batch of its pairs.

    With ``fusion`` and a stream that carries :class:`FusionFeatures`, the pairwise loss
    scores each pair as the compiled retriever does, BM25 and head fused, so the head
    learns what BM25 leaves to it.
    """
    weight, bias, scale, shift = hypernet_output

    def project(vectors: torch.Tensor) -> torch.Tensor:
        return head_forward(vectors, weight, bias, scale, shift)

    query_rows = task.query_index[batch]
    queries = project(task.query_vectors[query_rows])
    positives = project(task.doc_vectors[task.pos_index[batch]])
    negatives = project(task.doc_vectors[task.neg_index[batch]])
    if fusion is not None and task.fusion is not None:
        features = task.fusion
        feedback_rows = features.feedback_rows[query_rows]
        feedback = project(task.doc_vectors[feedback_rows.reshape(-1)])
        centroid = feedback.reshape(*feedback_rows.shape, -1).mean(1)
        moved = F.normalize(queries + fusion.feedback * centroid, dim=-1)
        dense_margin = ((moved * positives).sum(-1) - (moved * negatives).sum(-1)) / (
            features.dense_scale[query_rows]
        )
        lexical = fusion.lexical_weight
        margin = lexical * features.lexical_margin[batch] + (1 - lexical) * dense_margin
        pairwise = weighted_pairwise_loss(
            margin, torch.zeros_like(margin), task.weight[batch], FUSED_TEMPERATURE
        )
    else:
        pos_scores = (queries * positives).sum(-1)
        neg_scores = (queries * negatives).sum(-1)
        pairwise = weighted_pairwise_loss(
            pos_scores, neg_scores, task.weight[batch], config.pair_temperature
        )
    infonce = in_batch_infonce(
        queries, positives, negatives, task.query_index[batch], config.nce_temperature
    )
    return pairwise, infonce


def with_pairs(tasks: Sequence[TrainingTask]) -> list[TrainingTask]:
    """The tasks that have preference pairs to train on.

    A task too small for its teachers to yield any (a handful of documents: a pair puts a
    fused top document above one they rank below their top 10) is left out with a warning
    instead of failing every other task's training; it still gets baselines and a compiled
    head. When no task has pairs there is nothing to train: an error, in one line.
    """
    empty = [task for task in tasks if task.num_pairs == 0]
    if len(empty) == len(tasks):
        sizes = "; ".join(f"{task.name}: {task.size}" for task in empty)
        raise HydraInputError(
            f"no task yields preference pairs to train on ({sizes}): each is too small for "
            "its teachers to rank documents below their top ones"
        )
    for task in empty:
        log.warning(
            "%s is left out of training: its teachers yield no preference pairs from %s "
            "(too small); it still gets baselines and a compiled head",
            task.name,
            task.size,
        )
    return [task for task in tasks if task.num_pairs]


def run_identity(
    tasks: Sequence[TrainingTask],
    config: TrainConfig,
    base_model: str,
    architecture: HypernetConfig = DEFAULT_ARCHITECTURE,
) -> dict[str, Any]:
    """Everything that decides the head's weights; a resume needs all of it unchanged (the
    gate is fitted afresh after every run, resumed or not: it takes seconds)."""
    return {
        "train_config": asdict(config),
        "architecture": asdict(architecture),
        "base_model": base_model,
        "tasks": [task.name for task in tasks],
        "data": {task.name: task.digests for task in tasks},
    }


def train_hypernet(
    tasks: Sequence[TrainingTask],
    config: TrainConfig,
    out_dir: Path | str,
    *,
    base_model: str,
    architecture: HypernetConfig = DEFAULT_ARCHITECTURE,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    on_losses: Callable[[int, dict[str, float]], None] | None = None,
    loss_every: int = LOSS_EVERY,
    show_progress: bool = True,
    fresh: bool = False,
    fusion_examples: Sequence[FusionExample] = (),
) -> Path:
    """Train (or resume training) a hypernet of ``architecture`` on ``tasks``; returns the
    checkpoint dir.

    ``on_losses`` gets, every ``loss_every`` steps (and at an epoch's end), the step
    counted over all epochs and the mean losses since its last call: a loss curve with
    more than one point an epoch.

    ``out_dir`` holding a run of other inputs is an error unless ``fresh``, which trains
    from scratch there whatever it holds. Tasks without pairs are left out (see
    :func:`with_pairs`). With ``fusion_examples``, the head's training is followed by the
    gate's (:meth:`FusionGate.fit`): the card then decides the fusion too.
    """
    out_dir = Path(out_dir)
    if not tasks:
        raise ValueError("train_hypernet needs at least one training task")
    tasks = with_pairs(tasks)
    frozen = [t.name for t in tasks if t.query_vectors.requires_grad or t.doc_vectors.requires_grad]
    if frozen:
        raise ValueError(f"base embeddings of {frozen} require grad: only the hypernet trains")
    hypernet = initial_hypernet(
        base_model,
        reference_embeddings(tasks),
        seed=config.seed,
        architecture=architecture,
    )
    hypernet.generator.base_weight.requires_grad_(config.train_base_weight)
    optimizer = torch.optim.AdamW(
        [p for p in hypernet.parameters() if p.requires_grad],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    history: list[dict[str, float]] = []
    identity = run_identity(tasks, config, base_model, architecture)
    start_epoch = 0 if fresh else _resume(out_dir, identity, hypernet, optimizer, history)
    card_parts = torch.stack([task.card_parts for task in tasks])
    log.info(
        "training hypernet: %d trainable parameters, %d tasks, %d pairs",
        hypernet.num_trainable_parameters,
        len(tasks),
        sum(task.num_pairs for task in tasks),
    )
    for epoch in range(start_epoch, config.epochs):
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        totals = {"pairwise": 0.0, "infonce": 0.0}
        started = time.perf_counter()
        steps = tqdm(
            range(config.steps_per_epoch),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not show_progress,
            leave=False,
        )
        progress = ProgressLog(
            log, f"epoch {epoch + 1}/{config.epochs}", config.steps_per_epoch, "steps"
        )
        window = {"pairwise": 0.0, "infonce": 0.0}
        window_steps = 0
        for step in steps:
            batches = [
                torch.randint(task.num_pairs, (config.pairs_per_task,), generator=generator)
                for task in tasks
            ]
            outputs = hypernet(card_parts)
            loss = torch.zeros(())
            for i, (task, batch) in enumerate(zip(tasks, batches, strict=True)):
                pairwise, infonce = task_loss(
                    tuple(tensor[i] for tensor in outputs),
                    task,
                    batch,
                    config,
                    PRIOR_FUSION,
                )
                loss = loss + pairwise + config.nce_weight * infonce
                for name, value in (("pairwise", pairwise), ("infonce", infonce)):
                    totals[name] += value.item() / len(tasks)
                    window[name] += value.item() / len(tasks)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            progress.advance(step + 1)
            window_steps += 1
            if on_losses is not None and (
                (step + 1) % loss_every == 0 or step + 1 == config.steps_per_epoch
            ):
                done = epoch * config.steps_per_epoch + step + 1
                on_losses(done, {name: value / window_steps for name, value in window.items()})
                window = dict.fromkeys(window, 0.0)
                window_steps = 0
        metrics = {name: value / config.steps_per_epoch for name, value in totals.items()}
        metrics["seconds"] = time.perf_counter() - started
        history.append(metrics)
        log.info("epoch %d/%d: %s", epoch + 1, config.epochs, metrics)
        hypernet.metadata = _metadata(config, tasks, history, hypernet, fusion_examples)
        _save_state(out_dir, epoch + 1, identity, hypernet, optimizer, history)
        hypernet.save(out_dir)
        if on_epoch is not None:
            on_epoch(epoch + 1, metrics)
    if fusion_examples:
        log.info("fitting the fusion gate on %d labelled examples", len(fusion_examples))
        hypernet.gate = FusionGate.fit(fusion_examples)
    if start_epoch >= config.epochs or fusion_examples:
        hypernet.metadata = _metadata(config, tasks, history, hypernet, fusion_examples)
        hypernet.save(out_dir)
    return out_dir


def _metadata(
    config: TrainConfig,
    tasks: Sequence[TrainingTask],
    history: list[dict[str, float]],
    hypernet: Hypernet,
    fusion_examples: Sequence[FusionExample],
) -> dict[str, object]:
    """The checkpoint's record; ``fusion_labels`` names each task whose labels taught the
    gate, and which split: a task whose ``test`` labels did is in-pool for this checkpoint."""
    return {
        "train_config": asdict(config),
        "tasks": [task.name for task in tasks],
        "pairs": {task.name: task.num_pairs for task in tasks},
        "fingerprints": {task.name: task.fingerprint for task in tasks},
        "history": history,
        "trainable_parameters": hypernet.num_trainable_parameters,
        "fusion_labels": {example.task: example.split for example in fusion_examples},
    }


def _save_state(
    out_dir: Path,
    epochs_done: int,
    identity: dict[str, Any],
    hypernet: Hypernet,
    optimizer: torch.optim.Optimizer,
    history: list[dict[str, float]],
) -> None:
    """Model and optimizer state in one file, so a resume never mixes two epochs, with the
    run's identity (see :func:`run_identity`), so it never mixes two runs."""
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in hypernet.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).contiguous()
    metadata = {
        "epochs_done": str(epochs_done),
        "history": json.dumps(history),
        **{key: json.dumps(value, sort_keys=True) for key, value in identity.items()},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_tensors_atomic(out_dir / STATE_FILE, tensors, metadata)


def _resume(
    out_dir: Path,
    identity: dict[str, Any],
    hypernet: Hypernet,
    optimizer: torch.optim.Optimizer,
    history: list[dict[str, float]],
) -> int:
    """Load the last completed epoch from ``out_dir`` if it holds a run of ``identity``."""
    path = out_dir / STATE_FILE
    if not path.exists():
        return 0
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        log.warning("ignoring unreadable training state %s (%s); starting afresh", path, error)
        return 0
    differences = _differences(metadata, identity)
    if differences:
        raise HydraInputError(
            f"holds training on other inputs ({'; '.join(differences)}); resuming it would "
            "mix two runs: use another --out, or --force to train afresh there",
            path=out_dir,
        )
    hypernet.load_state_dict(
        {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    )
    optimizer_state = optimizer.state_dict()
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            optimizer_state["state"].setdefault(int(index), {})[key] = value
    optimizer.load_state_dict(optimizer_state)
    history.extend(json.loads(metadata.get("history", "[]")))
    epochs_done = int(metadata.get("epochs_done", "0"))
    log.info("resuming %s after epoch %d", out_dir, epochs_done)
    return epochs_done


def _differences(metadata: dict[str, str], identity: dict[str, Any]) -> list[str]:
    """What a saved run's identity and this run's disagree on, in words."""
    saved = {key: json.loads(metadata[key]) for key in identity if key in metadata}
    missing = [key for key in identity if key not in saved]
    if missing:  # written before the state recorded what trained it
        return [f"the saved state does not record its {', '.join(missing)}"]
    differences = []
    for settings in ("train_config", "architecture"):
        config, saved_config = identity[settings], saved[settings]
        changed = sorted(
            k for k in config.keys() | saved_config.keys() if config.get(k) != saved_config.get(k)
        )
        differences += [f"{k} {saved_config.get(k)} -> {config.get(k)}" for k in changed]
    if saved["base_model"] != identity["base_model"]:
        differences.append(f"base model {saved['base_model']} -> {identity['base_model']}")
    if saved["tasks"] != identity["tasks"]:
        differences.append(f"tasks {', '.join(saved['tasks'])} -> {', '.join(identity['tasks'])}")
    for name, digests in identity["data"].items():
        before = saved["data"].get(name)
        if before is None:
            continue
        parts = [part for part in digests if before.get(part) != digests[part]]
        if parts:
            differences.append(f"{name}'s {', '.join(parts)} changed")
    return differences
