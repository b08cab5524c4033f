"""The embedded demo model's outputs on fixed clips must not change unless the model does.

``tests/data/demo_golden.json`` holds the logits the demo model gave on these clips at commit
f32742d, before the code-health restructuring: four words spoken by espeak-ng (trimmed, peak 0.5,
centred in one second, as the synthetic set places them) and one second of seeded noise. The
same clips through today's reading, featurising and model code must give the same logits.
Regenerate the file only when the demo model is retrained on purpose (``python
tests/test_demo_golden.py`` writes it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from prunekit.data import audio, synth
from prunekit.evaluation.metrics import predict_logits
from prunekit.models import load_model

GOLDEN = Path(__file__).parent / "data" / "demo_golden.json"


def golden_waves(words) -> list[np.ndarray]:
    """The fixed clips: 16 kHz float32, one second each."""
    speaker = synth._Espeak()
    waves = []
    for word, voice in words:
        spoken = speaker.say(word, voice, 170, 50, 50, 0).astype(np.float32) / 32768
        wave = audio.resample(synth._trim(spoken), synth.ESPEAK_RATE)[: audio.TARGET_SR]
        pad = audio.TARGET_SR - len(wave)
        waves.append(np.pad(0.5 * wave / np.abs(wave).max(), (pad // 2, pad - pad // 2)).astype(np.float32))
    rng = np.random.default_rng(0)
    waves.append((0.1 * rng.standard_normal(audio.TARGET_SR)).astype(np.float32))
    return waves


def demo_logits(words) -> tuple[torch.Tensor, list[str]]:
    model, extractor, labels = load_model("demo")
    return predict_logits(model, audio.features(golden_waves(words), extractor)), labels


def test_demo_logits_match_the_golden_file():
    golden = json.loads(GOLDEN.read_text())
    logits, labels = demo_logits([tuple(w) for w in golden["words"]])
    assert labels == golden["labels"]
    expected = torch.tensor(golden["logits"])
    assert logits.shape == expected.shape == (5, 35)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    predicted = [labels[i] for i in logits.argmax(-1)]
    assert predicted == golden["predicted"] == ["yes", "seven", "house", "left", "cat"]


if __name__ == "__main__":  # regenerate after retraining the demo model on purpose
    words = [("yes", "en-us"), ("seven", "en-gb-x-rp"), ("house", "en-029"), ("left", "en-us-nyc")]
    logits, labels = demo_logits(words)
    GOLDEN.write_text(
        json.dumps(
            {
                "words": words,
                "noise_seed": 0,
                "labels": labels,
                "logits": logits.tolist(),
                "predicted": [labels[i] for i in logits.argmax(-1)],
            }
        )
        + "\n"
    )
    print(f"wrote {GOLDEN}", file=sys.stderr)
