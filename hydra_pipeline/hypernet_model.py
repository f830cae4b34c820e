"""The hypernet as an MLflow model: a pyfunc that compiles task cards.

Every training run logs its checkpoint as this model, and the registered versions of
``hydra-hypernet`` are it, so an MLflow user needs nothing of Hydra's CLI:
``mlflow.pyfunc.load_model("models:/hydra-hypernet@champion").predict(cards)`` compiles
each card (its YAML text, one per row of a ``card`` column) as ``hydra compile`` does, its
corpus aside (below): one
output row per card with its task name, the fusion's lexical weight and feedback, the head's
parameter count and the retriever file itself (``retriever``: the bytes of the
``.safetensors`` file ``hydra compile --out`` writes; ``CompiledRetriever.load`` reads it).
Compiling, not searching: a compiled retriever is what a card yields without its corpus,
so the model needs no dataset where it is loaded, only the base encoder. Without the corpus
there is no task profile, so the fusion is the gate's at the pool's mean profile (its
per-query part still acts at search time); ``hydra compile`` profiles the corpus and may
choose another lexical weight and feedback. The head is the same.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
import yaml
from mlflow.models import ModelSignature
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema

MODEL_ARTIFACT = "model"
"""Where a training run's MLflow model lives among its artifacts (what a version points at)."""

CHECKPOINT = "checkpoint"
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "card")]),
    outputs=Schema(
        [
            ColSpec("string", "task"),
            ColSpec("double", "lexical_weight"),
            ColSpec("double", "feedback"),
            ColSpec("long", "head_parameters"),
            ColSpec("binary", "retriever"),
        ]
    ),
)


class CardCompiler(PythonModel):
    """Task cards in, their compiled retrievers out (see the module docstring)."""

    def load_context(self, context: PythonModelContext) -> None:
        from hydra_core.encoding.encoder import FrozenEncoder
        from hydra_core.model.hypernet import Hypernet
        from hydra_core.model.retriever import ConditionedRetriever

        hypernet = Hypernet.load(context.artifacts[CHECKPOINT])
        encoder = FrozenEncoder(hypernet.base_model, show_progress=False)
        self.retriever = ConditionedRetriever(hypernet, encoder)

    def predict(  # pyright: ignore[reportIncompatibleMethodOverride]: MLflow's says None
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        from hydra_core.data.cards import TaskCard

        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for text in model_input["card"]:
                compiled = self.retriever.compile(TaskCard.model_validate(yaml.safe_load(text)))
                path = Path(tmp) / "retriever.safetensors"
                compiled.save(path)
                head = compiled.head
                rows.append(
                    {
                        "task": compiled.task,
                        "lexical_weight": float(compiled.fusion.lexical_weight),
                        "feedback": float(compiled.fusion.feedback),
                        "head_parameters": 0 if head is None else head.num_parameters,
                        "retriever": path.read_bytes(),
                    }
                )
        return pd.DataFrame(rows, columns=[column.name for column in SIGNATURE.outputs])


def log_hypernet_model(
    client: MlflowClient, run_id: str, checkpoint: Path, example_card: str
) -> None:
    """Log ``checkpoint`` as the run's :data:`MODEL_ARTIFACT`, with its signature and
    ``example_card`` (a training card's YAML) as input example.

    Its requirement is this project (``hydra-retrieval``), which brings the rest; naming it
    spares MLflow inferring requirements by loading the model in a subprocess.
    """
    from importlib.metadata import version

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / MODEL_ARTIFACT
        mlflow.pyfunc.save_model(
            folder,
            python_model=CardCompiler(),
            artifacts={CHECKPOINT: str(checkpoint)},
            signature=SIGNATURE,
            input_example=pd.DataFrame({"card": [example_card]}),
            pip_requirements=[f"hydra-retrieval=={version('hydra-retrieval')}"],
        )
        client.log_artifacts(run_id, str(folder), MODEL_ARTIFACT)
