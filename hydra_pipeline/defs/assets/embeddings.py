"""Base embeddings per task: every document, and every query the teachers rank.

They come from the frozen encoder's persistent cache, so a text is encoded once per model
ever: rebuilding these assets after an unrelated change costs a cache lookup.
"""

# No `from __future__ import annotations` here: Dagster reads these functions' annotations
# at definition time and needs real types (a string `context` annotation is refused).

import dagster as dg
import polars as pl
from dagster import AssetExecutionContext

from hydra_core.encoding.embeddings import Embeddings
from hydra_pipeline.artifacts import task_from_frames
from hydra_pipeline.defs.partitions import TASK_PARTITIONS
from hydra_pipeline.defs.project import project
from hydra_pipeline.defs.resources import EncoderResource
from hydra_pipeline.defs.versions import code_version

GROUP = "embeddings"
KINDS = {"pytorch", "numpy"}


def embeddings_output(
    context: AssetExecutionContext, embeddings: Embeddings, encoder: EncoderResource
) -> dg.Output[Embeddings]:
    stats = encoder.get().stats
    context.log.info(f"encoder: {stats.encoded} texts encoded, {stats.cached} from cache so far")
    return dg.Output(
        embeddings,
        data_version=dg.DataVersion(embeddings.digest),
        metadata={"dimension": int(embeddings.vectors.shape[1])},  # rows: the IO manager's
    )


def embedding_assets(model: str) -> list[dg.AssetsDefinition]:
    """Both assets, versioned on the encoder ``model``: another model re-embeds everything."""
    # The encoder resource's module, and the stages the bodies call.
    version = code_version(
        "hydra_core.encoding.encoder",
        "hydra_core.ranking.teacher_rankings",
        "hydra_pipeline.artifacts",
        config={"model": model},
    )

    @dg.asset(partitions_def=TASK_PARTITIONS, group_name=GROUP, kinds=KINDS, code_version=version)
    def doc_embeddings(
        context: AssetExecutionContext, encoder: EncoderResource, corpus: pl.DataFrame
    ) -> dg.Output[Embeddings]:
        """Base embeddings of every document (title + text), in corpus order."""
        from hydra_core.data.opened_task import OpenedTask, corpus_task
        from hydra_core.ranking.teacher_rankings import document_embeddings

        return embeddings_output(
            context, document_embeddings(OpenedTask(corpus_task(corpus), encoder.get())), encoder
        )

    @dg.asset(partitions_def=TASK_PARTITIONS, group_name=GROUP, kinds=KINDS, code_version=version)
    def query_embeddings(
        context: AssetExecutionContext,
        encoder: EncoderResource,
        corpus: pl.DataFrame,
        queries: pl.DataFrame,
        qrels: pl.DataFrame,
        training_queries: pl.DataFrame,
    ) -> dg.Output[Embeddings]:
        """Base embeddings of the test queries and the training queries."""
        from hydra_core.ranking.teacher_rankings import query_embeddings as embed
        from hydra_core.ranking.teacher_rankings import ranked_queries

        task = task_from_frames(context.partition_key, "", corpus, queries, qrels)
        ranked = ranked_queries(task, training_queries)
        return embeddings_output(context, embed(encoder.get(), ranked), encoder)

    return [doc_embeddings, query_embeddings]


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=embedding_assets(project().encoder_model))
