"""A synthetic tagging set: clips in which one to three spoken words and one background sound
occur, each a label (multi-label, as in AudioSet), generated offline with espeak-ng.

It shares the speech set's machinery (``synth``): the same espeak-ng voices, the same voice
split (validation and test voices are never heard in training, and they are the speech set's
held-out voices), the same noise colours. A clip of ``clip_seconds`` is cut into as many equal
slots as it has words; each word, spoken by the clip's voice with its own rate, pitch and
intonation, lands somewhere in its slot, over one of four backgrounds (white, pink or brown
noise, or a mains hum) at a random speech-to-background ratio. The set is written as a CSV
manifest (``tags.csv``: ``file, labels, split``, labels comma-separated) beside ``audio/``, which
``manifest.read_manifest`` reads like any tagging manifest. Same seed, same bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from prunekit.data import synth
from prunekit.data.clips import SPLITS
from prunekit.errors import ConfigurationError, OutputExistsError

__all__ = ["BACKGROUNDS", "FORMAT_VERSION", "MANIFEST", "TAG_WORDS", "TaggingConfig", "generate", "tags"]

FORMAT_VERSION = 1
MANIFEST = "tags.csv"
# Ten of the speech set's words: short, common, easy to tell apart.
TAG_WORDS = ("down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes")
# A background's label and the noise it is drawn from (synth's noise colours).
BACKGROUNDS = {
    "white-noise": "white_noise.wav",
    "pink-noise": "pink_noise.wav",
    "brown-noise": "brown_noise.wav",
    "mains-hum": "mains_hum.wav",
}
_BATCH = 64  # clips whose words are resampled together


@dataclass(frozen=True)
class TaggingConfig:
    """Everything a generation depends on; saved in ``tagging.json`` next to the data."""

    seed: int = 0
    clips_per_voice: int = 24  # 192 voices: 4,608 clips (3,696 train, 456 validation, 456 test)
    clip_seconds: float = 2.0
    max_words: int = 3  # each clip has 1 to max_words different words
    words: tuple[str, ...] = TAG_WORDS
    snr_db: tuple[float, float] = (0.0, 20.0)  # speech over background: the background must be heard too
    rate_wpm: tuple[int, int] = (140, 220)
    pitch: tuple[int, int] = (35, 65)
    intonation: tuple[int, int] = (30, 80)
    word_gain_db: tuple[float, float] = (-6.0, 0.0)  # each word's level, relative to the loudest
    gain_db: tuple[float, float] = (-15.0, 0.0)  # the clip's level
    sample_rate: int = 16000
    val_fraction: float = 0.1  # of the voices (the speech set's split)
    test_fraction: float = 0.1
    accents: tuple[str, ...] = synth.ACCENTS
    variants: tuple[str, ...] = synth.VARIANTS

    def speech(self) -> synth.SynthConfig:
        """The speech set's configuration with these voices, seed and voice split."""
        return synth.SynthConfig(
            seed=self.seed,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            accents=self.accents,
            variants=self.variants,
            words=self.words,
            rate_wpm=self.rate_wpm,
            pitch=self.pitch,
            intonation=self.intonation,
        )

    def validate(self) -> None:
        """Raise ConfigurationError naming the first bad value."""
        self.speech().validate()  # voices, words, ranges
        if not (isinstance(self.clips_per_voice, int) and self.clips_per_voice >= 1):
            raise ConfigurationError(
                f"clips_per_voice must be a whole number >= 1, got {self.clips_per_voice!r}"
            )
        if not 1 <= self.max_words <= len(self.words):
            raise ConfigurationError(
                f"max_words must be between 1 and the {len(self.words)} words, got {self.max_words!r}"
            )
        if self.clip_seconds < 0.5 * self.max_words:
            raise ConfigurationError(
                f"clip_seconds {self.clip_seconds!r} leaves under 0.5 s per word for {self.max_words} words"
            )
        if self.sample_rate < 8000:
            raise ConfigurationError(f"Need sample_rate >= 8000, got {self.sample_rate!r}")


def tags(config: TaggingConfig = TaggingConfig()) -> tuple[str, ...]:
    """Every label of the set, sorted: the words and the backgrounds (a tagger's classes)."""
    return tuple(sorted((*config.words, *BACKGROUNDS)))


@dataclass(frozen=True)
class _Word:
    word: str
    rate: int
    pitch: int
    intonation: int
    offset_u: float  # where in its slot the word starts, in [0, 1)
    gain_db: float
    espeak_seed: int


@dataclass(frozen=True)
class _TagClip:
    voice: str
    index: int
    split: str
    words: tuple[_Word, ...]
    background: str
    noise_u: float
    snr_db: float
    gain_db: float

    @property
    def path(self) -> str:
        return f"audio/{synth.speaker_id(self.voice)}_{self.index:03d}.wav"

    @property
    def labels(self) -> tuple[str, ...]:
        return (*(w.word for w in self.words), self.background)


def _plan(config: TaggingConfig) -> list[_TagClip]:
    """Every clip's parameters; each clip has its own RNG, so none depends on the others."""
    split_of = {v: s for s, voices in synth.split_voices(config.speech()).items() for v in voices}
    clips = []
    for voice in config.speech().voices:
        for index in range(config.clips_per_voice):
            rng = np.random.default_rng([config.seed, 0x7A6, int(synth.speaker_id(voice), 16), index])
            count = int(rng.integers(1, config.max_words, endpoint=True))
            chosen = rng.choice(len(config.words), count, replace=False)
            words = tuple(
                _Word(
                    config.words[k],
                    int(rng.integers(*config.rate_wpm, endpoint=True)),
                    int(rng.integers(*config.pitch, endpoint=True)),
                    int(rng.integers(*config.intonation, endpoint=True)),
                    float(rng.random()),
                    float(rng.uniform(*config.word_gain_db)),
                    int(rng.integers(2**31)),
                )
                for k in chosen
            )
            backgrounds = list(BACKGROUNDS)
            clips.append(
                _TagClip(
                    voice,
                    index,
                    split_of[voice],
                    words,
                    backgrounds[int(rng.integers(len(backgrounds)))],
                    float(rng.random()),
                    float(rng.uniform(*config.snr_db)),
                    float(rng.uniform(*config.gain_db)),
                )
            )
    return clips


def _compose(
    clip: _TagClip, speech: list[np.ndarray], noises: dict[str, np.ndarray], config: TaggingConfig
) -> np.ndarray:
    """The clip's samples: each word (16 kHz float) in its slot, over the background."""
    n_out = round(config.sample_rate * config.clip_seconds)
    slot = n_out // len(clip.words)
    placed = np.zeros(n_out)
    for k, (word, wave) in enumerate(zip(clip.words, speech)):
        wave = wave[:slot] * (0.5 / max(np.abs(wave).max(), 1e-9)) * 10 ** (word.gain_db / 20)
        start = k * slot + int(word.offset_u * (slot - len(wave) + 1))
        placed[start : start + len(wave)] += wave
    noise = noises[clip.background]
    offset = int(clip.noise_u * (noise.size - n_out + 1))
    segment = noise[offset : offset + n_out]
    spoken = placed[placed != 0]
    scale = np.sqrt(np.mean(spoken**2) / np.mean(segment**2)) * 10 ** (-clip.snr_db / 20)
    return (placed + scale * segment) * 10 ** (clip.gain_db / 20)


def _render(
    tmp: Path, clips: list[_TagClip], config: TaggingConfig, progress: Callable[[int, int], None] | None
) -> str:
    """Write every clip into ``tmp/audio``; return espeak-ng's version."""
    import torch  # here, not at the top: importing this module stays cheap
    import torchaudio

    (tmp / "audio").mkdir()
    noises = {
        label: synth._noise(
            kind, 30 * config.sample_rate, config.sample_rate, np.random.default_rng([config.seed, 0xB1, k])
        )
        for k, (label, kind) in enumerate(BACKGROUNDS.items())
    }
    jobs = [(c.voice, w.word, w.rate, w.pitch, w.intonation, w.espeak_seed) for c in clips for w in c.words]
    slot_seconds = config.clip_seconds / config.max_words  # every word fits the narrowest slot
    espeak = synth._EspeakProcess(jobs, int(0.9 * slot_seconds * synth.ESPEAK_RATE))
    with contextlib.closing(espeak):
        for start in range(0, len(clips), _BATCH):
            batch = clips[start : start + _BATCH]
            waves = [espeak.read()[0] for c in batch for _ in c.words]  # int16 at 22050 Hz
            padded = np.zeros((len(waves), max(len(w) for w in waves)), np.float32)
            for row, wave in zip(padded, waves):
                row[: len(wave)] = wave / 32768.0
            resampled = torchaudio.functional.resample(
                torch.from_numpy(padded), synth.ESPEAK_RATE, config.sample_rate
            ).numpy()
            speech = [
                row[: -(-len(w) * config.sample_rate // synth.ESPEAK_RATE)].astype(np.float64)
                for row, w in zip(resampled, waves)
            ]
            for clip in batch:
                mine, speech = speech[: len(clip.words)], speech[len(clip.words) :]
                wave = _compose(clip, mine, noises, config)
                sf.write(tmp / clip.path, synth._to_int16(wave), config.sample_rate, subtype="PCM_16")
            if progress is not None:
                progress(start + len(batch), len(clips))
    return espeak.version


def generate(
    root: Path, config: TaggingConfig = TaggingConfig(), progress: Callable[[int, int], None] | None = None
) -> Path:
    """Write the tagging set to ``root`` (which must not exist or be empty) and return ``root``.
    Built in a hidden sibling folder and renamed at the end, like ``synth.generate`` (whose
    ``remove_stale_partials`` also clears this one's leftovers)."""
    root = Path(root).expanduser()
    config.validate()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise OutputExistsError(f"{root} already exists and is not an empty folder.")
    clips = _plan(config)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}{synth._PARTIAL}{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        version = _render(tmp, clips, config, progress)
        rows = "".join(f'{c.path},"{",".join(c.labels)}",{c.split}\n' for c in clips)
        (tmp / MANIFEST).write_text("file,labels,split\n" + rows)
        counts = {s: sum(c.split == s for c in clips) for s in SPLITS}
        summary = {
            "format_version": FORMAT_VERSION,
            "generator": "prunekit.data.tagging",
            "espeak_ng": version,
            "config": asdict(config),
            "tags": list(tags(config)),
            "clips": counts | {"total": len(clips)},
            "words_per_clip": {
                str(n): sum(len(c.words) == n for c in clips) for n in range(1, config.max_words + 1)
            },
        }
        (tmp / "tagging.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
