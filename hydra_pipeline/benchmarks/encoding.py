"""Figures 1 and 2: encoding documents with the frozen base, and the embedding cache."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import torch

from hydra_core.encoding.embedding_cache import EmbeddingCache
from hydra_core.encoding.encoder import (
    DEFAULT_MODEL,
    Backend,
    FrozenEncoder,
    Precision,
    Role,
    default_precision,
    resolve_model_path,
)
from hydra_pipeline.benchmarks.inputs import BenchSizes, scifact_texts
from hydra_pipeline.benchmarks.measuring import Figure, interleaved, scratch_dir


class CountingEncoder(FrozenEncoder):
    """A FrozenEncoder that counts how often it runs the model (for figure 2)."""

    calls = 0

    def _encode_uncached(self, texts: list[str], role: Role) -> np.ndarray:
        self.calls += 1
        return super()._encode_uncached(texts, role)


def encode_figure(sizes: BenchSizes) -> Figure:
    """1. Documents/s of Hydra's encoder paths vs plain ``SentenceTransformer.encode`` (fp32).

    Every Hydra side encodes into its own empty cache, so it pays hashing and SQLite
    writes on top of the model. ``encode_ratio`` is the torch path at the plain path's
    precision (fp32), i.e. Hydra's overhead; the other ratios are the faster paths.
    """
    from sentence_transformers import SentenceTransformer

    texts = scifact_texts(sizes.encode_docs + 8)
    warm_up, texts = texts[:8], texts[8:]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    plain = SentenceTransformer(resolve_model_path(DEFAULT_MODEL), device="cpu")
    fast_precision = default_precision()
    configs: dict[str, tuple[Backend, Precision]] = {"torch_fp32": ("torch", "fp32")}
    if fast_precision != "fp32":
        configs[f"torch_{fast_precision}"] = ("torch", fast_precision)
    configs[f"openvino_{fast_precision}"] = ("openvino", fast_precision)
    chunks = [
        list(chunk) for chunk in np.array_split(np.array(texts, dtype=object), sizes.encode_rounds)
    ]
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in ["plain_fp32", *configs]}
    with scratch_dir() as folder:
        encoders = {
            name: FrozenEncoder(
                cache=EmbeddingCache(folder / f"{name}.sqlite"),
                backend=backend,
                precision=precision,
                show_progress=False,
            )
            for name, (backend, precision) in configs.items()
        }
        load_seconds: dict[str, float] = {}
        for name, encoder in encoders.items():
            started = time.perf_counter()
            encoder.encode(warm_up, "document")
            load_seconds[name] = time.perf_counter() - started
        plain.encode(warm_up, normalize_embeddings=True)

        def plain_side(chunk: list[str]) -> None:
            with torch.inference_mode():
                outputs["plain_fp32"].append(plain.encode(chunk, normalize_embeddings=True))

        def hydra_side(name: str, chunk: list[str]) -> None:
            outputs[name].append(encoders[name].encode(chunk, "document"))

        totals = {name: 0.0 for name in outputs}
        for chunk in chunks:
            sides: dict[str, Callable[[], object]] = {"plain_fp32": lambda c=chunk: plain_side(c)}
            sides.update({name: lambda n=name, c=chunk: hydra_side(n, c) for name in configs})
            for name, seconds in interleaved(sides, 1).items():
                totals[name] += seconds[0]
    rates = {name: len(texts) / seconds for name, seconds in totals.items()}
    reference = np.concatenate(outputs["plain_fp32"])
    figure: Figure = {"documents": len(texts), "precision": fast_precision}
    for name, rate in rates.items():
        figure[f"{name}_docs_per_s"] = round(rate, 2)
    for name in configs:
        vectors = np.concatenate(outputs[name])
        figure[f"{name}_min_cosine_to_plain"] = round(float((vectors * reference).sum(1).min()), 6)
        figure[f"{name}_first_call_s"] = round(load_seconds[name], 2)
    figure["encode_ratio"] = round(rates["torch_fp32"] / rates["plain_fp32"], 3)
    for name in configs:
        if name != "torch_fp32":
            figure[f"{name}_ratio"] = round(rates[name] / rates["plain_fp32"], 3)
    if f"torch_{fast_precision}" in rates and fast_precision != "fp32":
        figure[f"openvino_vs_torch_{fast_precision}_ratio"] = round(
            rates[f"openvino_{fast_precision}"] / rates[f"torch_{fast_precision}"], 3
        )
    return figure


def cache_figure(sizes: BenchSizes) -> Figure:
    """2. A second encode of the same texts: model calls (must be 0) and wall time."""
    texts = scifact_texts(sizes.cache_docs)
    with scratch_dir() as folder:
        first = CountingEncoder(cache=EmbeddingCache(folder / "e.sqlite"), show_progress=False)
        started = time.perf_counter()
        first.encode(texts, "document")
        first_seconds = time.perf_counter() - started
        second = CountingEncoder(cache=EmbeddingCache(folder / "e.sqlite"), show_progress=False)
        started = time.perf_counter()
        second.encode(texts, "document")
        second_seconds = time.perf_counter() - started
    return {
        "texts": len(texts),
        "encoder": second.identity,
        "first_encode_s": round(first_seconds, 3),
        "first_encoder_calls": first.calls,
        "second_encode_s": round(second_seconds, 4),
        "second_encoder_calls": second.calls,
        "second_texts_encoded": second.stats.encoded,
        "second_loaded_model": "model" in second.__dict__,
        "speedup": round(first_seconds / second_seconds, 1),
    }
