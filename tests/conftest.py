"""Shared fixtures: tiny AST models (transformers' own tester sizes) and tiny datasets on disk.

No test touches the network: HF_HUB_OFFLINE is set for the whole session, and the cache
folder is a temporary one unless a test asks for the real cache (``real_cache``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

REPO = Path(__file__).resolve().parent.parent
TINY_LABELS = ["down", "go", "up"]


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("prunekit-cache")
    os.environ["PRUNEKIT_CACHE"] = str(path)
    torch.set_num_threads(2)
    yield path


@pytest.fixture
def real_cache(monkeypatch):
    """Use the checkout's cache/ (the demo dataset is generated there once and reused)."""
    monkeypatch.setenv("PRUNEKIT_CACHE", str(REPO / "cache"))
    return REPO / "cache"


def _tiny_config(num_labels: int = len(TINY_LABELS), **overrides) -> ASTConfig:
    values = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 37,
        "num_mel_bins": 16,
        "max_length": 24,
        "num_labels": num_labels,
        "id2label": dict(enumerate(TINY_LABELS[:num_labels])),
        "label2id": {n: i for i, n in enumerate(TINY_LABELS[:num_labels])},
    }
    values.update(overrides)
    return ASTConfig(**values)


@pytest.fixture
def tiny_config():
    """``tiny_config(**overrides)``: the tiny AST's configuration with some fields changed."""
    return _tiny_config


@pytest.fixture
def write_tone():
    """``write_tone(path, freq, sr=16000, seconds=0.25, seed=0)``: a real 16-bit WAV of a noisy tone."""
    return _write_tone


@pytest.fixture
def run_cli():
    """``run_cli(*args, cache=None)``: ``python -m prunekit ARGS`` in a subprocess, offline, as a
    user runs it; returns the CompletedProcess (stdout, stderr, returncode)."""

    def run(*args, cache=None):
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        if cache is not None:
            env["PRUNEKIT_CACHE"] = str(cache)
        return subprocess.run(
            [sys.executable, "-m", "prunekit", *map(str, args)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    return run


@pytest.fixture
def run_main(monkeypatch, capsys):
    """``run_main(*args, cache=None)``: like ``run_cli`` but in-process (``prunekit.cli.main``, the
    code ``python -m prunekit`` runs, without starting an interpreter); same CompletedProcess."""

    def run(*args, cache=None):
        from prunekit.cli import main

        if cache is not None:
            monkeypatch.setenv("PRUNEKIT_CACHE", str(cache))
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse refusing an option
            code = exc.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out.out, out.err)

    return run


@pytest.fixture
def tiny_model() -> ASTForAudioClassification:
    torch.manual_seed(0)
    return ASTForAudioClassification(_tiny_config()).eval()


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_model) -> Path:
    out = tmp_path / "tiny-model"
    tiny_model.save_pretrained(out)
    ASTFeatureExtractor(num_mel_bins=16, max_length=24).save_pretrained(out)
    return out


def _write_tone(path: Path, freq: float, *, sr: int = 16000, seconds: float = 0.25, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    wave = 0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), sr, subtype="PCM_16")
    return path


@pytest.fixture
def tiny_speech_commands(tmp_path) -> Path:
    """A Speech Commands v2 layout: 3 labels x 4 speakers, speaker 2 in validation, 3 in test."""
    root = tmp_path / "sc"
    val, test = [], []
    for k, label in enumerate(TINY_LABELS):
        for spk in range(4):
            name = f"{spk:08x}_nohash_0.wav"
            _write_tone(root / label / name, 300 + 400 * k + 10 * spk, seed=spk)
            if spk == 2:
                val.append(f"{label}/{name}")
            if spk == 3:
                test.append(f"{label}/{name}")
    _write_tone(root / "_background_noise_" / "white_noise.wav", 50, seconds=1.0)
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory) -> dict[str, Path]:
    """The bad-input corpus of issue 12 (tests/data/make_bad_inputs.py), written once per session."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_bad_inputs", REPO / "tests" / "data" / "make_bad_inputs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make(tmp_path_factory.mktemp("bad-inputs") / "bad")
