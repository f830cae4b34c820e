"""Training the hypernet on several tasks' preference pairs at once.

Only hypernet parameters train: the base encoder's embeddings arrive precomputed, so
there is nothing else to update. Each step draws a batch of pairs from every training
task, generates each task's head from its card, and sums the tasks' losses, so every
update has to serve all tasks through their cards.

Reproducible and resumable: a fixed seed gives the same checkpoint, and after every
epoch the model and optimizer state are written atomically; a run started again on the
same directory resumes after the last completed epoch and ends at the same weights.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from tqdm import tqdm

from hydra_core.atomic import save_tensors_atomic
from hydra_core.fusion_generator import FusionWeights
from hydra_core.head import head_forward
from hydra_core.hypernet import Hypernet, initial_hypernet
from hydra_core.losses import in_batch_infonce, weighted_pairwise_loss
from hydra_core.score_fusion import FusionFeatures

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
    out_dim: int = 256
    cond_dim: int = 128
    rank: int = 96
    train_base_weight: bool = True


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
    """Set on streams whose pairs are scored fused with BM25 and teach the card's fusion."""

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
        """Resolve the pairs' ids to rows of the embedding matrices."""
        if pairs.is_empty():
            raise ValueError(f"task {name!r} has no preference pairs to train on")
        query_row = {q: i for i, q in enumerate(query_ids)}
        doc_row = {d: i for i, d in enumerate(doc_ids)}
        return cls(
            name=name,
            card_parts=card_parts,
            query_vectors=torch.as_tensor(query_vectors, dtype=torch.float32),
            doc_vectors=torch.as_tensor(doc_vectors, dtype=torch.float32),
            query_index=torch.tensor([query_row[q] for q in pairs["query_id"]]),
            pos_index=torch.tensor([doc_row[d] for d in pairs["pos_doc_id"]]),
            neg_index=torch.tensor([doc_row[d] for d in pairs["neg_doc_id"]]),
            weight=torch.tensor(pairs["weight"].to_numpy(), dtype=torch.float32),
        )

    @property
    def num_pairs(self) -> int:
        return int(self.query_index.shape[0])


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
    fusion: FusionWeights | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise and InfoNCE losses of one task's head on one batch of its pairs.

    With ``fusion`` (the card's generated weights) and a stream that carries
    :class:`FusionFeatures`, the pairwise loss scores each pair as the compiled retriever
    does, BM25 and head fused, so the head and the fusion learn together.
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


def train_hypernet(
    tasks: Sequence[TrainingTask],
    config: TrainConfig,
    out_dir: Path | str,
    *,
    base_model: str,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    show_progress: bool = True,
) -> Path:
    """Train (or resume training) a hypernet on ``tasks``; returns the checkpoint dir."""
    out_dir = Path(out_dir)
    if not tasks:
        raise ValueError("train_hypernet needs at least one training task")
    frozen = [t.name for t in tasks if t.query_vectors.requires_grad or t.doc_vectors.requires_grad]
    if frozen:
        raise ValueError(f"base embeddings of {frozen} require grad: only the hypernet trains")
    hypernet = initial_hypernet(
        base_model,
        reference_embeddings(tasks),
        seed=config.seed,
        out_dim=config.out_dim,
        cond_dim=config.cond_dim,
        rank=config.rank,
    )
    hypernet.generator.base_weight.requires_grad_(config.train_base_weight)
    optimizer = torch.optim.AdamW(
        [p for p in hypernet.parameters() if p.requires_grad],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    history: list[dict[str, float]] = []
    start_epoch = _resume(out_dir, config, hypernet, optimizer, history)
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
        for _ in steps:
            batches = [
                torch.randint(task.num_pairs, (config.pairs_per_task,), generator=generator)
                for task in tasks
            ]
            outputs, fusion = hypernet(card_parts)
            loss = torch.zeros(())
            for i, (task, batch) in enumerate(zip(tasks, batches, strict=True)):
                pairwise, infonce = task_loss(
                    tuple(tensor[i] for tensor in outputs),
                    task,
                    batch,
                    config,
                    FusionWeights(*(tensor[i] for tensor in fusion)),
                )
                loss = loss + pairwise + config.nce_weight * infonce
                totals["pairwise"] += pairwise.item() / len(tasks)
                totals["infonce"] += infonce.item() / len(tasks)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        metrics = {name: value / config.steps_per_epoch for name, value in totals.items()}
        metrics["seconds"] = time.perf_counter() - started
        history.append(metrics)
        log.info("epoch %d/%d: %s", epoch + 1, config.epochs, metrics)
        hypernet.metadata = _metadata(config, tasks, history, hypernet)
        _save_state(out_dir, epoch + 1, config, hypernet, optimizer, history)
        hypernet.save(out_dir)
        if on_epoch is not None:
            on_epoch(epoch + 1, metrics)
    if start_epoch >= config.epochs:
        hypernet.metadata = _metadata(config, tasks, history, hypernet)
        hypernet.save(out_dir)
    return out_dir


def _metadata(
    config: TrainConfig,
    tasks: Sequence[TrainingTask],
    history: list[dict[str, float]],
    hypernet: Hypernet,
) -> dict[str, object]:
    return {
        "train_config": asdict(config),
        "tasks": [task.name for task in tasks],
        "pairs": {task.name: task.num_pairs for task in tasks},
        "fingerprints": {task.name: task.fingerprint for task in tasks},
        "history": history,
        "trainable_parameters": hypernet.num_trainable_parameters,
    }


def _save_state(
    out_dir: Path,
    epochs_done: int,
    config: TrainConfig,
    hypernet: Hypernet,
    optimizer: torch.optim.Optimizer,
    history: list[dict[str, float]],
) -> None:
    """Model and optimizer state in one file, so a resume never mixes two epochs."""
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in hypernet.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).contiguous()
    metadata = {
        "epochs_done": str(epochs_done),
        "train_config": json.dumps(asdict(config), sort_keys=True),
        "history": json.dumps(history),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_tensors_atomic(out_dir / STATE_FILE, tensors, metadata)


def _resume(
    out_dir: Path,
    config: TrainConfig,
    hypernet: Hypernet,
    optimizer: torch.optim.Optimizer,
    history: list[dict[str, float]],
) -> int:
    """Load the last completed epoch from ``out_dir`` if it holds a run of this config."""
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
    if metadata.get("train_config") != json.dumps(asdict(config), sort_keys=True):
        raise ValueError(
            f"{path} holds a run with a different training config; "
            "use another --out directory or delete it"
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
