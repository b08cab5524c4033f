"""A synthetic Speech Commands v2: the 35 words spoken by espeak-ng voices, in the real layout.

``<root>/<word>/<speaker>_nohash_<take>.wav`` (mono PCM_16, exactly ``clip_seconds`` long),
``validation_list.txt``, ``testing_list.txt``, ``_background_noise_/*.wav``, ``synthetic.json``.
A voice (``<accent>+<variant>``) is a speaker; splits are by voice. Two generations with the same
config (seed included) are byte-identical.

libespeak-ng keeps hidden state across utterances (pitch-flutter phase, gain control, filter
memory), so each generation runs it in a fresh interpreter that replays a fixed call sequence.
A trimmed word longer than 90% of the window is re-synthesised at a faster espeak rate (pitch
unchanged); only if 450 wpm still does not fit is its tail cropped (counted in synthetic.json).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import itertools
import json
import os
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import NamedTuple

import espeakng_loader
import numpy as np
import soundfile as sf

from prunekit.data.clips import SPLITS
from prunekit.errors import ConfigurationError, OutputExistsError
from prunekit.store import process_alive

__all__ = [
    "ACCENTS",
    "ESPEAK_RATE",
    "FORMAT_VERSION",
    "NOISE_FILES",
    "VARIANTS",
    "WORDS",
    "SynthConfig",
    "generate",
    "remove_stale_partials",
    "speaker_id",
    "split_voices",
]

FORMAT_VERSION = 1
ESPEAK_RATE = 22050  # what espeak_Initialize returns in synchronous mode
WORDS: tuple[str, ...] = tuple(
    sorted(
        [
            "backward",
            "bed",
            "bird",
            "cat",
            "dog",
            "down",
            "eight",
            "five",
            "follow",
            "forward",
            "four",
            "go",
            "happy",
            "house",
            "learn",
            "left",
            "marvin",
            "nine",
            "no",
            "off",
            "on",
            "one",
            "right",
            "seven",
            "sheila",
            "six",
            "stop",
            "three",
            "tree",
            "two",
            "up",
            "visual",
            "wow",
            "yes",
            "zero",
        ]
    )
)
# en-shaw is left out: for Latin text it produces the same samples as en (a duplicate speaker).
ACCENTS = (
    "en",
    "en-029",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-gb-x-rp",
    "en-us",
    "en-us-nyc",
)
# 13 male (two with the Klatt source), 11 female; each passed a nearest-neighbour word test across voices.
VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "croak",
    "max",
    "paul",
    "klatt",
    "klatt4",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "aunty",
    "linda",
    "belinda",
    "Annie",
    "grandma",
    "steph",
)
NOISE_FILES = ("white_noise.wav", "pink_noise.wav", "brown_noise.wav", "mains_hum.wav")
_LISTS = {"validation": "validation_list.txt", "test": "testing_list.txt"}
_FIT = 0.9  # a trimmed word may fill at most this fraction of the window
_BATCH = 64
_LOCK = threading.Lock()  # libespeak-ng is global state: every call into it holds this


@dataclass(frozen=True)
class SynthConfig:
    """Everything a generation depends on; saved in ``synthetic.json`` next to the data."""

    seed: int = 0
    # clips per (voice, word); each take draws its own rate, pitch, noise... Two, not one: with one
    # take (6,720 clips) the demo model reached 88 % on held-out voices, short of its 90 % target.
    takes: int = 2
    val_fraction: float = 0.1  # of the voices
    test_fraction: float = 0.1
    sample_rate: int = 16000
    clip_seconds: float = 1.0
    snr_db: tuple[float, float] = (5.0, 30.0)  # speech over background noise
    rate_wpm: tuple[int, int] = (140, 220)  # espeak speaking rate
    pitch: tuple[int, int] = (35, 65)  # espeak pitch, 0-99 (50 is the voice's own)
    intonation: tuple[int, int] = (30, 80)  # espeak pitch range, 0-99
    gain_db: tuple[float, float] = (-15.0, 0.0)  # relative to a speech peak of -6 dBFS
    accents: tuple[str, ...] = ACCENTS
    variants: tuple[str, ...] = VARIANTS
    words: tuple[str, ...] = WORDS

    @property
    def voices(self) -> tuple[str, ...]:
        return tuple(sorted(f"{a}+{v}" for a in self.accents for v in self.variants))

    def validate(self) -> None:
        """Raise ConfigurationError naming the first bad value."""
        if not (
            isinstance(self.seed, int) and self.seed >= 0 and isinstance(self.takes, int) and self.takes >= 1
        ):
            raise ConfigurationError(
                f"Need an int seed >= 0 and takes >= 1, got {self.seed=}, {self.takes=}."
            )
        if not (
            0 <= self.val_fraction < 1
            and 0 <= self.test_fraction < 1
            and self.val_fraction + self.test_fraction < 1
        ):
            raise ConfigurationError(
                f"val_fraction and test_fraction must be in [0, 1) and sum below 1, got "
                f"{self.val_fraction!r} and {self.test_fraction!r}."
            )
        if self.sample_rate < 8000 or self.clip_seconds <= 0:
            raise ConfigurationError(
                f"Need sample_rate >= 8000 and clip_seconds > 0, got "
                f"{self.sample_rate!r} and {self.clip_seconds!r}."
            )
        for name, low, high in (
            ("rate_wpm", 80, 450),
            ("pitch", 0, 99),
            ("intonation", 0, 99),
            ("snr_db", -20, 100),
            ("gain_db", -60, 6),
        ):
            if not low <= getattr(self, name)[0] <= getattr(self, name)[1] <= high:
                raise ConfigurationError(
                    f"{name} must be (lo, hi) with {low} <= lo <= hi <= {high}, got {getattr(self, name)!r}."
                )
        for name in ("accents", "variants", "words"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise ConfigurationError(f"{name} must be non-empty and unique, got {values!r}.")
        known_accents, known_variants = _espeak_names()  # espeak itself ignores an unknown variant
        unknown = [f"accent {a!r}" for a in self.accents if a.lower() not in known_accents]
        unknown += [f"variant {v!r}" for v in self.variants if v not in known_variants]
        if unknown:
            raise ConfigurationError(f"Unknown espeak-ng {', '.join(unknown)}.")
        bad_words = [w for w in self.words if not (w.isascii() and w.isalpha() and w.islower())]
        if bad_words:
            raise ConfigurationError(f"Words must be lowercase letters (they name folders), got {bad_words}.")
        if {"en", "en-shaw"} <= {a.lower() for a in self.accents}:
            raise ConfigurationError("Accents 'en' and 'en-shaw' speak Latin text identically; keep one.")


@cache
def _espeak_names() -> tuple[frozenset[str], frozenset[str]]:
    """Accent ids (lowercased file names under lang/) and variant file names in espeak's data."""
    data = Path(espeakng_loader.get_data_path())
    accents = frozenset(p.name.lower() for p in (data / "lang").rglob("*") if p.is_file())
    return accents, frozenset(p.name for p in (data / "voices" / "!v").iterdir())


def speaker_id(voice: str) -> str:
    """The 8-hex-digit speaker id of a voice, as in Speech Commands file names."""
    return hashlib.sha1(voice.encode()).hexdigest()[:8]


def split_voices(config: SynthConfig) -> dict[str, tuple[str, ...]]:
    """Voices per split, shuffled by the seed; a positive fraction gets at least one voice."""
    voices = list(config.voices)
    if len({speaker_id(v) for v in voices}) != len(voices):
        raise ConfigurationError(f"Two voices share a speaker id in {voices}.")
    order = np.random.default_rng([config.seed, 0x5EED]).permutation(len(voices))
    n_val, n_test = (
        max(1, round(f * len(voices))) if f > 0 else 0 for f in (config.val_fraction, config.test_fraction)
    )
    if n_val + n_test >= len(voices):
        raise ConfigurationError(
            f"{len(voices)} voices cannot give {n_val} validation and {n_test} test voices "
            f"and still leave one for training; add accents or variants."
        )
    shuffled = [voices[i] for i in order]
    parts = {
        "validation": shuffled[:n_val],
        "test": shuffled[n_val : n_val + n_test],
        "train": shuffled[n_val + n_test :],
    }
    return {split: tuple(sorted(parts[split])) for split in SPLITS}


class _Clip(NamedTuple):
    """One clip's parameters; ``*_u`` are in [0, 1): where the word and the noise segment start."""

    voice: str
    word: str
    take: int
    split: str
    rate: int
    pitch: int
    intonation: int
    offset_u: float
    gain_db: float
    noise: int
    noise_u: float
    snr_db: float
    espeak_seed: int

    @property
    def path(self) -> str:
        return f"{self.word}/{speaker_id(self.voice)}_nohash_{self.take}.wav"


def _plan(config: SynthConfig, splits: dict[str, tuple[str, ...]]) -> list[_Clip]:
    """Every clip's parameters; each clip has its own RNG so they do not depend on the order."""
    split_of = {v: s for s, voices in splits.items() for v in voices}
    clips = []
    for voice, word, take in itertools.product(config.voices, config.words, range(config.takes)):
        names = (int(speaker_id(name), 16) for name in (voice, word))  # stable ints from the names
        rng = np.random.default_rng([config.seed, *names, take])
        rate, pitch, intonation = (
            int(rng.integers(*r, endpoint=True)) for r in (config.rate_wpm, config.pitch, config.intonation)
        )
        clips.append(
            _Clip(
                voice,
                word,
                take,
                split_of[voice],
                rate,
                pitch,
                intonation,
                float(rng.random()),
                float(rng.uniform(*config.gain_db)),
                int(rng.integers(len(NOISE_FILES))),
                float(rng.random()),
                float(rng.uniform(*config.snr_db)),
                int(rng.integers(2**31)),
            )
        )
    return clips


class _Espeak:
    """libespeak-ng from the espeakng-loader wheel, through ctypes, in synchronous mode."""

    _CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self) -> None:
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.lib.espeak_Info.restype = ctypes.c_char_p
        self._callback = self._CALLBACK(self._collect)  # keep a reference: the library holds a raw pointer
        with _LOCK:
            rate = self.lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)
            if rate != ESPEAK_RATE:
                raise RuntimeError(f"espeak_Initialize returned {rate}, expected {ESPEAK_RATE} Hz.")
            self.lib.espeak_SetSynthCallback(self._callback)
            self.version = self.lib.espeak_Info(None).decode()

    def _collect(self, wav, n: int, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0: go on

    def say(self, text: str, voice: str, rate: int, pitch: int, intonation: int, seed: int) -> np.ndarray:
        """(T,) int16 at 22050 Hz. ``seed`` drives the breath noise of some variants (f2, f3, f5)."""
        with _LOCK:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ConfigurationError(f"espeak-ng does not know the voice {voice!r}.")
            for parameter, value in ((1, rate), (3, pitch), (4, intonation)):  # espeakRATE, PITCH, RANGE
                self.lib.espeak_SetParameter(parameter, value, 0)
            self._chunks = []
            self.lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))  # breath noise uses libc rand()
            data = text.encode()
            self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 1, None, None)  # POS_CHARACTER, CHARS_UTF8
            self.lib.espeak_Synchronize()
            return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def _trim(wave: np.ndarray, frame: int = 220, floor_db: float = -40.0, margin: int = 2) -> np.ndarray:
    """Drop leading/trailing 10 ms frames more than 40 dB below the loudest, keeping 20 ms margins."""
    n = len(wave) // frame
    rms = np.sqrt((wave[: n * frame].astype(np.float64).reshape(n, frame) ** 2).mean(1))
    active = np.flatnonzero(rms > rms.max(initial=0) * 10 ** (floor_db / 20))
    if active.size == 0:
        return wave[:0]
    return wave[max(active[0] - margin, 0) * frame : min(active[-1] + 1 + margin, n) * frame]


def _serve() -> None:
    """The child process: read jobs as JSON on stdin, write (length, rate, int16 samples) frames."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything the C library prints goes to stderr, not into the frames
    request = json.load(sys.stdin)
    engine = _Espeak()
    version = engine.version.encode()
    out.write(struct.pack("<i", len(version)) + version)
    limit = request["max_samples"]
    for voice, word, rate, pitch, intonation, seed in request["jobs"]:
        wave = _trim(engine.say(word, voice, rate, pitch, intonation, seed))
        while len(wave) > limit and rate < 450:  # too long for the window: speak faster
            rate = min(450, int(np.ceil(rate * len(wave) / limit * 1.05)))
            wave = _trim(engine.say(word, voice, rate, pitch, intonation, seed))
        out.write(struct.pack("<ii", len(wave), rate) + wave.astype("<i2").tobytes())
    out.flush()


class _EspeakProcess:
    """A fresh interpreter running ``_serve``; ``read()`` returns one (samples, rate) per job."""

    def __init__(self, jobs: list[tuple], max_samples: int) -> None:
        path = [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)))
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close()); a file, not a pipe: a chatty child cannot block
        command = [sys.executable, "-c", "from prunekit.data.synth import _serve; _serve()"]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env
        )
        with contextlib.suppress(BrokenPipeError):  # a child that died is reported by the first read
            self.proc.stdin.write(json.dumps({"max_samples": max_samples, "jobs": jobs}).encode())
            self.proc.stdin.close()
        self.version = self._read(struct.unpack("<i", self._read(4))[0]).decode()

    def _read(self, n: int) -> bytes:
        data = self.proc.stdout.read(n)
        if len(data) != n:
            self.proc.wait()
            self._stderr.seek(0)
            raise RuntimeError(
                f"The espeak-ng process failed (exit {self.proc.returncode}): "
                f"{self._stderr.read().decode(errors='replace')[-2000:]}"
            )
        return data

    def read(self) -> tuple[np.ndarray, int]:
        n, rate = struct.unpack("<ii", self._read(8))
        return np.frombuffer(self._read(2 * n), "<i2"), rate

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self._stderr.close()


def _noise(kind: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) float noise at RMS 0.1: white, pink (1/f power), brown (1/f^2) or a mains hum."""
    freqs = np.fft.rfftfreq(n, 1 / sr)
    if kind == "mains_hum.wav":
        t = np.arange(n) / sr
        f0 = rng.choice([50.0, 60.0])
        wave = sum(
            np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k ** (1.5 - 0.7 * (k % 2))
            for k in range(1, 12)
        )  # odd harmonics stronger: a transformer buzz
        wave = wave * (1 + 0.2 * np.sin(2 * np.pi * 0.3 * t)) + 0.05 * _noise("pink_noise.wav", n, sr, rng)
    else:
        power = {"white_noise.wav": 0, "pink_noise.wav": 1, "brown_noise.wav": 2}[kind]
        spectrum = np.fft.rfft(rng.standard_normal(n)) / np.maximum(freqs, 20.0) ** (power / 2)
        wave = np.fft.irfft(spectrum, n)
    return 0.1 * wave / np.sqrt(np.mean(wave**2))


def _to_int16(wave: np.ndarray) -> np.ndarray:
    return np.round(np.clip(wave, -1.0, 1.0) * 32767).astype(np.int16)


def _finish(
    root: Path,
    batch: list[_Clip],
    waves: list[tuple[np.ndarray, int]],
    noises: list[np.ndarray],
    config: SynthConfig,
) -> Counter:
    """Resample a batch to the target rate, place, mix with noise, gain, write; return counts."""
    import torch  # here, not at the top: the espeak child process must start fast
    import torchaudio

    n_out = round(config.sample_rate * config.clip_seconds)
    padded = np.zeros((len(batch), max(len(w) for w, _ in waves)), np.float32)  # (B, T) at 22050
    for row, (wave, _) in zip(padded, waves):
        row[: len(wave)] = wave / 32768.0
    resampled = torchaudio.functional.resample(torch.from_numpy(padded), ESPEAK_RATE, config.sample_rate)
    counts = Counter()
    for clip, (wave, rate), row in zip(batch, waves, resampled.numpy()):
        speech = row[: -(-len(wave) * config.sample_rate // ESPEAK_RATE)].astype(np.float64)
        if speech.size == 0 or not np.abs(speech).max() > 0:
            raise RuntimeError(f"espeak-ng produced silence for {clip.voice!r} saying {clip.word!r}.")
        if speech.size > n_out:  # only if even 450 wpm did not fit: crop, with a 10 ms fade
            speech = speech[:n_out] * np.minimum(1, np.arange(n_out, 0, -1) / (0.01 * config.sample_rate))
            counts["cropped"] += 1
        speech *= 0.5 / np.abs(speech).max()  # peak at -6 dBFS before gain
        start = int(clip.offset_u * (n_out - speech.size + 1))
        placed = np.pad(speech, (start, n_out - start - speech.size))
        offset = int(clip.noise_u * (noises[clip.noise].size - n_out + 1))
        segment = noises[clip.noise][offset : offset + n_out]
        scale = np.sqrt(np.mean(speech**2) / np.mean(segment**2)) * 10 ** (-clip.snr_db / 20)
        mixed = (placed + scale * segment) * 10 ** (clip.gain_db / 20)
        sf.write(root / clip.path, _to_int16(mixed), config.sample_rate, subtype="PCM_16")
        counts[clip.split] += 1
        counts["resynthesised_faster"] += rate != clip.rate
    return counts


def _render(
    tmp: Path, clips: list[_Clip], config: SynthConfig, progress: Callable[[int, int], None] | None
) -> tuple[Counter, str]:
    """Write the noise files and every clip into ``tmp``; return the counts and espeak's version."""
    (tmp / "_background_noise_").mkdir()
    noises = []
    for k, name in enumerate(NOISE_FILES):
        noise = _to_int16(
            _noise(
                name,
                30 * config.sample_rate,
                config.sample_rate,
                np.random.default_rng([config.seed, 0xB0, k]),
            )
        )
        sf.write(tmp / "_background_noise_" / name, noise, config.sample_rate, subtype="PCM_16")
        noises.append(noise / 32767.0)  # mix exactly what is on disk
    for word in config.words:
        (tmp / word).mkdir()
    counts, done, pending = Counter(), 0, deque()
    jobs = [(c.voice, c.word, c.rate, c.pitch, c.intonation, c.espeak_seed) for c in clips]
    espeak = _EspeakProcess(jobs, int(_FIT * config.clip_seconds * ESPEAK_RATE))
    # espeak runs in its process while two threads resample and write the previous batches
    with contextlib.closing(espeak), ThreadPoolExecutor(max_workers=2) as pool:
        for start in range(0, len(clips), _BATCH):
            batch = clips[start : start + _BATCH]
            waves = [espeak.read() for _ in batch]
            pending.append((len(batch), pool.submit(_finish, tmp, batch, waves, noises, config)))
            while pending and (pending[0][1].done() or len(pending) > 4 or start + _BATCH >= len(clips)):
                size, future = pending.popleft()
                counts += future.result()
                done += size
                if progress is not None:
                    progress(done, len(clips))
    return counts, espeak.version


def generate(
    root: Path, config: SynthConfig = SynthConfig(), progress: Callable[[int, int], None] | None = None
) -> Path:
    """Write the synthetic set to ``root`` (which must not exist or be empty) and return ``root``.

    The set is built in a hidden sibling folder and renamed to ``root`` at the end, so an
    interrupted run leaves nothing that looks complete. ``progress(done, total)`` is called
    from this thread as clips are written.
    """
    root = Path(root).expanduser()
    config.validate()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise OutputExistsError(f"{root} already exists and is not an empty folder.")
    splits = split_voices(config)
    clips = _plan(config, splits)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}{_PARTIAL}{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        counts, version = _render(tmp, clips, config, progress)
        for split, filename in _LISTS.items():
            lines = sorted(c.path for c in clips if c.split == split)
            (tmp / filename).write_text("".join(f"{line}\n" for line in lines))
        summary = {
            "format_version": FORMAT_VERSION,
            "generator": "prunekit.synth",
            "espeak_ng": version,
            "config": asdict(config),
            "voices": splits,
            "speakers": {v: speaker_id(v) for v in config.voices},
            "clips": {s: counts[s] for s in SPLITS} | {"total": len(clips)},
            "resynthesised_faster": counts["resynthesised_faster"],
            "cropped": counts["cropped"],
        }
        (tmp / "synthetic.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, root)  # atomic; refuses a root that another run filled meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


_PARTIAL = ".partial-"  # generate() builds ".<root name>.partial-<pid>-<random>" beside the root


def remove_stale_partials(folder: Path) -> list[Path]:
    """Delete the half-written sets ``generate`` left in ``folder`` when it was killed (its
    cleanup never ran: SIGKILL, a power cut), and return them. A partial folder is stale when the
    process named in it is gone; one whose process is alive is being written and stays."""
    removed = []
    for partial in sorted(Path(folder).glob(f".*{_PARTIAL}*")):
        pid = partial.name.rpartition(_PARTIAL)[2].split("-")[0]
        if partial.is_dir() and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial)
    return removed
