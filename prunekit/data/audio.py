"""Read audio files into 16 kHz mono float32 waveforms, and turn waveforms into AST features.

Every bad input raises ``AudioError`` naming the file and the problem. Silence is valid.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import torch

from prunekit.errors import AudioError, ConfigurationError

TARGET_SR = 16_000
MAX_FILE_BYTES = 200 * 1024 * 1024

AudioSource = str | os.PathLike | bytes | BinaryIO


def _name(source: AudioSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", None) or "<bytes>"


def read_audio(source: AudioSource, *, name: str | None = None) -> tuple[np.ndarray, int]:
    """Decode WAV/FLAC/OGG (anything libsndfile reads): float32 (frames, channels) and its rate."""
    label = _name(source, name)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise AudioError(f"{label}: no such file.")
        size = path.stat().st_size
        handle: AudioSource = path
    else:
        data = source if isinstance(source, bytes) else source.read()
        size = len(data)
        handle = io.BytesIO(data)
    if size == 0:
        raise AudioError(f"{label} is empty (0 bytes).")
    if size > MAX_FILE_BYTES:
        raise AudioError(f"{label} is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES / 2**20:.0f} MB.")
    try:
        wave, sr = sf.read(handle, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(f"{label} is not audio prunekit can read (soundfile says: {exc}).") from exc
    if wave.shape[0] == 0:
        raise AudioError(f"{label} has zero length (no audio frames).")
    if not np.isfinite(wave).all():
        raise AudioError(f"{label} contains NaN or infinite samples.")
    return wave, int(sr)


def to_mono(wave: np.ndarray) -> np.ndarray:
    """(frames, channels) or (frames,) -> (frames,), the mean of the channels."""
    return wave if wave.ndim == 1 else wave.mean(axis=1, dtype=np.float32)


def resample(wave: np.ndarray, orig_sr: int, target_sr: int = TARGET_SR) -> np.ndarray:
    """Band-limited resampling with torchaudio; (T,) -> (T * target / orig,)."""
    if orig_sr == target_sr:
        return wave.astype(np.float32, copy=False)
    import torchaudio.functional as taf

    return taf.resample(torch.from_numpy(np.ascontiguousarray(wave, np.float32)), orig_sr, target_sr).numpy()


def load_waveform(source: AudioSource, *, name: str | None = None, target_sr: int = TARGET_SR) -> np.ndarray:
    """Read, mix to mono and resample: float32 (T,) at ``target_sr``."""
    wave, sr = read_audio(source, name=name)
    return resample(to_mono(wave), sr, target_sr)


def fit_length(wave: np.ndarray, n_samples: int) -> np.ndarray:
    """Zero-pad at the end or trim to exactly ``n_samples``."""
    if len(wave) >= n_samples:
        return wave[:n_samples]
    return np.pad(wave, (0, n_samples - len(wave)))


def window_starts(n_samples: int, window: int, hop: int) -> range:
    """Start samples of windows of ``window`` every ``hop`` samples covering ``n_samples``."""
    if window <= 0 or hop <= 0:
        raise ConfigurationError(f"window and hop must be positive, got {window=}, {hop=}.")
    return range(0, max(n_samples - window, 0) + hop, hop) if n_samples > window else range(1)


def sliding_windows(wave: np.ndarray, window: int, hop: int) -> np.ndarray:
    """(n_windows, window) views of ``wave`` every ``hop`` samples; the last one zero-padded."""
    return np.stack([fit_length(wave[s : s + window], window) for s in window_starts(len(wave), window, hop)])


def features(waves: Sequence[np.ndarray], feature_extractor, *, sampling_rate: int = TARGET_SR) -> torch.Tensor:
    """AST log-mel features: (B, max_length, num_mel_bins)."""
    batch = [np.asarray(w, dtype=np.float32) for w in waves]
    return feature_extractor(batch, sampling_rate=sampling_rate, return_tensors="pt")["input_values"]


def fbank_backend() -> str:
    """"torchaudio" when transformers' ASTFeatureExtractor uses torchaudio's Kaldi fbank."""
    from transformers.models.audio_spectrogram_transformer import (
        feature_extraction_audio_spectrogram_transformer as fe,
    )

    return "torchaudio" if fe.is_speech_available() else "numpy"
