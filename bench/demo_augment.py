"""Does waveform augmentation make the demo hear other speech engines? (issue #13, item 1)

Trains the speech demo with augmented copies of its training clips (``DemoTrainConfig(views=4,
clean_epochs=2, epochs=20, warmup_fraction=0.075)``: speed, equaliser, band-limiting,
reverberation, noise, gain and VTLP, see ``prunekit.data.augment.WaveAugment``) into
``cache/demo-augment/``, then measures it, and the committed demo, on held-out espeak-ng voices
(the training record), on the validation engine (festival ``ked``) and, once, on the held-out
test engine (flite), as ``bench/heldout_engine.py`` reports them; each engine and the espeak-ng test split
also get a paired comparison of the two models on the same clips (McNemar's exact test and a 95 %
bootstrap interval of the difference). ``noise_floor``: accuracy on festival's clean clips (the
word in digital silence, which the espeak-ng set never has) as made and with white noise at
-60 dBFS added. Writes bench/results/demo_augment.json.

    .venv/bin/python bench/demo_augment.py          # about 40 min of training on 2 cores
    .venv/bin/python bench/demo_augment.py --skip-training   # measure an existing cache/demo-augment/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from heldout_engine import engine_dataset, engine_report  # bench/heldout_engine.py, beside this script

from prunekit.data import audio
from prunekit.data.datasets import demo_dataset
from prunekit.demo.train import DemoTrainConfig, train_demo
from prunekit.evaluation.metrics import evaluate, predict_logits
from prunekit.evaluation.paired import compare_evaluations
from prunekit.models import load_model
from prunekit.models.loading import DEMO_DIR
from prunekit.store import cache_dir

REPO = Path(__file__).resolve().parent.parent
SETTINGS = {"views": 4, "clean_epochs": 2, "epochs": 20, "warmup_fraction": 0.075}


def _evaluations(model: Path) -> dict:
    """``model`` evaluated once on each set the report reads (every figure below comes from these)."""
    loaded = load_model(model)
    sets = {
        "espeak": demo_dataset(),
        "festival": engine_dataset("festival"),
        "flite": engine_dataset("flite"),
    }
    return {
        name: evaluate(loaded.model, loaded.feature_extractor, loaded.labels, data, "test")
        for name, data in sets.items()
    }


def _paired(reference: dict, candidate: dict) -> dict:
    names = {
        "espeak": "espeak-ng test voices",
        "festival": "festival (validation engine)",
        "flite": "flite (test engine)",
    }
    out = {}
    for key, name in names.items():
        result = compare_evaluations(reference[key], candidate[key], names=("committed", "augmented"))
        out[name] = {"difference": result.difference, "ci": list(result.ci), "p_value": result.p_value}
        out[name]["in words"] = result.describe()
    return out


def _noise_floor(model: Path, floor_db: float = -60.0) -> dict:
    """Accuracy on festival's clean clips as they are and with white noise at ``floor_db`` dBFS."""
    loaded = load_model(model)
    clean = [c for c in engine_dataset("festival").split("test") if c.path.name.endswith("_0.wav")]
    rng = np.random.default_rng(0)
    out = {"clips": len(clean)}
    for name, level in (("as made", None), (f"noise at {floor_db:g} dBFS", floor_db)):
        waves = [audio.load_waveform(c.path) for c in clean]
        if level is not None:
            waves = [w + (10 ** (level / 20) * rng.standard_normal(w.size)).astype(np.float32) for w in waves]
        logits = predict_logits(loaded.model, audio.features(waves, loaded.feature_extractor))
        truth = np.array([list(loaded.labels).index(c.label) for c in clean])
        out[name] = float((logits.argmax(-1).numpy() == truth).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "demo_augment.json"))
    args = parser.parse_args()
    folder = cache_dir() / "demo-augment"
    if not args.skip_training:
        train_demo(DemoTrainConfig(**SETTINGS), folder)
    models = {"committed demo (no augmentation)": DEMO_DIR, "augmented": folder}
    evaluations = {name: _evaluations(model) for name, model in models.items()}
    report = {}
    for name, model in models.items():
        record = json.loads((model / "training.json").read_text())
        report[name] = {
            "settings": {k: record["config"].get(k) for k in (*SETTINGS, "augment")},
            "espeak_validation_accuracy": record["validation_accuracy"],
            "espeak_test_accuracy": record["test_accuracy"],
            "train_seconds": record["train_seconds"],
            "festival_validation": engine_report(evaluations[name]["festival"], "festival"),
            "flite_test": engine_report(evaluations[name]["flite"], "flite"),
        }
    report["paired (augmented minus committed)"] = _paired(*evaluations.values())
    report["noise_floor"] = {
        name: _noise_floor(model) for name, model in (("committed", DEMO_DIR), ("augmented", folder))
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    for name, paired in report["paired (augmented minus committed)"].items():
        print(f"{name}: {paired['in words']}")


if __name__ == "__main__":
    main()
