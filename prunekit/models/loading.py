"""Load an Audio Spectrogram Transformer from "demo", a Hugging Face hub id, or a local folder.

``load_model(source)`` returns ``(model, feature_extractor, labels)``. The model is in eval
mode. Hub loading never passes ``trust_remote_code`` and fails fast, with a message that says
what to do, when the hub cannot be reached.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

from safetensors import SafetensorError
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, AutoConfig

from prunekit.errors import ModelLoadError
from prunekit.models import token_pruned

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo_model"
AST_MODEL_TYPE = "audio-spectrogram-transformer"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class LoadedModel(NamedTuple):
    model: ASTForAudioClassification
    feature_extractor: ASTFeatureExtractor
    labels: list[str]


def load_model(source: str | os.PathLike) -> LoadedModel:
    """Load ``source``: ``"demo"``, an existing local folder, or a hub id such as
    ``MIT/ast-finetuned-speech-commands-v2``. Raises ModelLoadError naming the source."""
    text = str(source).strip()
    if not text:
        raise ModelLoadError("No model given: use 'demo', a local folder or a Hugging Face hub id.")
    if text == "demo":
        if not (DEMO_DIR / "config.json").is_file():
            raise ModelLoadError(
                f"The embedded demo model is missing from {DEMO_DIR}; "
                "recreate it with `python -m prunekit demo-train`."
            )
        return _load_local(DEMO_DIR)
    path = Path(text).expanduser()
    if path.is_dir():
        return _load_local(path)
    if path.exists():
        raise ModelLoadError(f"{text} is a file, not a model folder (expected a folder with config.json).")
    if text.startswith((".", "/", "~")) or not _HUB_ID.match(text):
        raise ModelLoadError(f"No model folder at {text}, and it is not a valid Hugging Face hub id.")
    return _load_hub(text)


def _load_local(path: Path) -> LoadedModel:
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} has no config.json: it is not a model saved with save_pretrained.")
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Could not read the config in {path}: {exc}") from exc
    _check_model_type(config, str(path))
    try:
        # A pruned model (config.prunekit_structure, config.prunekit_tokens) rebuilds from the config.
        model = token_pruned.model_class_for(config).from_pretrained(path)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise ModelLoadError(f"Could not load the weights in {path}: {exc}") from exc
    return LoadedModel(model.eval(), _feature_extractor(path, config), _labels(config))


def _load_hub(repo_id: str) -> LoadedModel:
    # The local HF cache first: a user who downloaded the model once can work offline.
    try:
        return _from_hub(repo_id, local_files_only=True)
    except (OSError, ValueError):
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        raise ModelLoadError(
            f"'{repo_id}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, "
            "so the hub is not contacted. Download it on a connected machine "
            "(`model.save_pretrained(folder)`) and pass that folder instead."
        )
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not _reachable(endpoint):
        raise ModelLoadError(
            f"Cannot load '{repo_id}': the Hugging Face hub ({endpoint}) is unreachable (offline?). "
            "Save the model on a connected machine with `save_pretrained(folder)` "
            "and pass that local folder instead."
        )
    try:
        return _from_hub(repo_id, local_files_only=False)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"Could not load '{repo_id}' from the Hugging Face hub: {exc}. "
            "Check the id (owner/name), or pass a local folder saved with save_pretrained."
        ) from exc


def _from_hub(repo_id: str, *, local_files_only: bool) -> LoadedModel:
    config = AutoConfig.from_pretrained(repo_id, local_files_only=local_files_only)
    _check_model_type(config, repo_id)
    model = token_pruned.model_class_for(config).from_pretrained(repo_id, local_files_only=local_files_only)
    try:
        extractor = ASTFeatureExtractor.from_pretrained(repo_id, local_files_only=local_files_only)
    except OSError:
        extractor = _default_extractor(config)
    return LoadedModel(model.eval(), extractor, _labels(config))


def _reachable(endpoint: str, timeout: float = 3.0) -> bool:
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _check_model_type(config, source: str) -> None:
    model_type = getattr(config, "model_type", None)
    if model_type != AST_MODEL_TYPE:
        raise ModelLoadError(
            f"{source} is a '{model_type}' model; prunekit works on Audio Spectrogram "
            f"Transformers ('{AST_MODEL_TYPE}')."
        )


def _feature_extractor(path: Path, config: ASTConfig) -> ASTFeatureExtractor:
    if (path / "preprocessor_config.json").is_file():
        return ASTFeatureExtractor.from_pretrained(path)
    return _default_extractor(config)


def _default_extractor(config: ASTConfig) -> ASTFeatureExtractor:
    # No saved settings: match the model's input shape, keep AST's AudioSet normalisation.
    return ASTFeatureExtractor(num_mel_bins=config.num_mel_bins, max_length=config.max_length)


def _labels(config: ASTConfig) -> list[str]:
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label.get(i, id2label.get(str(i), f"class_{i}"))) for i in range(config.num_labels)]
