"""Load an Audio Spectrogram Transformer from "demo" (or "demo-tagging"), a Hugging Face hub id,
or a local folder.

``load_model(source)`` returns ``(model, feature_extractor, labels)``. The model is in eval
mode. Hub loading fails fast, with a message that says what to do, when the hub cannot be reached.

A checkpoint is code-free data or it is refused, before anything runs:

* every config, model and extractor read passes ``trust_remote_code=False``, and a config with
  ``auto_map`` (a pointer to Python files shipped with the model) is refused first, so
  transformers' "run the custom code? [y/N]" prompt is never reached;
* weights are read from safetensors only (``use_safetensors=True``): a ``pytorch_model.bin`` is
  a pickle, so a folder holding only that is refused with what to do instead;
* weights and config must agree: a key the config has no module for, a module the weights do
  not fill (transformers would initialise it randomly, differently on every load) or a shape
  that differs is a ModelLoadError listing the keys;
* the feature extractor's settings must be readable and fit the model (mel bins, frames,
  16 kHz input, a positive std), or every forward pass would fail later with a shape error.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import socket
import zipfile
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

from safetensors import SafetensorError
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, AutoConfig

from prunekit.data.audio import TARGET_SR
from prunekit.errors import ModelLoadError
from prunekit.models import key_priors
from prunekit.store import cache_dir, content_key

__all__ = [
    "AST_MODEL_TYPE",
    "DEMO_DIR",
    "DEMO_TAGGING_DIR",
    "EMBEDDED_MODELS",
    "LoadedModel",
    "embedded_dir",
    "load_model",
]

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo_model"  # keyword spotting, committed
DEMO_TAGGING_DIR = DEMO_DIR.parent / "demo_tagging_model"  # tagging, once demo-train --task tagging ran
# The names load_model reads from the package's folders: what each is and the command that writes it.
EMBEDDED_MODELS = {
    "demo": ("demo model", "python -m prunekit demo-train"),
    "demo-tagging": ("tagging demo model", "python -m prunekit demo-train --task tagging"),
}
AST_MODEL_TYPE = "audio-spectrogram-transformer"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_SAFE = {"trust_remote_code": False}  # passed to every from_pretrained: never run a model's code
_SHOWN_KEYS = 6  # keys listed per kind in a weights/config disagreement


class LoadedModel(NamedTuple):
    model: ASTForAudioClassification
    feature_extractor: ASTFeatureExtractor
    labels: list[str]


def embedded_dir(name: str) -> Path:
    """The package folder of an embedded model (a key of EMBEDDED_MODELS)."""
    return DEMO_TAGGING_DIR if name == "demo-tagging" else DEMO_DIR


def load_model(source: str | os.PathLike) -> LoadedModel:
    """Load ``source``: ``"demo"`` or ``"demo-tagging"`` (the embedded models), an existing local
    folder, or a hub id such as ``MIT/ast-finetuned-speech-commands-v2``. Raises ModelLoadError
    naming the source."""
    text = str(source).strip()
    if not text:
        raise ModelLoadError("No model given: use 'demo', a local folder or a Hugging Face hub id.")
    if text in EMBEDDED_MODELS:
        folder = embedded_dir(text)
        if not (folder / "config.json").is_file():
            what, command = EMBEDDED_MODELS[text]
            raise ModelLoadError(f"The embedded {what} is missing from {folder}; make it with `{command}`.")
        return _load_local(folder)
    path = Path(text).expanduser()
    if path.is_dir():
        return _load_local(path)
    if path.is_file() and zipfile.is_zipfile(path):
        return _load_local(_unzipped(path))
    if path.exists():
        raise ModelLoadError(
            f"{text} is a file, not a model folder (expected a folder with config.json, "
            "or the zip the app downloads)."
        )
    if text.startswith((".", "/", "~")) or not _HUB_ID.match(text):
        raise ModelLoadError(f"No model folder at {text}, and it is not a valid Hugging Face hub id.")
    return _load_hub(text)


def _unzipped(archive: Path) -> Path:
    """The model folder inside a zip (the app's download: one top-level folder), extracted once into
    the cache under a hash of the archive. Members that would land outside are refused."""
    data = archive.read_bytes()
    target = cache_dir() / "unzipped" / content_key(data)
    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        names = bundle.namelist()
        bad = [n for n in names if Path(n).is_absolute() or ".." in Path(n).parts]
        if bad:
            raise ModelLoadError(
                f"{archive} has entries outside its folder ({bad[:3]}); refusing to unpack it."
            )
        if not (target / ".complete").is_file():
            bundle.extractall(target)
            (target / ".complete").touch()
    configs = sorted(
        {Path(n).parts[0] for n in names if Path(n).name == "config.json" and len(Path(n).parts) <= 2}
    )
    if len(configs) != 1:
        raise ModelLoadError(
            f"{archive} should hold one model folder with a config.json; found {len(configs)}."
        )
    folder = target / configs[0]
    return folder if folder.is_dir() else target  # a zip of the folder's files, with no top folder


def _read_settings(file: Path, *, source: str) -> dict:
    """A settings file (config.json, preprocessor_config.json) as a JSON object, read by us before
    transformers sees it: a broken file is named, and one that asks for remote code is refused."""
    try:
        settings = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(settings, dict):
        raise ModelLoadError(f"{file} holds a JSON {type(settings).__name__}, not an object of settings.")
    _refuse_remote_code(settings.get("auto_map"), source)
    return settings


def _load_local(path: Path) -> LoadedModel:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{path} has no config.json: it is not a model saved with save_pretrained.")
    _read_settings(config_file, source=str(path))
    try:
        config = AutoConfig.from_pretrained(path, **_SAFE)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"Could not read the config in {path}: {exc}") from exc
    _check_model_type(config, str(path))
    if not (path / "model.safetensors").is_file() and not (path / "model.safetensors.index.json").is_file():
        if any(path.glob("pytorch_model*.bin")):
            raise ModelLoadError(
                f"{path} holds pytorch_model.bin but no model.safetensors. A .bin file is a Python pickle, "
                "which can run code when read, so prunekit reads safetensors only: convert it where you "
                "trust it (load it with transformers and `save_pretrained(folder)`, which writes safetensors)."
            )
        raise ModelLoadError(f"{path} has no model.safetensors: no weights to load.")
    try:
        # A pruned model (config.prunekit_structure, _tokens, _keys) rebuilds from the config.
        model, info = key_priors.model_class_for(config).from_pretrained(
            path, use_safetensors=True, output_loading_info=True, **_SAFE
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise ModelLoadError(f"Could not load the weights in {path}: {exc}") from exc
    _check_loading_info(info, config, str(path))
    return LoadedModel(model.eval(), _feature_extractor(path, config), _labels(config))


def _load_hub(repo_id: str) -> LoadedModel:
    # The local HF cache first: a user who downloaded the model once can work offline.
    try:
        return _from_hub(repo_id, local_files_only=True)
    except ModelLoadError:
        raise  # found in the cache and refused: the hub's copy is the same checkpoint
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
    except ModelLoadError:
        raise
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"Could not load '{repo_id}' from the Hugging Face hub: {exc}. "
            "Check the id (owner/name), or pass a local folder saved with save_pretrained."
        ) from exc


def _from_hub(repo_id: str, *, local_files_only: bool) -> LoadedModel:
    config = AutoConfig.from_pretrained(repo_id, local_files_only=local_files_only, **_SAFE)
    _refuse_remote_code(getattr(config, "auto_map", None), repo_id)
    _check_model_type(config, repo_id)
    model, info = key_priors.model_class_for(config).from_pretrained(
        repo_id, local_files_only=local_files_only, use_safetensors=True, output_loading_info=True, **_SAFE
    )
    _check_loading_info(info, config, repo_id)
    try:
        extractor = ASTFeatureExtractor.from_pretrained(repo_id, local_files_only=local_files_only, **_SAFE)
    except OSError:
        extractor = _default_extractor(config)
    _check_extractor(extractor, config, f"{repo_id}'s preprocessor_config.json")
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


def _refuse_remote_code(auto_map, source: str) -> None:
    """Refuse a model that points at its own Python code, before transformers is asked anything."""
    if auto_map:
        raise ModelLoadError(
            f"{source} asks to run its own Python code (config.json has auto_map {auto_map}); prunekit "
            "never runs code shipped with a model. Use a checkpoint of the stock "
            f"'{AST_MODEL_TYPE}' architecture."
        )


def _check_loading_info(info: dict, config, source: str) -> None:
    """Refuse weights that do not fill the model the config describes (transformers would drop the
    unexpected ones and randomly initialise the missing ones, silently)."""
    report = {
        kind: sorted(map(str, info.get(key) or ()))
        for kind, key in (
            ("missing from the weights", "missing_keys"),
            ("in the weights but not in the model", "unexpected_keys"),
            ("with another shape", "mismatched_keys"),
        )
    }
    problems = [
        f"{len(keys)} keys {kind} ({', '.join(keys[:_SHOWN_KEYS])}{', ...' if len(keys) > _SHOWN_KEYS else ''})"
        for kind, keys in report.items()
        if keys
    ]
    if problems:
        raise ModelLoadError(
            f"The weights in {source} do not match its config.json (num_hidden_layers="
            f"{config.num_hidden_layers}, hidden_size={config.hidden_size}): {'; '.join(problems)}. "
            "Was config.json edited, or copied from another model?"
        )


def _feature_extractor(path: Path, config: ASTConfig) -> ASTFeatureExtractor:
    file = path / "preprocessor_config.json"
    if not file.is_file():
        return _default_extractor(config)
    _read_settings(file, source=str(file))
    try:
        extractor = ASTFeatureExtractor.from_pretrained(path, **_SAFE)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"Could not read the feature extractor settings in {file}: {exc}") from exc
    _check_extractor(extractor, config, str(file))
    return extractor


def _check_extractor(extractor: ASTFeatureExtractor, config: ASTConfig, where: str) -> None:
    """Settings the features are computed with must fit the model: else every clip fails later,
    deep in a forward pass, with a shape error instead of the field at fault."""
    expected = {
        "num_mel_bins": config.num_mel_bins,
        "max_length": config.max_length,
        "sampling_rate": TARGET_SR,
    }
    for field, want in expected.items():
        value = getattr(extractor, field, None)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ModelLoadError(
                f"{where}: {field} is {value!r}; it must be a whole number >= 1 ({want} here)."
            )
        if value != want:
            source = "prunekit reads audio at" if field == "sampling_rate" else "the model's config.json has"
            raise ModelLoadError(f"{where}: {field} is {value}, but {source} {want}.")
    if getattr(extractor, "do_normalize", False):
        for field in ("mean", "std"):
            value = getattr(extractor, field, None)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ModelLoadError(f"{where}: {field} is {value!r}; it must be a finite number.")
        if extractor.std <= 0:
            raise ModelLoadError(
                f"{where}: std is {extractor.std!r}; features are divided by it, so it must be > 0."
            )


def _default_extractor(config: ASTConfig) -> ASTFeatureExtractor:
    # No saved settings: match the model's input shape, keep AST's AudioSet normalisation.
    return ASTFeatureExtractor(num_mel_bins=config.num_mel_bins, max_length=config.max_length)


def _labels(config: ASTConfig) -> list[str]:
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label.get(i, id2label.get(str(i), f"class_{i}"))) for i in range(config.num_labels)]
