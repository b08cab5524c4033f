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

__all__ = [
    "MAX_FILE_BYTES", "MIN_SAMPLES", "SAMPLE_RATES", "TARGET_SR", "duration_seconds", "features",
    "fit_length", "load_waveform", "read_audio", "resample", "to_mono", "window_starts",
]

TARGET_SR = 16_000
MAX_FILE_BYTES = 200 * 1024 * 1024
SAMPLE_RATES = (1_000, 384_000)  # a header outside this range is a broken or hostile file
MIN_SAMPLES = 400  # one 25 ms analysis window at 16 kHz: shorter clips are zero-padded to it

AudioSource = str | os.PathLike | bytes | BinaryIO


def _name(source: AudioSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", None) or "<bytes>"


def read_audio(source: AudioSource, *, name: str | None = None,
               max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode WAV/FLAC/OGG (anything libsndfile reads): float32 (frames, channels) and its rate.

    With ``max_seconds`` only the first ``max_seconds`` are decoded, so a huge or hostile file
    costs no more memory than that (the cut happens before any resampling)."""
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
        with sf.SoundFile(handle) as f:
            sr = int(f.samplerate)
            if not SAMPLE_RATES[0] <= sr <= SAMPLE_RATES[1]:
                raise AudioError(f"{label} says its sample rate is {sr} Hz; prunekit reads "
                                 f"{SAMPLE_RATES[0]:,} to {SAMPLE_RATES[1]:,} Hz.")
            if f.format == "WAV":
                _check_wav_length(handle, label)
            frames = -1 if max_seconds is None else int(max_seconds * sr)
            wave = f.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        if isinstance(exc, AudioError):
            raise
        raise AudioError(f"{label} is not audio prunekit can read (soundfile says: {exc}).") from exc
    if wave.shape[0] == 0:
        raise AudioError(f"{label} has zero length (no audio frames).")
    if not np.isfinite(wave).all():
        raise AudioError(f"{label} contains NaN or infinite samples.")
    return wave, int(sr)


def _check_wav_length(handle: Path | io.BytesIO, label: str) -> None:
    """Refuse a WAV whose data chunk is shorter than its header says (a cut-off download or copy).

    libsndfile quietly shrinks the frame count to what the file holds, so the clip would be
    decoded short and counted as if whole. This walks the RIFF chunks (headers only, seeking past
    the bodies) and compares the data chunk's declared size with the bytes after it. Sizes of 0
    or 0xFFFFFFFF mean "unknown" (a streamed or RF64 file) and are not checked. Independent of
    ``max_seconds``: reading only the start of a whole file is not truncation."""
    stream = open(handle, "rb") if isinstance(handle, Path) else handle
    start = stream.tell()
    try:
        stream.seek(0, io.SEEK_END)
        size = stream.tell()
        stream.seek(0)
        if stream.read(12)[8:12] != b"WAVE":
            return
        block_align = 0
        while True:
            header = stream.read(8)
            if len(header) < 8:
                return
            chunk, length = header[:4], int.from_bytes(header[4:], "little")
            if chunk == b"fmt ":
                block_align = int.from_bytes(stream.read(14)[12:14], "little")
                stream.seek(length - 14 + (length & 1), io.SEEK_CUR)
            elif chunk == b"data":
                if length in (0, 0xFFFFFFFF) or block_align == 0:
                    return
                held = size - stream.tell()
                if held < length:
                    raise AudioError(f"{label} is cut short: its header says {length // block_align:,} frames, "
                                     f"the file holds {held // block_align:,} (a truncated download or copy?).")
                return
            else:
                stream.seek(length + (length & 1), io.SEEK_CUR)
    finally:
        if stream is handle:
            stream.seek(start)
        else:
            stream.close()


def to_mono(wave: np.ndarray) -> np.ndarray:
    """(frames, channels) or (frames,) -> (frames,), the mean of the channels."""
    return wave if wave.ndim == 1 else wave.mean(axis=1, dtype=np.float32)


def resample(wave: np.ndarray, orig_sr: int, target_sr: int = TARGET_SR) -> np.ndarray:
    """Band-limited resampling with torchaudio; (T,) -> (T * target / orig,)."""
    if orig_sr == target_sr:
        return wave.astype(np.float32, copy=False)
    import torchaudio.functional as taf

    return taf.resample(torch.from_numpy(np.ascontiguousarray(wave, np.float32)), orig_sr, target_sr).numpy()


def load_waveform(source: AudioSource, *, name: str | None = None, target_sr: int = TARGET_SR,
                  max_seconds: float | None = None) -> np.ndarray:
    """Read (at most ``max_seconds``), mix to mono and resample: float32 (T,) at ``target_sr``."""
    wave, sr = read_audio(source, name=name, max_seconds=max_seconds)
    return resample(to_mono(wave), sr, target_sr)


def duration_seconds(source: AudioSource, *, name: str | None = None) -> float:
    """Length of an audio file in seconds, from its header (nothing is decoded)."""
    label = _name(source, name)
    handle = source if isinstance(source, (str, os.PathLike)) else io.BytesIO(
        source if isinstance(source, bytes) else source.read())
    try:
        info = sf.info(handle)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(f"{label} is not audio prunekit can read (soundfile says: {exc}).") from exc
    return info.frames / info.samplerate if info.samplerate else 0.0


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


def features(waves: Sequence[np.ndarray], feature_extractor, *, sampling_rate: int = TARGET_SR) -> torch.Tensor:
    """AST log-mel features: (B, max_length, num_mel_bins). A wave shorter than one analysis
    window (25 ms) is zero-padded to it first: the extractor pads short clips anyway, but its
    filterbank cannot start on less than one window."""
    batch = [fit_length(np.asarray(w, dtype=np.float32), max(len(w), MIN_SAMPLES)) for w in waves]
    return feature_extractor(batch, sampling_rate=sampling_rate, return_tensors="pt")["input_values"]
