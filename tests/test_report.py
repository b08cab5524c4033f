"""The hand-over report: one self-contained HTML page on a pruned model (CLI, library, chromium)."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from prunekit.evaluation.metrics import classification_metrics
from prunekit.report.handover import ReportClip, choose_clips, render_html, structure_rows


@pytest.fixture
def pruned_dir(run_main, tiny_model_dir, tiny_speech_commands, tmp_path):
    out = tmp_path / "pruned"
    args = ["prune", "--model", tiny_model_dir, "--data", tiny_speech_commands, "--scorer", "magnitude"]
    result = run_main(*args, "--sparsity", "0.5", "--out", out, "--repeats", "1")
    assert result.returncode == 0, result.stderr
    return out


def _report(run_main, pruned_dir, data, tmp_path):
    out = tmp_path / "report.html"
    result = run_main("report", "--model", pruned_dir, "--data", data, "--out", out, "--repeats", "2")
    assert result.returncode == 0, result.stderr
    return out


def test_the_cli_writes_a_self_contained_page_from_the_folder_alone(
    run_main, pruned_dir, tiny_speech_commands, tmp_path
):
    out = _report(run_main, pruned_dir, tiny_speech_commands, tmp_path)
    text = out.read_text()
    # The 3 test clips, each playable from inside the file: a WAV the reader decodes.
    sources = re.findall(r'<audio controls preload="none" src="data:audio/wav;base64,([^"]+)"', text)
    assert len(sources) == 3
    wave, sr = sf.read(io.BytesIO(base64.b64decode(sources[0])))
    assert sr == 16000 and len(wave) == 4000  # the fixture's 0.25 s tones
    assert text.count("<svg") == 2  # the structure map and the per-class changes
    assert "<script" not in text and not re.search(r'(src|href)="https?:', text)  # offline, no code
    assert "magnitude per-head global 50%" in text  # the plan it was pruned with, from plan.json
    assert "CI" in text and "McNemar" in text  # the paired interval of the accuracy difference
    # It says which model it compares with: the one the folder records.
    assert str(tiny_speech_commands.parent / "tiny-model") in text
    # An existing report is not replaced without --overwrite.
    again = run_main("report", "--model", pruned_dir, "--data", tiny_speech_commands, "--out", out)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_a_folder_that_does_not_say_where_it_came_from_needs_original(
    run_main, tiny_model_dir, tiny_speech_commands, tmp_path
):
    result = run_main(
        "report", "--model", tiny_model_dir, "--data", tiny_speech_commands, "--out", tmp_path / "r.html"
    )
    assert result.returncode == 2 and "--original" in result.stderr
    assert not (tmp_path / "r.html").exists()


def test_choose_clips_takes_losses_a_win_then_agreement():
    frame = pd.DataFrame(
        {
            "differ": [False, True, True, False, False, True, False, False],
            "dense_correct": [True, True, False, True, True, True, False, True],
            "pruned_correct": [True, False, True, True, True, False, False, True],
        }
    )
    picked = choose_clips(frame, 6, seed=0)
    assert len(picked) == len(set(picked)) == 6
    assert set(picked[:2]) == {1, 5}  # the pruned model lost these (a third of 6)
    assert picked[2] == 2  # it won this one
    assert set(picked[3:]) <= {0, 3, 4, 7}  # both right
    assert choose_clips(frame, 6, seed=0) == picked  # seeded
    assert len(choose_clips(frame.iloc[:2], 6)) == 2  # fewer clips than asked: all of them


def _evaluation(labels, logits, truth):
    return classification_metrics(torch.tensor(logits, dtype=torch.float32), np.array(truth), labels)


def test_text_from_files_is_escaped(tiny_model):
    labels = ["<script>alert(1)</script>", "b&c", "plain"]
    dense = _evaluation(labels, [[3, 0, 0], [0, 3, 0], [0, 0, 3]], [0, 1, 2])
    pruned = _evaluation(labels, [[3, 0, 0], [3, 0, 0], [0, 0, 3]], [0, 1, 2])
    cost = pd.DataFrame(
        {"parameters": [100, 60], "macs_per_clip": [10, 6], "latency_b32_ms": [2.0, 1.5]}
        | {"latency_b32_ratio": [1, 0.75], "latency_b32_ratio_low": [1, 0.7]}
        | {"latency_b32_ratio_high": [1, 0.8], "latency_b32_rounds": [5, 5]},
        index=["dense", "pruned"],
    )
    clip = ReportClip(
        '<img src=x onerror="x()">.wav', (labels[0],), b"RIFF", ((labels[0], 0.9),), ((labels[1], 0.5),)
    )
    text = render_html(
        original_name="<b>orig</b>",
        pruned_name='"><script>',
        data_name="d",
        dense=dense,
        evaluation=pruned,
        cost=cost,
        structure=structure_rows(tiny_model, tiny_model),
        clips=[clip],
    )
    assert "<script" not in text and "<img" not in text and "<b>orig" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "b&amp;c" in text
    assert "40% smaller" in text and "runs 25% faster" in text


@pytest.mark.slow  # chromium
def test_the_report_opens_offline_in_chromium_with_playable_audio(
    run_main, pruned_dir, tiny_speech_commands, tmp_path
):
    from prunekit.ui.driver import browser_page

    out = _report(run_main, pruned_dir, tiny_speech_commands, tmp_path)
    with browser_page() as page:
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(out.as_uri())
        assert page.locator("audio").count() == 3 and page.locator("svg").count() == 2
        duration = page.evaluate(
            """() => new Promise((done, fail) => {
                const a = document.querySelector('audio');
                a.addEventListener('loadedmetadata', () => done(a.duration));
                a.addEventListener('error', () => fail('audio error'));
                a.load();
            })"""
        )
        assert duration == pytest.approx(0.25, abs=0.01)
        assert page.get_by_text("What pruning did to").count() == 1
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
