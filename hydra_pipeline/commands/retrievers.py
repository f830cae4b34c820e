"""Model commands on one card's retriever: ``compile`` it from the card, ``adapt`` it to judged
queries, ``search`` with it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from hydra_core.data.cards import find_card
from hydra_core.errors import HydraInputError
from hydra_pipeline.commands.options import (
    CheckpointOption,
    ConfigOption,
    IndexOption,
    RefineOption,
    load_config,
)

app = typer.Typer()


@app.command()
def adapt(
    card: Annotated[str, typer.Argument(help="Task card file or name.")],
    checkpoint: CheckpointOption,
    labels: Annotated[
        str,
        typer.Option(
            "--labels",
            metavar="SPLIT_OR_FILE",
            help="Judged queries: a split of the card's task (e.g. train; never test) or a "
            "BEIR qrels TSV of its queries and documents.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Retriever file to write (.safetensors).")],
    queries: Annotated[
        int | None,
        typer.Option("--queries", help="Use N judged queries, drawn at random (default: all)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the draw and of the fit.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Fit the card's compiled retriever to judged queries: head, fusion and BM25's b.

    With 20 judged queries or more, a fifth is held out to choose the head's steps and the
    fusion (keeping the compiled retriever unless a fit scores better there); with fewer,
    a fixed recipe. Writes an ordinary retriever file (hydra search --retriever).
    """
    if out.exists() and not force:  # before anything loads: the old file stays as it was
        raise HydraInputError("exists already: pass --force to overwrite it", path=out)
    from hydra_core.encoding.encoder import FrozenEncoder
    from hydra_core.model.hypernet import Hypernet
    from hydra_core.workflows import adapt_card

    started = time.perf_counter()
    encoder = FrozenEncoder()
    adapted = adapt_card(
        find_card(card), Hypernet.load(checkpoint), encoder, labels, queries=queries, seed=seed
    )
    adapted.save(out)
    fusion = adapted.fusion
    typer.echo(
        f"{out}: adapted on {adapted.labelled_queries} judged queries, lexical weight "
        f"{fusion.lexical_weight:.2f}, feedback {fusion.feedback:.2f}, b {fusion.bm25_b:.2f}, "
        f"in {time.perf_counter() - started:.1f} s"
    )


@app.command("compile")
def compile_card(
    card: Annotated[str, typer.Argument(help="Task card file or name.")],
    checkpoint: CheckpointOption,
    out: Annotated[Path, typer.Option("--out", help="Head file to write (.safetensors).")],
    refine: RefineOption = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Compile a task card into its retriever file: head and fusion parameters."""
    if out.exists() and not force:  # before anything loads: the old file stays as it was
        raise HydraInputError("exists already: pass --force to overwrite it", path=out)
    from hydra_core.data.opened_task import OpenedTask
    from hydra_core.encoding.encoder import FrozenEncoder
    from hydra_core.evaluation.reference_heads import refine_retriever
    from hydra_core.model.hypernet import Hypernet
    from hydra_core.model.retriever import ConditionedRetriever

    encoder = FrozenEncoder()
    retriever = ConditionedRetriever(Hypernet.load(checkpoint), encoder)
    task_card = find_card(card)
    opened = None
    if retriever.reads_profiles or refine > 0:  # the corpus is needed: open it first
        opened = OpenedTask.of_card(task_card, encoder)
    started = time.perf_counter()
    compiled = (
        retriever.compile(task_card)
        if opened is None
        else retriever.compile_task(task_card, opened)
    )
    elapsed = time.perf_counter() - started
    if refine > 0:
        assert opened is not None
        started = time.perf_counter()
        compiled = refine_retriever(compiled, opened, encoder, refine)
        typer.echo(
            f"refined with {refine} steps on generated queries from the task's corpus "
            f"in {time.perf_counter() - started:.1f} s (teachers indexed and ranking included)"
        )
    compiled.save(out)
    head_parameters = compiled.head.num_parameters if compiled.head is not None else 0
    fusion = compiled.fusion
    typer.echo(
        f"{out}: {head_parameters:,} head parameters, lexical weight "
        f"{fusion.lexical_weight:.3f}, feedback {fusion.feedback:.3f}, "
        f"compiled in {elapsed * 1e3:.1f} ms"
        + (" (the task's profile included)" if retriever.reads_profiles else "")
    )


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Query text.")],
    card: Annotated[str, typer.Option(help="Task card file or name.")],
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Hypernet checkpoint directory (default: the champion `hydra run` registered).",
        ),
    ] = None,
    retriever_file: Annotated[
        Path | None,
        typer.Option(
            "--retriever", help="A retriever file (hydra compile or hydra adapt) to search with."
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", help="Number of results.")] = 10,
    index: IndexOption = "exact",
    config_path: ConfigOption = None,
) -> None:
    """Search a task's corpus with the retriever compiled from its card by the champion
    hypernet (the last that passed its checks) or --checkpoint, or with a retriever file
    written for it (--retriever)."""
    from hydra_core.ranking.ann_index import index_kind

    kind = index_kind(index)
    if k < 1:
        raise typer.BadParameter(f"{k} results: ask for at least 1", param_hint="'-k'")
    if not query.strip():
        raise typer.BadParameter(
            f"{query!r} is empty: give the text to search for", param_hint="QUERY"
        )
    if checkpoint is not None and retriever_file is not None:
        raise typer.BadParameter("give --checkpoint or --retriever, not both")
    if checkpoint is None and retriever_file is None:  # before the modelling stack loads
        from hydra_pipeline.runner import champion_checkpoint

        checkpoint = Path(champion_checkpoint(load_config(config_path)).path)

    from hydra_core.data.opened_task import OpenedTask
    from hydra_core.encoding.encoder import FrozenEncoder
    from hydra_core.model.compiled_retriever import CompiledRetriever
    from hydra_core.model.hypernet import Hypernet
    from hydra_core.model.retriever import ConditionedRetriever, RetrieverIndex

    encoder = FrozenEncoder()
    task_card = find_card(card)
    opened = OpenedTask.of_card(task_card, encoder)
    if retriever_file is not None:
        compiled = CompiledRetriever.load(retriever_file)
    else:
        assert checkpoint is not None
        retriever = ConditionedRetriever(Hypernet.load(checkpoint), encoder)
        compiled = retriever.compile_task(task_card, opened)
    searcher = RetrieverIndex.of_task(compiled, opened, encoder, index=kind)
    ranking = searcher.search(["query"], [query], k)
    titles = dict(zip(opened.doc_ids, opened.doc_texts, strict=True))
    for rank, doc_id, score in ranking.select("rank", "doc_id", "score").iter_rows():
        typer.echo(f"{rank:>3}  {score:.4f}  {doc_id}  {titles[doc_id][:90]}")
