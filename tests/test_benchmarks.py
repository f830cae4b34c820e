"""``hydra bench``: the suite runs at quick sizes and every figure is well-formed.

Speed is not asserted (machines are shared and noisy); correctness of what is measured is:
the second encode of the same texts must not run the model.
"""

from __future__ import annotations

import json
import math
import subprocess

import pytest
from system_tools import HYDRA
from typer.testing import CliRunner

from hydra_pipeline.benchmarks.inputs import QUICK
from hydra_pipeline.benchmarks.suite import contention_warning, render_text
from hydra_pipeline.cli import app

FIGURES = {
    "encode",
    "cache",
    "compile",
    "project",
    "search",
    "new_task",
    "memory",
    "pipeline",
    "serve",
    "ann",
}
NOISE = {
    ("serve", "extra_task_rss_mib"),
    ("ann", "scifact_base_ndcg@10_difference"),
    ("ann", "scifact_hybrid_ndcg@10_difference"),
}
"""Differences: of resident memory (at quick sizes, 3 MB a task, the allocator's reuse of
freed memory is as large as what is measured), and of NDCG (signed)."""


def _check_numbers(figure: str, values: dict[str, object]) -> None:
    for key, value in values.items():
        if isinstance(value, bool | str | list) or (figure, key) in NOISE:
            continue
        assert isinstance(value, int | float), (figure, key, value)
        assert math.isfinite(value) and value >= 0, (figure, key, value)


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Converted models go to a throwaway cache folder, shared by this module's tests."""
    monkeypatch.setenv("HYDRA_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "bench-cache"))


def test_quick_suite_as_json() -> None:
    result = CliRunner().invoke(app, ["bench", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)
    assert set(results) >= FIGURES
    for figure in FIGURES:
        _check_numbers(figure, results[figure])

    encode = results["encode"]
    assert encode["encode_ratio"] > 0
    assert encode["torch_fp32_min_cosine_to_plain"] > 0.999
    assert any(key.startswith("openvino_") and key.endswith("_ratio") for key in encode)

    cache = results["cache"]
    assert cache["first_encoder_calls"] >= 1
    assert (cache["second_encoder_calls"], cache["second_texts_encoded"]) == (0, 0)
    assert cache["second_loaded_model"] is False

    assert results["compile"]["compile_ms"] > 0
    assert results["compile"]["compile_ms_cached_profile"] > 0
    assert results["compile"]["profile_new_task_ms"] > 0
    assert results["compile"]["profile_documents"] == QUICK.corpus_docs
    assert results["compile"]["head_parameters"] == 256 * 384 + 3 * 256
    assert results["project"]["project_ratio"] > 0
    search = results["search"]
    assert {"dense_batched_qps", "dense_single_qps", "bm25_batched_qps", "bm25_single_qps"} <= set(
        search
    )
    new_task = results["new_task"]
    assert 0 < new_task["new_task_s"] <= new_task["new_task_from_cache_s"]
    assert new_task["texts_encoded"] > 0  # the new card's texts; the corpus came from the cache
    memory = results["memory"]
    for name in ("search", "new_task"):
        assert 0 < memory[f"{name}_start_rss_mib"] <= memory[f"{name}_peak_rss_mib"]
    # Targets are not measurements: they have their own key, never a figure's.
    assert all(isinstance(value, int | float) for value in memory.values()), memory
    assert results["targets"] == {
        "memory": {"search_peak_rss_mib": "<= 1536", "new_task_peak_rss_mib": "<= 1536"},
        "compile": {"compile_ms_cached_profile": "<= 20", "profile_new_task_ms": "<= 1000"},
    }
    assert "skipped" in results["pipeline"]

    serve = results["serve"]
    assert serve["tasks"] == 3
    assert serve["task_mib_accounted"] == round((3000 * 256 + 256 * 384 + 3 * 256) * 4 / 2**20, 2)
    for side in ("http", "service", "in_process"):
        assert 0 < serve[f"{side}_p50_ms"] <= serve[f"{side}_p99_ms"]
    assert serve["load_puts"] == [201, 200, 200, 200]
    assert serve["load_requests"] > 0 and serve["load_during_puts"] > 0
    assert serve["load_errors"] == serve["load_dropped"] == serve["load_failed_during_puts"] == 0

    ann = results["ann"]
    for name in ("base", "hybrid"):
        assert ann[f"scifact_{name}_recall@100"] >= 0.99
        assert abs(ann[f"scifact_{name}_ndcg@10_difference"]) <= 0.002
    assert ann["n3000_recall@100"] >= 0.99
    assert ann["n3000_hnsw_load_s"] > 0 and ann["n3000_hnsw_build_s"] > 0
    for side in ("exact", "hnsw", "flat_ip", "bm25s"):
        assert ann[f"scifact_{side}_batched_qps"] > 0 and ann[f"scifact_{side}_single_qps"] > 0


def test_text_shows_targets_in_their_own_column() -> None:
    results = {
        "compile": {"compile_ms": 2.5},
        "memory": {"search_peak_rss_mib": 1514.2, "search_start_rss_mib": 950.0},
        "targets": {"memory": {"search_peak_rss_mib": "<= 1536"}},
    }
    header, *rows = render_text(results).splitlines()
    assert header.split() == ["measure", "measured", "target"]
    assert [row.split() for row in rows] == [
        ["compile.compile_ms", "2.5"],
        ["memory.search_peak_rss_mib", "1514.2", "<=", "1536"],
        ["memory.search_start_rss_mib", "950.0"],
    ]
    assert header.index("target") == rows[1].index("<= 1536")


def test_a_load_above_the_core_count_is_warned_about() -> None:
    quiet = {"cpus": 2, "load_average_before": 0.4, "load_average_after": 2.4}  # its own load
    assert contention_warning(quiet) is None
    busy = contention_warning({**quiet, "load_average_before": 9.5})
    assert busy is not None and busy.startswith("load average 9.5 is above the 2 cores")


def test_one_figure_as_text_and_unknown_figures() -> None:
    result = CliRunner().invoke(app, ["bench", "--quick", "--only", "compile"])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(maxsplit=1) for line in result.stdout.splitlines())
    assert float(lines["compile.compile_ms"]) > 0
    assert not any(name.startswith("encode.") for name in lines)

    unknown = CliRunner().invoke(app, ["bench", "--only", "nosuch"])
    assert unknown.exit_code == 2
    assert "nosuch" in unknown.output


def test_ann_sizes_through_the_console_script() -> None:
    """``--ann-sizes`` picks the replicated corpora of the ann figure; a bad one is refused."""
    command = [str(HYDRA), "bench", "--quick", "--only", "ann", "--json"]
    ran = subprocess.run([*command, "--ann-sizes", "2000"], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    ann = json.loads(ran.stdout)["ann"]
    assert ann["n2000_recall@100"] >= 0.99 and not any(key.startswith("n3000") for key in ann)
    for bad in ("0", "many", "1000,"):
        refused = subprocess.run([*command, "--ann-sizes", bad], capture_output=True, text=True)
        assert refused.returncode == 2 and refused.stdout == ""
        assert f"{bad!r}: give positive document counts" in refused.stderr
