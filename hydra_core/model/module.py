"""HydraModule: what every trainable piece shares, after sentence-transformers' ``Module``.

A piece lists its constructor arguments in ``config_keys``; :meth:`~HydraModule.get_config_dict`
reads them back, :meth:`~HydraModule.save` writes that dict as ``config.json`` beside the
weights in ``model.safetensors``, and :meth:`~HydraModule.load` rebuilds the piece from the
two. So a piece's own save is its ``config_keys`` and its ``format``. Loading never
unpickles: a truncated, foreign or mismatched folder is refused with an error naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Self

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from hydra_core.atomic import save_tensors_atomic, write_text_atomic
from hydra_core.errors import HydraInputError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class HydraModule(nn.Module):
    """A torch module that saves to, and loads from, a folder of config and weights."""

    config_keys: ClassVar[tuple[str, ...]] = ()
    """The constructor's arguments, each kept as an attribute of the same name."""
    format: ClassVar[str]
    """Written into both files; :meth:`load` refuses a folder of another format."""

    def get_config_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.config_keys}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Self:
        """The piece, untrained, from a dict :meth:`get_config_dict` wrote."""
        return cls(**{key: config[key] for key in cls.config_keys})

    @classmethod
    def check_config(cls, config: dict[str, Any], path: Path) -> None:
        """Refuse a config the piece cannot be built from; override to check sizes."""

    def save(self, directory: Path | str) -> Path:
        """Write weights and config into ``directory`` (each file atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {name: t.detach().contiguous() for name, t in self.state_dict().items()}
        save_tensors_atomic(directory / WEIGHTS_FILE, state, {"format": self.format})
        config = {"format": self.format, **self.get_config_dict()}
        write_text_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def read_config(cls, directory: Path | str) -> dict[str, Any]:
        """The folder's config.json, checked enough to build the piece from it."""
        directory = Path(directory)
        path = directory / CONFIG_FILE
        if not directory.is_dir():
            raise HydraInputError("checkpoint directory does not exist", path=directory)
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise HydraInputError(f"unreadable checkpoint config ({error})", path=path) from None
        if not isinstance(config, dict) or config.get("format") != cls.format:
            raise HydraInputError(f"not a {cls.__name__} (format != {cls.format})", path=path)
        cls.check_config(config, path)
        return config

    @classmethod
    def load(cls, directory: Path | str) -> Self:
        """Load a folder written by :meth:`save`."""
        directory = Path(directory)
        config = cls.read_config(directory)
        try:
            model = cls.from_config(config)
        except (KeyError, TypeError, ValueError) as error:
            raise HydraInputError(
                f"incomplete {cls.__name__} config ({error!r})", path=directory / CONFIG_FILE
            ) from None
        weights_path = directory / WEIGHTS_FILE
        try:
            state = load_file(str(weights_path))
        except (SafetensorError, OSError, ValueError) as error:
            raise HydraInputError(
                f"unreadable weights ({error}); the file may be truncated or not safetensors",
                path=weights_path,
            ) from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise HydraInputError(
                f"weights do not fit the configured architecture: {error}", path=weights_path
            ) from None
        return model
