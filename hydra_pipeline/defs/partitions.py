"""Task partitions: one per task card, named by the card's ``name``.

Dynamic, so that a new card file adds a partition (the card sensor or ``hydra run`` adds
it) without a code change or a reload of the definitions.
"""

from __future__ import annotations

import dagster as dg

TASK_PARTITIONS = dg.DynamicPartitionsDefinition(name="task")
