"""The validation split: which labels every recipe choice is made on, so none sees a test split.

A task's validation queries are its ``dev`` split when it has one, else a fixed fifth of its
``train`` queries (by a hash of the id), else it has none. :func:`split_for_validation`
cuts a task in two: the task to train on, without those held-out queries (neither their
text nor their labels can train), and the task to validate on, whose only qrels are theirs.

A module of its own so that what trains on the cut (head fitting, and through it every
pipeline step) does not take the validation curves and fusion grid into its code version.
"""

from __future__ import annotations

import hashlib

import polars as pl

from hydra_core.data.retrieval_task import RetrievalTask

DEV_SPLIT = "dev"
HOLDOUT_SPLIT = "train"
VALIDATION = "validation"
"""The one split of a validation task: its held-out judgments under a single name."""


def is_holdout(query_id: str) -> bool:
    """A fixed fifth of a split's queries (by a hash of the id) held out for validation."""
    return int(hashlib.md5(query_id.encode()).hexdigest(), 16) % 5 == 0


def split_for_validation(
    task: RetrievalTask, labels: str = HOLDOUT_SPLIT
) -> tuple[RetrievalTask, RetrievalTask | None]:
    """(the task to train on, the task to validate on, ``None`` without validation labels).

    ``labels`` is the split that trains: ``dev`` validates unless it is that split, else
    a fifth of ``labels`` is held out of it.
    """
    if DEV_SPLIT in task.splits and labels != DEV_SPLIT:
        return task, task.with_qrels({VALIDATION: task.split_qrels(DEV_SPLIT)})
    if labels not in task.splits:
        return task, None
    qrels = task.split_qrels(labels)
    held = qrels["query_id"].map_elements(is_holdout, return_dtype=pl.Boolean)
    training = task.with_qrels({**task.qrels, labels: qrels.filter(~held)})
    return training, task.with_qrels({VALIDATION: qrels.filter(held)})
