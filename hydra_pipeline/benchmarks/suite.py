"""The suite: figures by name, run in this process or a fresh one, rendered for people.

``python -m hydra_pipeline.benchmarks.suite FIGURE SIZES`` is :func:`run_isolated`'s child.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import torch

from hydra_pipeline.benchmarks.ann import ann_figure
from hydra_pipeline.benchmarks.encoding import cache_figure, encode_figure
from hydra_pipeline.benchmarks.inputs import BenchSizes
from hydra_pipeline.benchmarks.measuring import Figure, peak_rss_mib
from hydra_pipeline.benchmarks.search import (
    compile_figure,
    new_task_figure,
    project_figure,
    retriever_figure,
    search_figure,
)
from hydra_pipeline.benchmarks.service import pipeline_figure, quality_figure, serve_figure

FIGURES: dict[str, Callable[[BenchSizes], Figure]] = {
    "encode": encode_figure,
    "cache": cache_figure,
    "compile": compile_figure,
    "project": project_figure,
    "search": search_figure,
    "new_task": new_task_figure,
    "pipeline": pipeline_figure,
    "retriever": retriever_figure,
    "serve": serve_figure,
    "ann": ann_figure,
}


ISOLATED = ("search", "new_task")


"""Figures run in a fresh process each, so that figure 7 attributes peak memory to them."""


TARGETS = "targets"


"""The results' key for what figures should be (``{figure: {measure: bound}}``), kept apart
from what they measured."""


MEMORY_TARGET_MIB = 1536


"""Figure 7's target: the peak memory of each of figure 5's and 6's processes, at most."""


COMPILE_TARGETS = {"compile_ms_cached_profile": "<= 20", "profile_new_task_ms": "<= 1000"}
"""Figure 3's targets: a compile from a cached profile in 20 ms; profiling a new task over
100,000 encoded documents (the full size) in a second."""


def _measured(name: str, sizes: BenchSizes) -> Figure:
    figure = FIGURES[name](sizes)
    figure["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return figure


def run_isolated(name: str, sizes: BenchSizes) -> Figure:
    """Run one figure in a fresh Python process and return it with that process' peak memory.

    A new interpreter (not a fork) starts from an empty memory high-water mark, so the
    peak is the figure's own; the child's stderr (progress, logs) goes to ours.
    """
    command = [
        sys.executable,
        "-m",
        "hydra_pipeline.benchmarks.suite",
        name,
        json.dumps(asdict(sizes)),
    ]
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark figure {name!r} failed (exit {result.returncode})")
    return json.loads(result.stdout.splitlines()[-1])


def run_suite(
    sizes: BenchSizes,
    only: Sequence[str] | None = None,
    *,
    quality: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every figure (or those in ``only``) as ``{figure name: {measure: value}}``, and
    under ``targets`` the same shape for the measures that have a target.

    Asking for ``memory`` runs the figures whose memory it reports; ``quality`` (the
    backend comparison, also added by ``quality=True``) is no figure of the suite proper.
    """
    wanted = set(only or FIGURES)
    unknown = sorted(wanted - set(FIGURES) - {"memory", "quality"})
    if unknown:
        names = ", ".join([*FIGURES, "memory", "quality"])
        raise ValueError(f"unknown figures {unknown}; figures are {names}")
    if "memory" in wanted:
        wanted.update(ISOLATED)
    quality = quality or "quality" in wanted
    names = [name for name in FIGURES if name in wanted]
    results: dict[str, Any] = {
        "sizes": asdict(sizes),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_before": round(os.getloadavg()[0], 2),
        },
    }
    for name in names:
        if progress is not None:
            progress(name)
        results[name] = run_isolated(name, sizes) if name in ISOLATED else FIGURES[name](sizes)
    isolated = [name for name in ISOLATED if name in results]
    if isolated:
        results["memory"] = {
            f"{name}_peak_rss_mib": results[name].pop("peak_rss_mib") for name in isolated
        } | {f"{name}_start_rss_mib": results[name].pop("start_rss_mib") for name in isolated}
        results.setdefault(TARGETS, {})["memory"] = {
            f"{name}_peak_rss_mib": f"<= {MEMORY_TARGET_MIB}" for name in isolated
        }
    if "compile" in results:
        results.setdefault(TARGETS, {})["compile"] = COMPILE_TARGETS
    if quality:
        if progress is not None:
            progress("quality")
        results["quality"] = quality_figure()
    results["machine"]["load_average_after"] = round(os.getloadavg()[0], 2)
    return results


def contention_warning(machine: dict[str, Any]) -> str | None:
    """A warning when the load average before the run exceeded the core count: other work
    then shares the cores, and it moves ratios too (side by side is fairer, not immune).
    The load after includes the benchmark's own threads, so it says little about others."""
    cpus = machine.get("cpus") or 1
    load = machine.get("load_average_before", 0.0)
    if load <= cpus:
        return None
    return (
        f"load average {load} is above the {cpus} cores: other work shared the machine, so "
        "these figures (ratios included) may be far from a quiet machine's; measure again "
        "when the load is under 1"
    )


def render_text(results: dict[str, Any]) -> str:
    """One ``figure.measure  measured  target`` line per measure, for people (``--json`` is
    for tools): what was measured, and in its own column what it should be."""
    targets = results.get(TARGETS, {})
    lines = [f"{'measure':<48} {'measured':<20} target"]
    for figure, values in results.items():
        if figure == TARGETS:
            continue
        for key, value in values.items():
            shown = json.dumps(value) if isinstance(value, dict | list | bool) else value
            target = targets.get(figure, {}).get(key, "")
            lines.append(f"{figure + '.' + key:<48} {shown!s:<20} {target}".rstrip())
    return "\n".join(lines)


if __name__ == "__main__":  # run_isolated's child: one figure, as one JSON line on stdout
    _figure, _sizes = sys.argv[1:3]
    print(json.dumps(_measured(_figure, BenchSizes(**json.loads(_sizes)))))
