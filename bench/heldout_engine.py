"""How the demo model hears a speech engine it never trained on (issue #13's "measure first").

The demo is trained and tested on espeak-ng voices only. This bench builds a held-out test set
of the same 35 words from a different engine, Debian's ``flite`` (CMU Flite: the diphone voice
``kal16`` and the ``awb``, ``rms`` and ``slt`` voices built from CMU ARCTIC recordings of real
speakers), in the Speech Commands v2 layout (every clip in ``testing_list.txt``), and evaluates
a model on it, per voice, with a 95 % bootstrap interval over clips.

Each voice says each word at three speaking rates (flite's ``duration_stretch`` 0.85, 1.0 and
1.2), once clean and once over pink noise at 15 dB SNR, placed at a random offset in a 1 s
window: 4 x 35 x 3 x 2 = 840 clips. Nothing here is committed audio; the set is regenerated
into ``cache/heldout-flite/`` (about a minute) when missing.

    apt-get install flite                      # once (Debian)
    .venv/bin/python bench/heldout_engine.py [--model demo] [--out bench/results/heldout_engine.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from prunekit.data.datasets import open_dataset
from prunekit.data.synth import WORDS
from prunekit.evaluation.metrics import evaluate
from prunekit.models.loading import load_model
from prunekit.progress import console_bar
from prunekit.store import cache_dir

VOICES = ("kal16", "awb", "rms", "slt")
STRETCHES = (0.85, 1.0, 1.2)
RATE = 16_000
SNR_DB = 15.0


def _say(word: str, voice: str, stretch: float, folder: Path) -> np.ndarray:
    out = folder / "say.wav"
    subprocess.run(
        ["flite", "-voice", voice, "--setf", f"duration_stretch={stretch}", "-t", word, "-o", str(out)],
        check=True,
        capture_output=True,
    )
    wave, rate = sf.read(out, dtype="float32")
    if rate != RATE:
        wave = torchaudio.functional.resample(torch.from_numpy(wave), rate, RATE).numpy()
    active = np.flatnonzero(np.abs(wave) > 0.02 * np.abs(wave).max())
    return wave[active[0] : active[-1] + 1] if active.size else wave


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    wave = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) / np.sqrt(np.maximum(freqs, 20.0)), n)
    return wave / np.sqrt(np.mean(wave**2))


def build(root: Path) -> Path:
    """The held-out set in ``root`` (written to a temporary folder, then renamed into place)."""
    if (root / "testing_list.txt").is_file():
        return root
    if shutil.which("flite") is None:
        sys.exit("flite is not installed: apt-get install flite")
    rng = np.random.default_rng(13)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-"))
    listed = []
    jobs = [(w, v, s) for w in WORDS for v in VOICES for s in STRETCHES]
    bar, progress = console_bar("flite words", unit="word")
    for done, (word, voice, stretch) in enumerate(jobs, 1):
        (tmp / word).mkdir(exist_ok=True)
        speech = _say(word, voice, stretch, tmp)[:RATE]
        speech = 0.5 * speech / np.abs(speech).max()
        for take in range(2):
            start = int(rng.integers(0, RATE - speech.size + 1))
            clip = np.pad(speech, (start, RATE - start - speech.size))
            if take:
                noise = _pink(RATE, rng)
                clip = clip + noise * np.sqrt(np.mean(speech**2)) * 10 ** (-SNR_DB / 20)
            name = f"{word}/{voice}{STRETCHES.index(stretch)}_nohash_{take}.wav"
            sf.write(tmp / name, np.clip(clip, -1, 1), RATE, subtype="PCM_16")
            listed.append(name)
        progress(done, len(jobs))
    bar.close()
    (tmp / "testing_list.txt").write_text("\n".join(listed) + "\n")
    (tmp / "validation_list.txt").write_text("")
    (tmp / "say.wav").unlink()
    tmp.rename(root)
    return root


def _interval(correct: np.ndarray, rng: np.random.Generator, rounds: int = 2000) -> list[float]:
    means = correct[rng.integers(0, correct.size, (rounds, correct.size))].mean(1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--out", default="bench/results/heldout_engine.json")
    args = parser.parse_args()
    root = build(cache_dir() / "heldout-flite")
    loaded = load_model(args.model)
    dataset = open_dataset(f"speech-commands:{root}")
    result = evaluate(loaded.model, loaded.feature_extractor, loaded.labels, dataset, "test")
    predictions = result.predictions
    correct = predictions["correct"].to_numpy(dtype=bool)
    voice = predictions["path"].map(lambda p: Path(p).name.split("_nohash_")[0].rstrip("012"))
    noisy = predictions["path"].str.endswith("_1.wav")
    rng = np.random.default_rng(0)
    report = {
        "model": args.model,
        "engine": f"flite ({', '.join(VOICES)}), rates {STRETCHES}, clean and pink noise at {SNR_DB} dB",
        "clips": int(correct.size),
        "accuracy": float(correct.mean()),
        "accuracy_95ci": _interval(correct, rng),
        "per_voice": {v: float(correct[(voice == v).to_numpy()].mean()) for v in VOICES},
        "clean": float(correct[~noisy.to_numpy()].mean()),
        "noisy": float(correct[noisy.to_numpy()].mean()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
