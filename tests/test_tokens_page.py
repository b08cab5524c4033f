"""The Tokens page, headless (AppTest): settings, evaluation with the head variants' axes, a clip's
surviving patches, the patch analysis, and bad settings as a message."""

import numpy as np
import pytest
import torch
from conftest import REPO
from streamlit.testing.v1 import AppTest
from transformers import ASTFeatureExtractor, ASTForAudioClassification


@pytest.fixture
def model_dir(tmp_path, tiny_config):
    """A tiny AST (3 blocks, 32 mels x 64 frames: 10 patches) saved with its extractor."""
    torch.manual_seed(0)
    model = ASTForAudioClassification(tiny_config(max_length=64, num_mel_bins=32, num_hidden_layers=3))
    out = tmp_path / "tiny"
    model.save_pretrained(out)
    ASTFeatureExtractor(num_mel_bins=32, max_length=64).save_pretrained(out)
    return out


def _page(model_dir, data_dir, **state) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
    for key, value in {"model_kind": "Local folder", "model_ref": str(model_dir),
                       "data_kind": "Speech Commands v2 folder", "data_ref": str(data_dir), **state}.items():
        at.session_state[key] = value
    at.run()
    at.switch_page("pages/tokens.py").run()
    assert not at.exception, at.exception
    return at


def test_tokens_page_evaluates_traces_a_clip_and_analyses_patches(model_dir, tiny_speech_commands):
    at = _page(model_dir, tiny_speech_commands)
    assert at.slider(key="tok_keep").value == 0.7
    assert at.multiselect(key="tok_blocks").value == [0, 1, 2]
    assert any("Patch tokens per block: 10 → 7 → 5 → 4" in c.value for c in at.caption)
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("after block 2: 4 of 10 patches" in s for s in specs)  # the clip tab's survivor maps
    assert len(at.get("audio")) == 1

    at.button(key="tok_eval").click().run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["MACs per clip, token-pruned"].endswith(" M")
    assert float(metrics["MACs per clip, token-pruned"][:-2]) < float(metrics["MACs per clip, original"][:-2])
    assert next(m for m in at.metric if m.label == "MACs per clip, token-pruned").delta.startswith("-")
    assert any("accuracy against MACs" in c.proto.spec for c in at.get("plotly_chart"))

    at.slider(key="tok_keep").set_value(0.3).run()
    at.selectbox(key="tok_rule").set_value("intensity").run()
    assert any("10 → 3 → 1 → 1" in c.value for c in at.caption)
    at.number_input(key="tok_patch_clips").set_value(16).run()
    at.button(key="tok_analyse").click().run()
    assert not at.exception, at.exception
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("patch intensity: 5 k-means clusters" in s for s in specs)
    assert any("CLS attention vs cluster rank" in s for s in specs)
    assert not at.error


def test_no_drop_block_is_a_message(model_dir, tiny_speech_commands):
    at = _page(model_dir, tiny_speech_commands)
    at.multiselect(key="tok_blocks").set_value([]).run()
    assert not at.exception, at.exception
    assert any("No drop blocks given" in e.value for e in at.error)
    assert not at.get("plotly_chart")


def test_the_shared_base_model_is_not_modified(model_dir, tiny_speech_commands):
    from prunekit.ui import cached_model

    at = _page(model_dir, tiny_speech_commands)
    at.button(key="tok_eval").click().run()
    model = cached_model(str(model_dir)).model
    assert type(model) is ASTForAudioClassification and not hasattr(model.config, "prunekit_tokens")


def test_own_audio_waits_for_a_file_and_a_recording_is_traced(model_dir, tiny_speech_commands):
    """AppTest has no setter for the uploader: the page must wait quietly, and the function it
    calls with the uploaded waveform is checked directly."""
    from prunekit.models import load_model
    from prunekit.models.token_rules import TokenPruning
    from prunekit.ui.tokens import trace_clip

    at = _page(model_dir, tiny_speech_commands)
    at.radio(key="tok_source").set_value("your own audio").run()
    assert not at.exception, at.exception
    assert not at.error and not any("after block" in c.proto.spec for c in at.get("plotly_chart"))
    wave = (0.3 * np.sin(np.linspace(0, 2000, 24000))).astype(np.float32)  # 1.5 s: longer than the window
    trace = trace_clip(load_model(model_dir), TokenPruning(0.7, (0, 1, 2)), wave)
    assert [len(k) for k in trace.kept.values()] == [7, 5, 4] and trace.features.shape == (64, 32)
    assert list(trace.top) == ["Original", "Token-pruned"] and len(trace.top["Original"]) == 3
