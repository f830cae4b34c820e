"""A throwaway Hydra project for pipeline tests: real data slices, cards, config, workspace;
and the rows every results table has, which the CLI tests expect too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from hydra_core.data.cards import find_card, write_card
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.settings import PROJECT_ROOT
from hydra_pipeline.artifacts import save_beir_folder
from hydra_pipeline.project_config import ProjectConfig, load_project_config
from hydra_pipeline.runner import prepare_dagster_home

TABLE_METHODS = (
    "bm25",
    "base",
    "teacher",
    "hybrid",
    "hydra",
    "hydra-dense",
    "hydra-generic",
    "hydra-shuffled",
)
"""The teachers, ``hybrid``, and the card's retriever with its ablations, in table order."""
QUICK_TRAINING = {"epochs": 2, "steps_per_epoch": 8, "pairs_per_task": 32}
QUICK_ARCHITECTURE = {"rank": 32}


@dataclass(frozen=True)
class Project:
    root: Path

    @property
    def cards_dir(self) -> Path:
        return self.root / "cards"

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def config_file(self) -> Path:
        return self.root / "hydra.yaml"

    def env(self, cache_dir: Path) -> dict[str, str]:
        """What points Hydra at this project instead of the real one."""
        return {
            "HYDRA_CONFIG": str(self.config_file),
            "HYDRA_CARDS_DIR": str(self.cards_dir),
            "HYDRA_WORKSPACE": str(self.workspace),
            "HYDRA_CACHE_DIR": str(cache_dir),
            "DAGSTER_HOME": str(self.dagster_home),
        }

    def enter(self, patch: pytest.MonkeyPatch) -> ProjectConfig:
        """Point Hydra in this process at the project (its cache inside it) while ``patch``
        lasts, with its Dagster home prepared; the project's config."""
        for key, value in self.env(self.root / "cache").items():
            patch.setenv(key, value)
        config = load_project_config()
        prepare_dagster_home(config)
        return config

    def add_task(self, task: RetrievalTask, name: str, like: str | None = None) -> Path:
        """Write ``task`` as a BEIR folder and a card for it (the text of the shipped card
        named ``like``, by default ``name``)."""
        folder = self.root / "data" / name
        save_beir_folder(task, folder)
        card = find_card(like or name, PROJECT_ROOT / "cards").model_copy(
            update={"source": f"../data/{name}", "name": name}
        )
        path = self.cards_dir / f"{name}.yaml"
        write_card(card, path)
        return path


def make_project(
    root: Path,
    tasks: dict[str, RetrievalTask],
    *,
    executor: str = "in_process",
    like: dict[str, str] | None = None,
    perturbations: list[str] | None = None,
    tolerance: float = 1.0,
) -> Project:
    """A project of ``tasks``, each described by its shipped card's text or by the one
    ``like`` names for it; ``perturbations`` turn the robustness asset on.

    ``tolerance`` is the quality check's: on slices of a few queries hydra may trail the
    base by chance, and the blocking check would then keep the hypernet unregistered, so
    by default any gap passes.
    """
    project = Project(root)
    project.root.mkdir(parents=True, exist_ok=True)
    for name, task in tasks.items():
        project.add_task(task, name, (like or {}).get(name))
    config = {
        "tasks": list(tasks),
        "workspace": "workspace",
        "executor": {"kind": executor, "max_concurrent": 2},
        "tolerance": tolerance,
        "training": {
            "train": QUICK_TRAINING,
            "architecture": QUICK_ARCHITECTURE,
            "labelled_train": QUICK_TRAINING,
            "refine_steps": 5,
        },
    }
    if perturbations:
        config["robustness"] = {"perturbations": perturbations, "seed": 0}
    project.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    return project
