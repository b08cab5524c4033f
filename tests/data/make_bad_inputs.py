"""Write the bad-input corpus: every hostile or broken file of issue 12, generated, not committed.

``python tests/data/make_bad_inputs.py FOLDER`` writes it into FOLDER; ``tests/conftest.py``
calls ``make(folder)`` into a temporary folder once per test session. Each entry of the returned
dict names one input (``audio/*``, ``models/*``, ``data/*``, ``plans/*``); ``tests/test_bad_inputs.py``
runs every one through the library, the CLI and the app.

Nothing here runs on import, and the two files meant to run code if prunekit ever executed
them (a remote-code module and a pickle) only create a ``RAN-*`` file beside themselves, so a
test can prove they never ran.
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16_000
LABELS = ["down", "go", "up"]


def _wav_header(sample_rate: int, frames: int, *, channels: int = 1) -> bytes:
    """A 16-bit PCM RIFF header for ``frames`` frames (the data chunk follows it)."""
    block = 2 * channels
    data = frames * block
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, 16)
        + b"data"
        + struct.pack("<I", data)
    )


def _tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _audio(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True)
    out = {}
    # Issue row 1: a small file whose header says 1 Hz (resampled to 16 kHz, 16,000x as many samples).
    frames = 10_000
    out["audio/one_hz.wav"] = folder / "one_hz.wav"
    out["audio/one_hz.wav"].write_bytes(_wav_header(1, frames) + np.zeros(frames, "<i2").tobytes())
    # Row 2: a clip shorter than one 25 ms analysis window (10 ms).
    out["audio/ten_ms.wav"] = folder / "ten_ms.wav"
    sf.write(out["audio/ten_ms.wav"], _tone(0.010), SR, subtype="PCM_16")
    # Row 12: 3 s of audio cut to a third of what the header says.
    out["audio/truncated.wav"] = folder / "truncated.wav"
    full = folder / "full.wav"
    sf.write(full, _tone(3.0), SR, subtype="PCM_16")
    whole = full.read_bytes()
    full.unlink()
    out["audio/truncated.wav"].write_bytes(whole[: len(whole) // 3])
    # Not audio at all, with an audio suffix.
    out["audio/not_audio.wav"] = folder / "not_audio.wav"
    out["audio/not_audio.wav"].write_text("<html>this is a web page saved as .wav</html>\n")
    return out


def _tiny_model(folder: Path) -> Path:
    """A tiny AST (transformers' tester sizes) saved with save_pretrained, extractor included."""
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    torch.manual_seed(0)
    config = ASTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        num_mel_bins=16,
        max_length=24,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)},
    )
    ASTForAudioClassification(config).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=16, max_length=24).save_pretrained(folder)
    return folder


def _edit_json(path: Path, **fields) -> None:
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data, indent=2) + "\n")


class _RunsCode:
    """Unpickling this creates a file: the proof a pickle was executed."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return Path.touch, (self.target,)


def _models(folder: Path) -> dict[str, Path]:
    base = _tiny_model(folder / "tiny")
    out = {"models/tiny": base}

    def copy(name: str) -> Path:
        out[f"models/{name}"] = shutil.copytree(base, folder / name)
        return out[f"models/{name}"]

    # Row 3: the config says 6 layers, the weights hold 2 (and 1: a layer's weights left over).
    _edit_json(copy("more_layers_than_weights") / "config.json", num_hidden_layers=6)
    _edit_json(copy("fewer_layers_than_weights") / "config.json", num_hidden_layers=1)
    # Row 6: remote code. The module would leave RAN-remote-code beside itself if imported.
    remote = copy("auto_map")
    _edit_json(
        remote / "config.json",
        auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForAudioClassification": "evil.EvilModel"},
    )
    (remote / "evil.py").write_text(
        "from pathlib import Path\nPath(__file__).with_name('RAN-remote-code').touch()\n"
    )
    # Row 9: a pickle checkpoint only; unpickling it would create RAN-pickle.
    pickled = copy("pickle_bin")
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(pickle.dumps({"state": _RunsCode(pickled / "RAN-pickle")}))
    # Row 10: extractor settings that are not JSON, or absurd.
    (copy("preprocessor_not_json") / "preprocessor_config.json").write_text("{max_length: -5")
    _edit_json(copy("max_length_negative") / "preprocessor_config.json", max_length=-5)
    _edit_json(copy("mel_bins_zero") / "preprocessor_config.json", num_mel_bins=0)
    _edit_json(copy("sampling_rate_8k") / "preprocessor_config.json", sampling_rate=8000)
    return out


def _speech_commands(root: Path, clips: dict[str, bytes], *, lists=("validation", "testing")) -> Path:
    """A Speech Commands folder whose ``clips`` ({"label/name.wav": bytes}) are all in the test list."""
    for name, data in clips.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    if "validation" in lists:
        (root / "validation_list.txt").write_text("")
    if "testing" in lists:
        (root / "testing_list.txt").write_text("".join(f"{n}\n" for n in clips))
    return root


def _data(folder: Path, audio: dict[str, Path]) -> dict[str, Path]:
    folder.mkdir(parents=True)
    good = folder / "good.wav"
    sf.write(good, _tone(1.0), SR, subtype="PCM_16")
    ok = good.read_bytes()
    good.unlink()
    out = {}
    # Row 4: validation_list.txt but no testing_list.txt.
    out["data/sc_one_list"] = _speech_commands(
        folder / "sc_one_list", {"up/0_nohash_0.wav": ok}, lists=("validation",)
    )
    # Row 5: folder per class whose test split is empty: one file, which the hash split sends to
    # train (sha1("up/b.wav") maps to 0.90; test takes [0, 0.1)).
    empty = folder / "empty_test_split"
    (empty / "up").mkdir(parents=True)
    (empty / "up" / "b.wav").write_bytes(ok)
    out["data/empty_test_split"] = empty
    # Each bad audio file inside an otherwise good dataset's test split (what evaluate reads).
    for path in audio.values():
        name = path.stem
        out[f"data/with_{name}"] = _speech_commands(
            folder / f"with_{name}", {"up/0_nohash_0.wav": ok, f"up/{name}_nohash_0.wav": path.read_bytes()}
        )
    return out


def _plans(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True)
    good = {
        "format": "prunekit.PruningPlan",
        "version": 1,
        "base": [{"heads": 2, "qk_dim": 2, "v_dim": 2, "hidden": 4}],
        "layers": [{"heads": [0, 1], "qk": [[0, 1], [0, 1]], "vo": [[0, 1], [0, 1]]}],
    }
    texts = {"empty_list": "[]", "null": "null"}
    for name, bad in (("float_index", 2.7), ("string_index", "1"), ("bool_index", True)):
        plan = json.loads(json.dumps(good))
        plan["layers"][0]["heads"][1] = bad
        texts[name] = json.dumps(plan)
    out = {}
    for name, text in texts.items():
        out[f"plans/{name}.json"] = folder / f"{name}.json"
        out[f"plans/{name}.json"].write_text(text + "\n")
    return out


def make(folder: str | Path) -> dict[str, Path]:
    """Write the corpus into ``folder`` (created; must not exist) and return {name: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    audio = _audio(folder / "audio")
    return audio | _models(folder / "models") | _data(folder / "data", audio) | _plans(folder / "plans")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/data/make_bad_inputs.py FOLDER")
    for name, path in make(sys.argv[1]).items():
        print(f"{name:40s} {path}")
