"""Spectrogram features for the clips of a dataset split, cached on disk.

Features depend only on the audio files and the feature-extractor settings, so they are keyed
by both and reused across runs (a training run, an evaluation and the app share them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from safetensors.torch import load_file, save
from transformers import ASTFeatureExtractor

from prunekit.data import audio
from prunekit.data.clips import Clip
from prunekit.progress import Progress
from prunekit.store import atomic_write_bytes, cache_dir, content_key

__all__ = ["clip_features", "clips_key", "compute_features", "extractor_settings"]


def extractor_settings(extractor: ASTFeatureExtractor) -> dict:
    """The settings that change the features (what the cache key is made of)."""
    keys = ("num_mel_bins", "max_length", "sampling_rate", "do_normalize", "mean", "std")
    return {k: getattr(extractor, k, None) for k in keys}


def compute_features(
    clips: Sequence[Clip],
    extractor: ASTFeatureExtractor,
    *,
    progress: Progress | None = None,
    batch: int = 64,
) -> torch.Tensor:
    """Read, mono-mix, resample and featurise ``clips``: (N, frames, mels) float32."""
    out = []
    for start in range(0, len(clips), batch):
        chunk = clips[start : start + batch]
        waves = [audio.load_waveform(c.path) for c in chunk]
        out.append(audio.features(waves, extractor))
        if progress:
            progress(min(start + batch, len(clips)), len(clips))
    return torch.cat(out) if out else torch.empty(0, extractor.max_length, extractor.num_mel_bins)


def clips_key(clips: Sequence[Clip], extractor: ASTFeatureExtractor) -> str:
    """What identifies the features of ``clips``: each file's path, size and modification time,
    and the extractor settings (a changed file or setting is another key)."""
    stamps = []
    for c in clips:
        stat = c.path.stat()
        stamps.append((str(c.path.resolve()), stat.st_size, stat.st_mtime_ns))
    return content_key(stamps, extractor_settings(extractor))


def clip_features(
    clips: Sequence[Clip],
    extractor: ASTFeatureExtractor,
    *,
    progress: Progress | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Like ``compute_features`` but served from ``cache/features`` when the same files (path,
    size, modification time) were featurised with the same settings before."""
    if not use_cache:
        return compute_features(clips, extractor, progress=progress)
    path = cache_dir() / "features" / f"{clips_key(clips, extractor)}.safetensors"
    if path.is_file():
        try:
            cached = load_file(path)["features"]
            if cached.shape[0] == len(clips):
                if progress:
                    progress(len(clips), len(clips))
                return cached
        except Exception:  # a corrupt or partial cache file is recomputed, never trusted
            pass
    feats = compute_features(clips, extractor, progress=progress)
    atomic_write_bytes(path, save({"features": feats.contiguous()}))
    return feats
