"""How the demo model hears speech engines it never trained on (issue #13).

The demo is trained and tested on espeak-ng voices only. This bench builds sets of the same 35
words from other engines, in the Speech Commands v2 layout (every clip in ``testing_list.txt``),
and evaluates a model on them, per voice, with a 95 % bootstrap interval over clips:

* ``flite`` (the held-out test engine): Debian's CMU Flite, the diphone voice ``kal16`` and the
  ``awb``, ``rms`` and ``slt`` voices built from CMU ARCTIC recordings of real speakers. Its
  number is read once per model; no training choice looks at it.
* ``festival`` (the validation engine): Debian's Festival with the ``ked`` diphone voice (package
  festvox-kdlpc16k; another speaker, recorded apart from flite's). Choices between training
  settings are made on it.

Each voice says each word at three speaking rates (duration stretch 0.85, 1.0 and 1.2), once
clean and once over pink noise at 15 dB SNR, placed at a random offset in a 1 s window: flite
4 x 35 x 3 x 2 = 840 clips, festival 210. Nothing here is committed audio; a set is regenerated
into ``cache/heldout-<engine>/`` (about a minute) when missing.

    apt-get install flite festival festvox-kdlpc16k     # once (Debian)
    .venv/bin/python bench/heldout_engine.py [--engine flite|festival] [--model demo] [--out FILE]
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

ENGINES = {"flite": ("kal16", "awb", "rms", "slt"), "festival": ("ked",)}
OUTPUTS = {"flite": "bench/results/heldout_engine.json", "festival": "bench/results/heldout_festival.json"}
STRETCHES = (0.85, 1.0, 1.2)
RATE = 16_000
SNR_DB = 15.0


def _command(engine: str, word: str, voice: str, stretch: float, out: Path) -> list[str]:
    if engine == "flite":
        return ["flite", "-voice", voice, "--setf", f"duration_stretch={stretch}", "-t", word, "-o", str(out)]
    setup = f"(begin (voice_{voice}_diphone) (Parameter.set 'Duration_Stretch {stretch}))"
    return ["text2wave", "-eval", setup, "-o", str(out)]


def _say(engine: str, word: str, voice: str, stretch: float, folder: Path) -> np.ndarray:
    out = folder / "say.wav"
    command = _command(engine, word, voice, stretch, out)
    subprocess.run(
        command, check=True, capture_output=True, input=word.encode() if engine == "festival" else None
    )
    wave, rate = sf.read(out, dtype="float32")
    if rate != RATE:
        wave = torchaudio.functional.resample(torch.from_numpy(wave), rate, RATE).numpy()
    return wave


def prepare(wave: np.ndarray) -> np.ndarray:
    """A spoken word trimmed to where it is above 2 % of its peak, at most 1 s, peak 0.5."""
    active = np.flatnonzero(np.abs(wave) > 0.02 * np.abs(wave).max())
    speech = (wave[active[0] : active[-1] + 1] if active.size else wave)[:RATE]
    return 0.5 * speech / max(float(np.abs(speech).max()), 1e-6)


def place(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``speech`` at a random offset in a 1-s window of silence."""
    start = int(rng.integers(0, RATE - speech.size + 1))
    return np.pad(speech, (start, RATE - start - speech.size))


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    wave = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) / np.sqrt(np.maximum(freqs, 20.0)), n)
    return wave / np.sqrt(np.mean(wave**2))


def build(root: Path, engine: str = "flite") -> Path:
    """The held-out set in ``root`` (written to a temporary folder, then renamed into place)."""
    if (root / "testing_list.txt").is_file():
        return root
    program = {"flite": "flite", "festival": "text2wave"}[engine]
    if shutil.which(program) is None:
        sys.exit(f"{engine} is not installed: apt-get install flite festival festvox-kdlpc16k")
    rng = np.random.default_rng(13)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-"))
    listed = []
    jobs = [(w, v, s) for w in WORDS for v in ENGINES[engine] for s in STRETCHES]
    bar, progress = console_bar(f"{engine} words", unit="word")
    for done, (word, voice, stretch) in enumerate(jobs, 1):
        (tmp / word).mkdir(exist_ok=True)
        speech = prepare(_say(engine, word, voice, stretch, tmp))
        for take in range(2):
            clip = place(speech, rng)
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


def engine_report(result, engine: str) -> dict:
    """Accuracy on an engine's set from an evaluation of it: overall with a 95 % bootstrap
    interval, per voice, clean and noisy."""
    voices = ENGINES[engine]
    predictions = result.predictions
    correct = predictions["correct"].to_numpy(dtype=bool)
    voice = predictions["path"].map(lambda p: Path(p).name.split("_nohash_")[0].rstrip("012"))
    noisy = predictions["path"].str.endswith("_1.wav").to_numpy()
    return {
        "engine": f"{engine} ({', '.join(voices)}), rates {STRETCHES}, clean and pink noise at {SNR_DB} dB",
        "clips": int(correct.size),
        "accuracy": float(correct.mean()),
        "accuracy_95ci": _interval(correct, np.random.default_rng(0)),
        "per_voice": {v: float(correct[(voice == v).to_numpy()].mean()) for v in voices},
        "clean": float(correct[~noisy].mean()),
        "noisy": float(correct[noisy].mean()),
    }


def engine_dataset(engine: str):
    """An engine's held-out set, built into the cache when missing."""
    return open_dataset(f"speech-commands:{build(cache_dir() / f'heldout-{engine}', engine)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", default="flite", choices=tuple(ENGINES))
    parser.add_argument("--model", default="demo")
    parser.add_argument(
        "--out", help="default: bench/results/heldout_engine.json (flite), heldout_festival.json"
    )
    args = parser.parse_args()
    loaded = load_model(args.model)
    result = evaluate(
        loaded.model, loaded.feature_extractor, loaded.labels, engine_dataset(args.engine), "test"
    )
    report = {"model": args.model, **engine_report(result, args.engine)}
    out = Path(args.out or OUTPUTS[args.engine])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
