"""Every file of the bad-input corpus (tests/data/make_bad_inputs.py, issue 12) through each
surface: the library raises the exact PrunekitError subclass with a message naming the problem;
the CLI prints that message and exits with code 2, no traceback; the app shows it in st.error
and raises nothing. One parametrised test per surface, so a row cannot quietly come back.
"""

from __future__ import annotations

import re

import pytest
from conftest import REPO
from streamlit.testing.v1 import AppTest
from transformers import ASTFeatureExtractor

from prunekit.cli import main
from prunekit.data.audio import features, load_waveform
from prunekit.data.datasets import open_dataset
from prunekit.errors import AudioError, DatasetError, ModelLoadError, PlanError
from prunekit.heads.plan import PruningPlan
from prunekit.models import load_model

# name in the corpus -> (exception, message). None: the input is fine and must be used, not refused.
AUDIO = {
    "audio/one_hz.wav": (AudioError, "says its sample rate is 1 Hz; prunekit reads 1,000 to 384,000 Hz."),
    "audio/ten_ms.wav": None,  # shorter than one 25 ms window: zero-padded to it
    "audio/truncated.wav": (AudioError, "is cut short: its header says 48,000 frames, the file holds 15,985"),
    "audio/not_audio.wav": (AudioError, "is not audio prunekit can read (soundfile says:"),
}
MODELS = {
    "models/more_layers_than_weights": (
        ModelLoadError,
        "do not match its config.json (num_hidden_layers=6, "
        "hidden_size=32): 64 keys missing from the weights",
    ),
    "models/fewer_layers_than_weights": (
        ModelLoadError,
        "do not match its config.json (num_hidden_layers=1, "
        "hidden_size=32): 16 keys in the weights but not in the model",
    ),
    "models/auto_map": (ModelLoadError, "asks to run its own Python code (config.json has auto_map"),
    "models/pickle_bin": (ModelLoadError, "holds pytorch_model.bin but no model.safetensors"),
    "models/preprocessor_not_json": (ModelLoadError, "preprocessor_config.json is not valid JSON"),
    "models/max_length_negative": (
        ModelLoadError,
        "max_length is -5; it must be a whole number >= 1 (24 here)",
    ),
    "models/mel_bins_zero": (ModelLoadError, "num_mel_bins is 0; it must be a whole number >= 1 (16 here)"),
    "models/sampling_rate_8k": (ModelLoadError, "sampling_rate is 8000, but prunekit reads audio at 16000"),
}
DATA = {
    "data/sc_one_list": (DatasetError, "has validation_list.txt but no testing_list.txt"),
    "data/empty_test_split": (DatasetError, "empty_test_split is empty."),
}
PLANS = {
    "plans/empty_list.json": (
        PlanError,
        "A pruning plan is a JSON object with format, base and layers; got []",
    ),
    "plans/null.json": (PlanError, "A pruning plan is a JSON object with format, base and layers; got None"),
    "plans/float_index.json": (PlanError, "layer 0: kept heads: 2.7 is not an index"),
    "plans/string_index.json": (PlanError, "layer 0: kept heads: '1' is not an index"),
    "plans/bool_index.json": (PlanError, "layer 0: kept heads: True is not an index"),
}
EXTRACTOR = ASTFeatureExtractor(num_mel_bins=16, max_length=24)


def _library(name: str, path):
    """What a library user does with the input."""
    kind = name.split("/")[0]
    if kind == "audio":
        return features([load_waveform(path)], EXTRACTOR)
    if kind == "models":
        return load_model(path)
    if kind == "data":
        return open_dataset(path).split("test")
    return PruningPlan.from_json(path.read_text())


@pytest.mark.parametrize("name", [*AUDIO, *MODELS, *DATA, *PLANS])
def test_library(bad_inputs, name):
    expected = (AUDIO | MODELS | DATA | PLANS)[name]
    if expected is None:
        assert tuple(_library(name, bad_inputs[name]).shape) == (1, 24, 16)
        return
    error, message = expected
    with pytest.raises(error) as caught:
        _library(name, bad_inputs[name])
    assert type(caught.value) is error and message in str(caught.value)
    assert not list(bad_inputs["models/tiny"].parent.rglob("RAN-*"))  # no shipped code or pickle ever ran


def _cli_args(name: str, bad_inputs) -> list[str]:
    kind, stem = name.split("/")
    tiny = str(bad_inputs["models/tiny"])
    if kind == "audio":  # a dataset whose test split holds the file beside a good clip
        data = str(bad_inputs[f"data/with_{stem.removesuffix('.wav')}"])
        return ["evaluate", "--model", tiny, "--data", data, "--split", "test", "--repeats", "1"]
    if kind == "models":
        return [
            "evaluate",
            "--model",
            str(bad_inputs[name]),
            "--data",
            str(bad_inputs["data/empty_test_split"]),
        ]
    return ["evaluate", "--model", tiny, "--data", str(bad_inputs[name]), "--split", "test", "--repeats", "1"]


@pytest.mark.parametrize("name", [*AUDIO, *MODELS, *DATA])  # plans have no command line
def test_cli(bad_inputs, name, capsys):
    code = main(_cli_args(name, bad_inputs))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert not list(bad_inputs["models/tiny"].parent.rglob("RAN-*"))
    expected = (AUDIO | MODELS | DATA)[name]
    if expected is None:
        assert code == 0, err
        return
    assert code == 2
    printed = re.search(r"^error: (.*)", err, flags=re.M)  # on a line of its own, after any progress bar
    assert printed and expected[1] in printed.group(1), err


def _app(page: str, **state) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(f"pages/{page}.py").run()
    return at


@pytest.mark.parametrize("name", [*AUDIO, *MODELS, *DATA])
def test_app(bad_inputs, name):
    kind = name.split("/")[0]
    path = bad_inputs[name]
    if kind == "audio":  # the Listen page's upload, with the demo model
        at = _app("listen", data_kind="Folder per class")
        at.file_uploader(key="listen_upload").upload(path.name, path.read_bytes(), "audio/wav").run()
    elif kind == "models":  # the sidebar's local folder field
        at = _app("overview", model_kind="Local folder", model_ref=str(path), data_kind="Folder per class")
    else:  # the sidebar's dataset field, read as it auto-detects (Speech Commands or folder per class)
        at = _app(
            "overview",
            model_kind="Local folder",
            model_ref=str(bad_inputs["models/tiny"]),
            data_kind="Folder per class" if name == "data/empty_test_split" else "Speech Commands v2 folder",
            data_ref=str(path),
            eval_split="test",
        )
    assert not at.exception, at.exception
    assert not list(bad_inputs["models/tiny"].parent.rglob("RAN-*"))
    errors = [e.value for e in at.error]
    expected = (AUDIO | MODELS | DATA)[name]
    if expected is None:
        assert not errors and len(at.get("plotly_chart")) == 2  # its spectrogram and the top 5
        return
    message = APP_MESSAGES.get(name, expected[1])
    assert any(message in e for e in errors), errors
    assert not any(re.search(r"Traceback|File \".*\.py\", line", e) for e in errors)


# The app names the layout the user chose in the sidebar, so its message differs from open_dataset's guess.
APP_MESSAGES = {
    "data/sc_one_list": "is not in the Speech Commands layout: it needs validation_list.txt and "
    "testing_list.txt"
}


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--batch-size", "0", "argument --batch-size: expected a whole number >= 1, got 0"),
        ("--repeats", "0", "argument --repeats: expected a whole number >= 1, got 0"),
        ("--sparsity", "1.5", "argument --sparsity: expected a number in [0, 1], got 1.5"),
        ("--sparsity", "nan", "argument --sparsity: expected a number in [0, 1], got nan"),
    ],
)
def test_cli_numbers_are_refused_before_anything_runs(tmp_path, capsys, option, value, message):
    """Issue 12, row 11: argparse refuses them (exit code 2, usage and the message)."""
    with pytest.raises(SystemExit) as exit_:
        main(["prune", "--out", str(tmp_path / "out"), option, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_the_hostile_files_would_run_if_executed(bad_inputs, tmp_path):
    """The RAN-* checks above can fail: unpickling the .bin or importing the module does leave
    the file (done here on copies, so the corpus stays clean)."""
    import pickle
    import runpy
    import shutil

    pickled = shutil.copytree(bad_inputs["models/pickle_bin"], tmp_path / "pickle_bin")
    remote = shutil.copytree(bad_inputs["models/auto_map"], tmp_path / "auto_map")
    pickle.loads((pickled / "pytorch_model.bin").read_bytes())  # points at the corpus' own folder
    runpy.run_path(str(remote / "evil.py"))
    assert (bad_inputs["models/pickle_bin"] / "RAN-pickle").is_file() and (
        remote / "RAN-remote-code"
    ).is_file()
    (bad_inputs["models/pickle_bin"] / "RAN-pickle").unlink()
