"""The app's pages, headless (Streamlit AppTest): every page renders, the golden path works,
bad input is a message, sessions are isolated and the shared base model is never modified."""

import ast
import gc
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO
from streamlit.testing.v1 import AppTest

HEAVY = {"torch", "transformers", "peft", "torchaudio"}


def _app(page: str | None = None, *, demo_data: bool = False, **state) -> AppTest:
    """The app, on ``page`` as app.py's navigation shows it. AppTest.switch_page runs the page
    file alone (without app.py's sidebar), so sidebar choices are given as the session state
    they set, before the first run. Without ``demo_data`` the sidebar's dataset is a folder not yet
    typed, so no page generates the demo set or evaluates its 1,330 test clips (slow tests ask)."""
    if not demo_data:
        state.setdefault("data_kind", "Folder per class")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _weights_fingerprint(model) -> float:
    return float(sum(p.double().abs().sum() for p in model.state_dict().values()))


@pytest.fixture
def demo_weights():
    """The app's shared cached demo model (the same object the pages use) and its fingerprint."""
    from prunekit.ui import cached_model

    model = cached_model("demo").model
    return model, _weights_fingerprint(model)


# --- overview, sidebar, bad models ------------------------------------------------------------
@pytest.mark.slow  # generates the demo set and evaluates 1,330 clips on a fresh clone
def test_overview_describes_the_demo_model(real_cache):
    at = _app(demo_data=True)
    metrics = _metrics(at)
    assert metrics["Layers"] == "6" and metrics["Heads per layer"] == "6"
    assert metrics["MACs per clip"] == "132 M"
    accuracy = [v for k, v in metrics.items() if k.startswith("Accuracy on the test split")]
    recorded = json.loads((REPO / "prunekit" / "demo_model" / "training.json").read_text())["test_accuracy"]
    assert accuracy == [f"{recorded:.1%}"]  # what demo-train measured on the same held-out voices
    assert at.sidebar.radio(key="model_kind").value == "Embedded demo"
    assert not at.error


def test_a_missing_folder_is_a_message_not_a_crash():
    at = _app(model_kind="Local folder", model_ref="./no/such/model")
    assert any("No model folder" in e.value for e in at.error)


def test_an_unknown_hub_id_offline_is_a_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = _app(model_kind="Hugging Face hub id", model_ref="no-such-owner/no-such-model")
    assert any("no-such-owner/no-such-model" in e.value and "offline" in e.value.lower() for e in at.error)


def test_a_dataset_folder_that_is_not_speech_commands_is_a_message(tmp_path):
    at = _app(
        "prune", data_kind="Speech Commands v2 folder", data_ref=str(tmp_path), prune_scorer="magnitude"
    )
    assert any("Speech Commands layout" in e.value for e in at.error)


def test_ui_files_do_not_import_ml_libraries():
    for path in [REPO / "app.py", *sorted((REPO / "pages").glob("*.py"))]:
        tree = ast.parse(Path(path).read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not {n.split(".")[0] for n in names} & HEAVY, f"{path.name} imports {names}"


# --- head importance ------------------------------------------------------------------------
def test_head_importance_page_magnitude():
    at = _app("importance")
    assert at.selectbox(key="imp_scorer").value == "magnitude"
    assert len(at.get("plotly_chart")) == 2  # the head map and the channels of the selected head
    at.selectbox(key="imp_view").set_value("W_q").run()
    at.selectbox(key="imp_layer").set_value(3).run()
    at.selectbox(key="imp_head").set_value(2).run()
    assert not at.exception, at.exception
    assert "Layer 3, head 2" in at.get("plotly_chart")[1].proto.spec
    assert "W_q" in at.get("plotly_chart")[0].proto.spec
    assert len(at.get("download_button")) == 1
    assert not at.error


@pytest.mark.slow
def test_head_importance_page_fisher_uses_the_demo_data(real_cache):
    at = _app("importance", demo_data=True, score_clips=64)
    at.selectbox(key="imp_scorer").set_value("fisher").run()
    assert not at.exception, at.exception
    assert not at.error
    assert "fisher score per head" in at.get("plotly_chart")[0].proto.spec


def test_bad_dataset_is_a_message_on_the_importance_page(tmp_path):
    at = _app("importance", data_kind="Folder per class", data_ref=str(tmp_path / "missing"))
    at.selectbox(key="imp_scorer").set_value("fisher").run()
    assert not at.exception, at.exception
    assert any("Could not read the dataset" in e.value for e in at.error)


# --- compare scorers ------------------------------------------------------------------------
def test_compare_page_magnitude_against_random():
    at = _app("compare", cmp_b="random")
    assert [at.selectbox(key=k).value for k in ("cmp_a", "cmp_b")] == ["magnitude", "random"]
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert len(specs) == 4  # two rank maps, the agreement bars, the removal maps
    assert "magnitude (rank)" in specs[0] and "random (rank)" in specs[1]
    assert "K removed" in specs[3] and "O removed" in specs[3]  # "/" is escaped in the JSON
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 8
    assert any("Spearman" in m.value for m in at.markdown)
    assert at.selectbox(key="cmp_budget").value == "separate" and not at.selectbox(key="cmp_budget").disabled
    at.selectbox(key="cmp_budget").set_value("joint").run()
    assert not at.exception, at.exception
    at.selectbox(key="cmp_pattern").set_value("entire-head").run()
    assert at.selectbox(key="cmp_budget").disabled  # a head carries both groups: no budget to choose
    at.selectbox(key="cmp_threshold").set_value("local").run()
    assert not at.exception, at.exception
    slider = at.slider(key="cmp_sparsity")
    assert slider.max == 0.83 and "at most 83.3%" in slider.help  # one head of six kept per layer


@pytest.mark.slow
def test_compare_page_default_is_magnitude_against_fisher(real_cache):
    at = _app("compare", demo_data=True, score_clips=64)
    assert [at.selectbox(key=k).value for k in ("cmp_a", "cmp_b")] == ["magnitude", "fisher"]
    assert not at.error and len(at.get("plotly_chart")) == 4


# --- prune (the golden path), forced heads, unreachable sparsity, isolation --------------------
@pytest.mark.slow
def test_golden_path_pick_scorer_move_sparsity_apply_read_metrics(real_cache, demo_weights):
    from prunekit.data.datasets import open_dataset
    from prunekit.evaluation.metrics import evaluate
    from prunekit.heads.planner import make_plan
    from prunekit.heads.scoring import score, scoring_data
    from prunekit.models import load_model

    base, fingerprint = demo_weights
    at = _app("prune", demo_data=True, score_clips=64)
    at.selectbox(key="prune_scorer").set_value("fisher").run()
    at.slider(key="prune_sparsity").set_value(0.3).run()
    reached = float(_metrics(at)["Attention sparsity reached"].rstrip("%"))
    assert abs(reached - 30) < 0.5  # the nearest the per-head granularity allows
    at.button(key="prune_apply").click().run()
    assert not at.exception, at.exception
    metrics = _metrics(at)
    paired = [m.value for m in at.markdown if m.value.startswith("Clip by clip against the original:")]
    assert len(paired) == 1 and "95 % CI" in paired[0] and "McNemar p" in paired[0]
    history = at.session_state["_prunekit_history"]
    assert len(history) == 1
    variant = history[0].variant
    # The app's plan and numbers are the library's, computed here independently.
    model, extractor, labels = load_model("demo")
    data = open_dataset("demo")
    plan = make_plan(
        score(model, "fisher", scoring_data(data, extractor, labels, clips=64)), "per-head", "global", 0.3
    )
    assert variant.plan == plan
    pruned = at.session_state["_prunekit_models"][history[0].number]  # history entries hold no model
    accuracy = evaluate(pruned, extractor, labels, data, "test").accuracy
    assert metrics["Pruned accuracy"] == f"{accuracy:.1%}"
    original = evaluate(model, extractor, labels, data, "test").accuracy
    assert metrics["Original accuracy"] == f"{original:.1%}"
    buttons = {b.key for b in at.get("download_button")}
    assert buttons == {"prune_history_csv", "prune_download"}  # the table and the variant (zip)
    at.button(key="prune_report_make").click().run()  # the hand-over report, made on request
    assert not at.exception, at.exception
    assert "prune_report" in {b.key for b in at.get("download_button")}
    report = at.session_state["_prunekit_report"][1].decode()
    assert "What pruning did to" in report and report.count("<audio") == 6
    table = next(d.value for d in at.dataframe if "Variant" in d.value.columns)
    assert list(table["Variant"]) == ["original", variant.name]
    assert table["Accuracy (%)"].tolist() == pytest.approx([100 * original, 100 * accuracy])
    chart = [c.proto.spec for c in at.get("plotly_chart") if "pruned variants" in c.proto.spec]
    assert chart and variant.name in chart[0]
    assert _weights_fingerprint(base) == fingerprint


def test_forced_heads_change_the_plan():
    at = _app("prune", prune_scorer="magnitude", prune_pattern="entire-head", prune_remove={(0, 0), (2, 3)})
    at.slider(key="prune_sparsity").set_value(0.0).run()
    metrics = _metrics(at)
    assert metrics["Heads left"] == "34 / 36"
    assert any("Forced" in c.value for c in at.caption)
    at.button(key="prune_clear").click().run()
    assert _metrics(at)["Heads left"] == "36 / 36"


def test_the_budget_choice_changes_a_global_channel_plan():
    """Separate budgets take half of the Q/K and half of the V/O channels; global magnitude with
    one joint budget takes more of one group than of the other."""
    at = _app("prune", prune_scorer="magnitude")
    assert (
        at.selectbox(key="prune_budget").value == "separate" and not at.selectbox(key="prune_budget").disabled
    )
    separate = at.dataframe[0].value
    at.selectbox(key="prune_budget").set_value("joint").run()
    joint = at.dataframe[0].value
    assert separate["qk_channels_left"].sum() == separate["vo_channels_left"].sum() == 6 * 6 * 32 // 2
    assert joint["qk_channels_left"].sum() != joint["vo_channels_left"].sum()
    at.selectbox(key="prune_threshold").set_value("local").run()
    assert at.selectbox(key="prune_budget").disabled


def test_the_sparsity_slider_stops_at_what_the_pattern_can_reach():
    """Prune and Compare share one rule: the slider's maximum is ``max_sparsity``, and a pattern
    change that lowers the ceiling moves the slider down instead of failing."""
    at = _app("prune", prune_scorer="magnitude", prune_pattern="per-head", prune_threshold="global")
    at.slider(key="prune_sparsity").set_value(0.9).run()
    assert at.slider(key="prune_sparsity").max == 0.96  # each head keeps 1 of 32 Q/K and V/O channels
    at.selectbox(key="prune_pattern").set_value("entire-head").run()
    at.selectbox(key="prune_threshold").set_value("local").run()
    assert not at.exception, at.exception
    slider = at.slider(key="prune_sparsity")
    assert (slider.max, slider.value) == (0.83, 0.83) and "at most 83.3%" in slider.help
    assert not at.warning and any("Type a dataset folder" in i.value for i in at.info)


@pytest.mark.slow
def test_two_sessions_prune_independently_and_the_base_model_is_untouched(real_cache, demo_weights):
    base, fingerprint = demo_weights
    one = _app("prune", demo_data=True, prune_scorer="magnitude", prune_pattern="entire-head")
    two = _app("prune", demo_data=True, prune_scorer="random", prune_pattern="per-head")
    one.slider(key="prune_sparsity").set_value(0.5).run()
    two.slider(key="prune_sparsity").set_value(0.2).run()
    one.button(key="prune_apply").click().run()
    two.button(key="prune_apply").click().run()
    one.button(key="prune_apply").click().run()  # a second variant in the first session only
    assert not one.exception and not two.exception
    names_one = [a.variant.name for a in one.session_state["_prunekit_history"]]
    names_two = [a.variant.name for a in two.session_state["_prunekit_history"]]
    assert names_one == ["magnitude entire-head global 50%"] * 2
    assert names_two == ["random per-head global 20%"]
    assert one.session_state["_prunekit_history"][0].variant.model is not base
    assert _weights_fingerprint(base) == fingerprint


# --- listen ---------------------------------------------------------------------------------
def _wav_bytes(seconds: float, sr: int, channels: int) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    wave = np.stack([0.3 * np.sin(2 * np.pi * 440 * t)] * channels, axis=1).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, wave, sr, format="WAV")
    return buffer.getvalue()


@pytest.mark.slow
def test_listen_page_browses_plays_and_compares(real_cache):
    at = _app("prune", demo_data=True, prune_scorer="magnitude")
    at.button(key="prune_apply").click().run()
    at.switch_page("pages/listen.py").run()
    assert not at.exception, at.exception
    assert len(at.get("audio")) == 1
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert "log-mel" in specs[0] and "Original" in specs[1] and "Pruned" in specs[1]
    at.checkbox(key="listen_diff").check().run()
    shown = at.dataframe[0].value
    assert len(shown) > 0 and (shown["original"] != shown["pruned"]).all()

    at.switch_page("pages/prune.py").run()  # a second variant: the original beside both
    at.slider(key="prune_sparsity").set_value(0.3).run()
    at.button(key="prune_apply").click().run()
    at.switch_page("pages/listen.py").run()
    newest, oldest = at.multiselect(key="listen_variants").options
    at.multiselect(key="listen_variants").select(oldest).run()
    assert not at.exception, at.exception
    top = next(c.proto.spec for c in at.get("plotly_chart") if "Original" in c.proto.spec)
    assert top.count('"type":"bar"') == 3 and "30%" in top and "50%" in top
    both = at.dataframe[0].value
    names = [n.split(": ", 1)[1] for n in (newest, oldest)]
    assert {*names, *(f"{n} right" for n in names)} <= set(both.columns)
    assert (
        both["differ"] == ((both["original"] != both[names[0]]) | (both["original"] != both[names[1]]))
    ).all()
    at.selectbox(key="listen_class").set_value("yes").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="listen_clip").value.startswith("yes #")  # by label and index, not file hash
    truth = [m.value for m in at.markdown if m.value.startswith("True label:")]
    assert truth and truth[0].startswith("True label: **yes**. Original hears **")


def test_listen_page_uploads_good_and_bad_audio():
    at = _app("listen")
    assert any("No pruned variant yet" in i.value for i in at.info)
    at.file_uploader(key="listen_upload").upload("notes.wav", b"this is not audio", "audio/wav").run()
    assert not at.exception, at.exception
    assert any("notes.wav" in e.value and "not audio" in e.value for e in at.error)
    # The page keeps working: a 3 s stereo 44.1 kHz file is read, resampled and windowed.
    at.file_uploader(key="listen_upload").set_value(
        ("long.wav", _wav_bytes(3.0, 44100, 2), "audio/wav")
    ).run()
    assert not at.exception, at.exception
    assert not at.error
    windows = [d.value for d in at.dataframe if "start_s" in d.value.columns]
    assert windows and len(windows[0]) == 5  # 3 s in half-overlapping 1 s windows


# --- experiments ----------------------------------------------------------------------------
@pytest.fixture
def tiny_sweep_args(tiny_model_dir, tiny_speech_commands):
    """Sidebar state for the tiny model and dataset (a sweep on them takes seconds)."""
    return {
        "model_kind": "Local folder",
        "model_ref": str(tiny_model_dir),
        "data_kind": "Speech Commands v2 folder",
        "data_ref": str(tiny_speech_commands),
    }


def test_experiments_page_starts_a_sweep_in_the_background_and_shows_it(tiny_sweep_args):
    import time

    from prunekit.recovery.sweep import sweep_status
    from prunekit.store import cache_dir

    at = _app("experiments", **tiny_sweep_args)
    # The committed demo grid is listed first, with its 8 configurations.
    assert at.selectbox(key="exp_folder").value.startswith("docs/sweep-demo")
    table = at.dataframe[0].value
    assert len(table) == 8 and "original" in table.columns and "dense" not in table.columns
    assert "Fisher, per-head, global" in set(table["configuration"])  # configurations in words
    # 3 seeds: each sparsity has its standard deviation beside it; the dense model has none
    assert {"50%", "50% sd"} <= set(table.columns) and "dense sd" not in table.columns
    assert (table["seeds"] == 3).all() and table["50% sd"].notna().all()
    # The committed tagging-demo grid (five sweeps in one folder) is listed too, as mAP over seeds.
    at.selectbox(key="exp_folder").set_value("docs/tagging-grid (committed tagging-demo grid, mAP)").run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value.set_index("configuration")
    assert len(table) == 8 and table.loc["Fisher, per-head, global", "seeds"] == 3
    assert table.loc["Fisher, per-head, global", "60%"] == pytest.approx(0.7371, abs=1e-4)  # README's 0.7371
    at.text_input(key="exp_name").set_value("tiny-grid")
    at.multiselect(key="exp_scorers").set_value(["magnitude"])
    at.multiselect(key="exp_patterns").set_value(["entire-head"])
    at.multiselect(key="exp_thresholds").set_value(["global"])
    at.number_input(key="exp_steps").set_value(1)
    at.number_input(key="exp_clips").set_value(32)
    at.radio(key="exp_schedule").set_value("Equal steps to a final sparsity")
    at.slider(key="exp_target").set_value(0.3)
    next(b for b in at.button if b.label == "Start the sweep").click().run()
    assert not at.exception, at.exception
    assert any("Started" in s.value for s in at.success), [e.value for e in at.error]
    folder = cache_dir() / "sweeps" / "tiny-grid"
    deadline = time.monotonic() + 300
    while sweep_status(folder)["state"] in ("running", "absent") and time.monotonic() < deadline:
        time.sleep(1)
    assert sweep_status(folder)["state"] == "finished", (folder.parent / "tiny-grid.log").read_text()[-2000:]
    assert json.loads((folder / "sweep.json").read_text())["run"]["schedule"] == [0.3]  # the form's target
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="exp_folder").value == "tiny-grid"
    assert any("Finished" in s.value for s in at.success)
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert "accuracy against attention sparsity" in specs[0] and "removed" in specs[1]
    table = at.dataframe[0].value
    assert list(table["configuration"]) == ["Magnitude, entire-head, global"]
    assert table["60%"].tolist() == ["not reached"]  # one step of a 4-head model stops well short of 60 %


def test_score_maps_offer_log_and_per_layer_scales():
    at = _app("importance")
    assert at.radio(key="imp_scale").options == ["linear", "log", "per layer"]
    linear = at.get("plotly_chart")[0].proto.spec
    at.radio(key="imp_scale").set_value("per layer").run()
    assert not at.exception, at.exception
    per_layer = at.get("plotly_chart")[0].proto.spec
    assert "share of layer max" in per_layer and "share of layer max" not in linear


def test_overview_has_a_glossary():
    at = _app()
    glossary = [e for e in at.expander if e.label == "Words used in this app"]
    assert glossary and "1 = most important" in glossary[0].markdown[0].value


def test_listen_shows_where_the_model_listens_on_an_upload():
    at = _app("listen")
    at.file_uploader(key="listen_upload").set_value(
        ("tone.wav", _wav_bytes(1.0, 16000, 1), "audio/wav")
    ).run()
    at.toggle(key="listen_rollout_True").set_value(True).run()
    assert not at.exception, at.exception
    spec = [c.proto.spec for c in at.get("plotly_chart") if "Attention rollout" in c.proto.spec]
    assert spec and "Original" in spec[0]


@pytest.mark.slow
def test_head_importance_shows_what_a_head_attends_to(real_cache):
    at = _app("importance", demo_data=True)
    at.toggle(key="imp_attention").set_value(True).run()
    assert not at.exception, at.exception
    layer, head = at.selectbox(key="imp_layer").value, at.selectbox(key="imp_head").value
    assert any(f"CLS attention of layer {layer} head {head}" in c.proto.spec for c in at.get("plotly_chart"))
    assert len(at.get("audio")) == 1


def test_experiments_page_reports_a_sweep_that_fails_at_start(tiny_sweep_args, tmp_path):
    """The dataset folder holds no class folders: the sweep fails while loading, and the page
    says so instead of "Started."."""
    empty = tmp_path / "no-classes"
    empty.mkdir()
    at = _app("experiments", **(tiny_sweep_args | {"data_kind": "Folder per class", "data_ref": str(empty)}))
    at.text_input(key="exp_name").set_value("fails-at-start")
    at.number_input(key="exp_steps").set_value(1)
    next(b for b in at.button if b.label == "Start the sweep").click().run()
    assert not at.exception, at.exception
    assert not any("Started" in s.value for s in at.success)
    assert any(
        "failed at start: DatasetError" in e.value and "no-classes has no class folders" in e.value
        for e in at.error
    ), [e.value for e in at.error]
    from prunekit.store import cache_dir

    # The sweep reads the dataset as the sidebar chose it (folder per class), not as it guesses.
    assert (
        json.loads((cache_dir() / "sweeps" / "fails-at-start" / "sweep.json").read_text())["data"]
        == f"folders:{empty}"
    )


def _apply_three_variants():
    """An app script: three applied variants of a tiny model in one session (no dataset needed);
    then the oldest is read back from disk and compared with the model it was."""
    import streamlit as st
    import torch
    from transformers import ASTConfig, ASTForAudioClassification

    from prunekit.heads.pipeline import Variant
    from prunekit.heads.plan import LayerPlan, PruningPlan
    from prunekit.heads.surgery import apply_plan
    from prunekit.ui import current_variants, history, remember, session_folder, with_model

    torch.manual_seed(0)
    model = ASTForAudioClassification(
        ASTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            num_mel_bins=16,
            max_length=24,
            num_labels=3,
        )
    ).eval()
    dense = PruningPlan.dense(model)
    inputs = torch.randn(2, 24, 16)
    if not history():
        logits = []
        for keep in (1, 2, 3):  # variant i keeps heads 0..keep-1 of layer 0
            plan = PruningPlan((LayerPlan.full(keep, 8, 8), *dense.layers[1:]), dense.base)
            pruned = apply_plan(model, plan)
            with torch.no_grad():
                logits.append(pruned(inputs).logits)
            remember(Variant(f"keep {keep}", plan, pruned, "test", None, None), "demo")
        st.session_state["logits"] = logits
        st.session_state["inputs"] = inputs
    folder = session_folder()
    st.session_state["folder"] = folder
    st.session_state["on_disk_before"] = sorted(p.name for p in folder.iterdir())
    oldest = current_variants("demo")[-1]
    st.session_state["history_models"] = [a.variant.model for a in history()]  # all None: memory is apart
    reloaded = with_model(oldest).model
    st.session_state["reloaded_heads"] = reloaded.config.prunekit_structure[0]["heads"]
    with torch.no_grad():
        again = reloaded(st.session_state["inputs"]).logits
    st.session_state["reload_identical"] = bool(torch.equal(again, st.session_state["logits"][0]))
    st.session_state["in_memory"] = list(st.session_state["_prunekit_models"])
    st.session_state["on_disk_after"] = sorted(p.name for p in folder.iterdir())


def test_the_history_keeps_at_most_n_models_in_memory_and_reads_older_ones_back(monkeypatch):
    monkeypatch.setenv("PRUNEKIT_MAX_VARIANTS", "2")
    at = AppTest.from_function(_apply_three_variants, default_timeout=120).run()
    assert not at.exception, at.exception
    assert at.session_state["on_disk_before"] == ["variant-0"]  # only the oldest went to disk
    assert at.session_state["history_models"] == [None, None, None]
    assert at.session_state["reloaded_heads"] == 1  # ... and comes back as the model it was:
    assert at.session_state["reload_identical"]  # the same logits, bit for bit
    # Read back, it is the most recently used: the least recently used (variant 1) made room.
    assert at.session_state["in_memory"] == [2, 0]
    assert at.session_state["on_disk_after"] == ["variant-0", "variant-1"]
    folder = at.session_state["folder"]
    assert folder.parent.name == "sessions" and folder.name.startswith(f"{os.getpid()}-")
    # The session ends: Streamlit frees its state, and the folder goes with it.
    del at
    gc.collect()
    assert not folder.exists()


def test_the_default_keeps_three_models(monkeypatch):
    from prunekit.errors import ConfigurationError
    from prunekit.ui import max_variants

    monkeypatch.delenv("PRUNEKIT_MAX_VARIANTS", raising=False)
    assert max_variants() == 3
    monkeypatch.setenv("PRUNEKIT_MAX_VARIANTS", "0")
    with pytest.raises(
        ConfigurationError, match="PRUNEKIT_MAX_VARIANTS must be a whole number >= 1, got '0'"
    ):
        max_variants()


def test_folders_of_sessions_whose_process_is_gone_are_swept():
    from prunekit.store import cache_dir
    from prunekit.ui import sweep_sessions

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    root = cache_dir() / "sessions"
    dead = root / f"{gone.stdout.strip()}-abc" / "variant-0"
    live = root / f"{os.getpid()}-def" / "variant-0"
    old_style = root / "0123456789abcdef" / "variant-0"  # named before folders carried their pid
    for folder in (dead, live, old_style):
        folder.mkdir(parents=True)
    removed = sweep_sessions()
    assert dead.parent in removed and old_style.parent in removed
    assert not dead.parent.exists() and not old_style.parent.exists() and live.is_dir()
    shutil.rmtree(live.parent)


def test_dense_evaluations_are_bounded():
    from prunekit.ui import _Bounded

    store = _Bounded(2)
    for key in "abc":
        store.put(key, key.upper())
    assert len(store) == 2 and store.get("a") is None and store.get("b") == "B"
    store.put("d", "D")  # "b" was used last, so "c" goes
    assert store.get("c") is None and store.get("b") == "B" and store.get("d") == "D"


def test_every_cache_resource_has_max_entries():
    for path in [REPO / "app.py", *(REPO / "pages").glob("*.py"), *(REPO / "prunekit").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                for deco in node.decorator_list:
                    text = ast.unparse(deco)
                    if "cache_resource" in text:
                        assert "max_entries=" in text, (
                            f"{path.name}: {node.name} has {text} without max_entries"
                        )


def test_a_sample_of_the_split_is_evaluated_and_kept_apart(tiny_sweep_args):
    at = _app("prune", **tiny_sweep_args, eval_clips=2, prune_scorer="magnitude")
    at.button(key="prune_apply").click().run()
    assert not at.exception, at.exception
    (applied,) = at.session_state["_prunekit_history"]
    assert len(applied.variant.evaluation.predictions) == 2  # 2 of the 3 test clips
    assert applied.data.endswith("[2 test clips]")
    at.switch_page("pages/listen.py").run()
    assert any("2 of 2 clips of the test split" in c.value for c in at.caption), [c.value for c in at.caption]
    at.session_state["eval_clips"] = 0  # the whole split: the sample's variant is not compared with it
    at.run()
    assert any("No pruned variant yet" in i.value for i in at.info)


def test_a_large_model_on_a_cpu_is_timed_at_batch_1_only(tiny_sweep_args, monkeypatch):
    from prunekit.evaluation import cost

    monkeypatch.setattr(cost, "LARGE_BATCH_MACS", 0)  # the tiny model counts as large
    at = _app("prune", **tiny_sweep_args, prune_scorer="magnitude")
    at.button(key="prune_apply").click().run()
    assert not at.exception, at.exception
    (applied,) = at.session_state["_prunekit_history"]
    assert "latency_b1_ms" in applied.variant.cost and "latency_b32_ms" not in applied.variant.cost
    assert "Latency, batch 1" in _metrics(at) and "Latency, batch 32" not in _metrics(at)
    assert any("batch 1 only" in c.value for c in at.caption)
    assert any("one clip at a time" in m.value for m in at.success)
