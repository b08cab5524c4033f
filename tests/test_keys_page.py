"""Key priors in the background and on their page: a run folder that learns, stops, resumes and
reloads; the page's maps, key choice and evaluation (AppTest)."""

from __future__ import annotations

import json
import time

import pytest
import torch
from conftest import REPO
from streamlit.testing.v1 import AppTest

from prunekit.errors import ConfigurationError, SweepError
from prunekit.keys.background import learning_status, run_learning, start_learning, stop_learning
from prunekit.keys.learn import KeyLearnConfig
from prunekit.models import load_model
from prunekit.models.key_priors import KeyPriorASTForAudioClassification
from prunekit.store import cache_dir


def test_a_run_learns_into_its_folder_and_reloads(tmp_path, tiny_model_dir, tiny_speech_commands):
    out = tmp_path / "run"
    config = KeyLearnConfig(epochs=2, lr=0.5)
    history = run_learning(out, str(tiny_model_dir), str(tiny_speech_commands), config)
    status = learning_status(out)
    assert status["state"] == "finished" and status["epochs_done"] == 2 and status["fraction"] == 1.0
    assert history["kept"].sum() == 1
    learned = load_model(out / "model").model
    assert isinstance(learned, KeyPriorASTForAudioClassification)
    moved = max(float(k.log_prior.detach().abs().max()) for k in learned.key_priors)
    kept = history[history["kept"]].iloc[0]
    assert moved > 0 or kept["step"] == 0  # the priors moved, unless the start was the best
    # The original model folder is untouched: it still loads as a plain AST.
    assert not isinstance(load_model(tiny_model_dir).model, KeyPriorASTForAudioClassification)
    # Run again with the same settings: already finished, nothing redone.
    again = run_learning(out, str(tiny_model_dir), str(tiny_speech_commands), config)
    assert len(again) == len(history) and learning_status(out)["epochs_done"] == 2
    with pytest.raises(ConfigurationError, match="other settings"):
        run_learning(out, str(tiny_model_dir), str(tiny_speech_commands), KeyLearnConfig(epochs=3))


def test_a_background_run_stops_with_its_priors_saved_and_resumes(
    tmp_path, tiny_model_dir, tiny_speech_commands
):
    out = tmp_path / "bg"
    args = ["--model", str(tiny_model_dir), "--data", str(tiny_speech_commands), "--epochs", "400"]
    args += ["--val-clips", "3", "--lr", "0.5"]
    start_learning(out, args)
    deadline = time.monotonic() + 120
    while learning_status(out)["steps_done"] < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(SweepError, match="already going"):
        start_learning(out, args)
    assert stop_learning(out)
    while learning_status(out)["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    status = learning_status(out)
    assert status["state"] == "stopped" and "stopped by you" in status["stage"], status
    assert (out / "model" / "config.json").is_file() and status["epochs_done"] < 400
    saved = load_model(out / "model").model
    # Resume: from the saved priors, for the epochs not yet finished.
    first = torch.cat([k.log_prior.detach().flatten() for k in saved.key_priors])
    settings = json.loads((out / "settings.json").read_text())
    assert settings["config"]["epochs"] == 400
    history = run_learning(out, settings["model"], settings["data"], KeyLearnConfig(**settings["config"]))
    assert learning_status(out)["state"] == "finished" and learning_status(out)["epochs_done"] == 400
    assert history.attrs.get("stopped") is not True
    resumed = torch.cat([k.log_prior.detach().flatten() for k in load_model(out / "model").model.key_priors])
    assert first.shape == resumed.shape


def test_a_run_that_cannot_start_says_why(tmp_path):
    with pytest.raises(SweepError, match=r"failed at start: .*no/such/model"):
        start_learning(tmp_path / "bad", ["--model", str(tmp_path / "no/such/model")])
    with pytest.raises(SweepError, match=r"stopped at once.*--epochs"):
        start_learning(tmp_path / "bad-args", ["--epochs", "many"])


def _page(tiny_model_dir, tiny_speech_commands) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    state = {
        "model_kind": "Local folder",
        "model_ref": str(tiny_model_dir),
        "data_kind": "Speech Commands v2 folder",
        "data_ref": str(tiny_speech_commands),
    }
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page("pages/keys.py").run()
    assert not at.exception, at.exception
    return at


def test_the_page_shows_priors_what_a_sparsity_removes_and_both_accuracies(
    tiny_model_dir, tiny_speech_commands, tmp_path, monkeypatch
):
    # A cache of its own: other tests (the browser test) leave runs in the session's cache.
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    at = _page(tiny_model_dir, tiny_speech_commands)
    assert any("No priors learned yet" in i.value for i in at.info)
    run_learning(
        cache_dir() / "keys" / "tiny", str(tiny_model_dir), str(tiny_speech_commands), KeyLearnConfig(lr=0.5)
    )
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="keys_run").value == "tiny"
    spec = at.get("plotly_chart")[0].proto.spec
    assert "Key priors of layer 0, summed over heads" in spec and "kept at 50% key sparsity" in spec
    at.selectbox(key="keys_head").set_value(1).run()
    assert "Key priors of layer 0 head 1" in at.get("plotly_chart")[0].proto.spec
    at.button(key="keys_evaluate").click().run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(table["model"]) == ["original", "learned priors", "key-pruned"]
    macs = table["attention MACs (M)"].tolist()
    assert macs[1] == macs[0] and macs[2] < macs[0]  # layer granularity: K and V cut for real
    assert any("key-pruned" in m.value and "McNemar" in m.value for m in at.markdown)
    # A key sparsity outside [0, 1) cannot be chosen; a bad granularity is refused by the library.
    assert at.slider(key="keys_sparsity").max == 0.9
