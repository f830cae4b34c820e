"""The frozen encoder's OpenVINO backend: the same weights, compiled for the CPU.

CPU encoding dominates every cold run. OpenVINO converts the sentence-transformers
model's transformer in memory (no export tool, no model hub) and, on CPUs with native
bf16 (AMX / AVX-512 BF16), runs it in bf16 about 1.7x faster than torch's bf16 autocast.
Tokenisation is sentence-transformers' own, and mean pooling and L2 normalisation are
done here exactly as its modules do them, so only the transformer's arithmetic differs.
Texts are batched by length, longest first, so padding is short within each batch.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, cast

import numpy as np
import openvino as ov
import torch
import transformers
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

log = logging.getLogger(__name__)

_INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16"}
BATCH_SIZE = 16


def ir_folder(root: Path, model_fingerprint: str) -> Path | None:
    """Where a model's converted IR is kept: per weights and converter versions.

    ``None`` (convert every time) for a model named by hub id, whose weights are unknown.
    """
    if model_fingerprint == "hub":
        return None
    versions = f"openvino-{ov.get_version()}-transformers-{transformers.__version__}"
    return root / f"{model_fingerprint}-{re.sub(r'[^A-Za-z0-9.]+', '_', versions)}"


class UnsupportedModelError(ValueError):
    """A model whose modules this backend does not reproduce (use the torch backend)."""


def check_supported(model: SentenceTransformer) -> None:
    """Accept Transformer -> mean Pooling -> optional Normalize, the layout reproduced here."""
    modules = list(model)
    kinds = [type(module) for module in modules]
    layout_ok = kinds[:2] == [Transformer, Pooling] and kinds[2:] in ([], [Normalize])
    pooling = modules[1] if len(modules) > 1 else None
    if not layout_ok or not isinstance(pooling, Pooling) or pooling.pooling_mode != "mean":
        names = " -> ".join(kind.__name__ for kind in kinds)
        raise UnsupportedModelError(
            f"the openvino backend reproduces Transformer -> mean Pooling -> Normalize, "
            f"not {names}; use backend 'torch' for this model"
        )
    if not pooling.include_prompt and any((model.prompts or {}).values()):
        raise UnsupportedModelError(
            "the openvino backend pools prompt tokens too, but this model's pooling excludes "
            "them; use backend 'torch' for this model"
        )


class OpenVinoEncoder:
    """Normalised mean-pooled sentence embeddings from an OpenVINO-compiled transformer."""

    def __init__(
        self,
        model: SentenceTransformer,
        precision: Literal["fp32", "bf16"],
        ir_folder: Path | None = None,
    ) -> None:
        check_supported(model)
        self.model = model
        converted = self._converted(ir_folder)
        self.input_names = [port.get_any_name() for port in converted.inputs]
        self.dimension = converted.outputs[0].get_partial_shape()[-1].get_length()
        self.compiled = ov.Core().compile_model(
            converted,
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": _INFERENCE_PRECISION[precision],
                "PERFORMANCE_HINT": "THROUGHPUT",
            },
        )

    def _converted(self, ir_folder: Path | None) -> ov.Model:
        """The transformer as an OpenVINO model, read from ``ir_folder`` when saved there.

        Converting traces the torch model, which takes seconds; reading the saved IR takes
        a fraction of one. The IR is saved at full precision and written atomically.
        """
        ir_file = ir_folder / "model.xml" if ir_folder is not None else None
        if ir_file is not None and ir_file.is_file():
            try:
                return ov.Core().read_model(ir_file)
            except RuntimeError:
                log.warning("unreadable OpenVINO model %s; converting again", ir_file)
        example = self._tokenize(["an example text", "and a second, longer example text"])
        transformer = cast(Transformer, self.model[0]).auto_model.eval()
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter: the traced graph is exact here
            converted = ov.convert_model(transformer, example_input=example)
        if ir_folder is not None:
            _save_atomically(converted, ir_folder)
        return converted

    def _tokenize(self, texts: Sequence[str], prompt: str | None = None) -> dict[str, torch.Tensor]:
        features = self.model.preprocess(list(texts), prompt=prompt)
        return {name: value for name, value in features.items() if isinstance(value, torch.Tensor)}

    def encode(self, texts: Sequence[str], prompt: str | None = None) -> np.ndarray:
        """One L2-normalised float32 row per text, with ``prompt`` before each."""
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)

        def pool(request: ov.InferRequest, job: tuple[np.ndarray, np.ndarray]) -> None:
            rows, mask = job
            tokens = request.get_output_tensor(0).data
            weights = mask[..., None].astype(np.float32)
            summed = (tokens * weights).sum(axis=1)
            vectors[rows] = summed / np.clip(weights.sum(axis=1), 1e-9, None)

        queue = ov.AsyncInferQueue(self.compiled)
        queue.set_callback(pool)
        for rows in _length_batches(texts, BATCH_SIZE):
            features = self._tokenize([texts[int(i)] for i in rows], prompt)
            inputs = {name: features[name].numpy() for name in self.input_names}
            queue.start_async(inputs, (rows, inputs["attention_mask"]))
        queue.wait_all()
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.clip(norms, 1e-12, None)


def _length_batches(texts: Sequence[str], size: int) -> Iterator[np.ndarray]:
    """Indices of texts in batches, longest first (sentence-transformers' order)."""
    order = np.argsort([-len(text) for text in texts], kind="stable")
    for start in range(0, len(order), size):
        yield order[start : start + size]


def _save_atomically(model: ov.Model, folder: Path) -> None:
    """Save the IR (model.xml + model.bin) in a temporary folder, then rename it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        ov.save_model(model, staging / "model.xml", compress_to_fp16=False)
        shutil.rmtree(folder, ignore_errors=True)  # a broken copy; a good one was read above
        os.rename(staging, folder)
    except OSError:
        log.info("another process saved %s first", folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
