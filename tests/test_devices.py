"""Devices and processes: the device argument is honoured on every entry point, a missing device
is a clear error (never a silent fallback), and data-parallel runs under torchrun (two CPU
processes on gloo) give what one process gives on the same batches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, _tiny_config
from transformers import ASTForAudioClassification

from prunekit import devices
from prunekit.data.datasets import open_dataset
from prunekit.errors import ConfigurationError, DeviceError, PrunekitError
from prunekit.evaluation.metrics import evaluate, predict_logits
from prunekit.heads.pipeline import prune_and_evaluate
from prunekit.heads.planner import make_plan
from prunekit.heads.scoring import score, score_split, scoring_data
from prunekit.models import load_model
from prunekit.recovery.iterative import IterativeConfig, prune_iteratively
from prunekit.recovery.lora import RecoveryConfig, recover_on
from prunekit.recovery.sweep import TIMING_COLUMNS
from prunekit.tokens.finetune import TokenFinetuneConfig, finetune_tokens_on
from prunekit.tokens.patches import block_scores, cluster_drop
from prunekit.tokens.topk import prune_tokens, trace_tokens


@pytest.fixture
def no_gpu(monkeypatch):
    """A machine without CUDA or MPS, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


# --- the device argument ---------------------------------------------------------------------------
def test_auto_is_the_cpu_without_a_gpu_and_a_missing_device_is_an_error(no_gpu):
    assert devices.resolve_device("auto") == devices.resolve_device(None) == torch.device("cpu")
    assert devices.resolve_device("CPU") == torch.device("cpu")
    for asked in ("cuda", "cuda:1", "mps"):
        with pytest.raises(DeviceError, match=f"Device '{asked}' was asked for") as error:
            devices.resolve_device(asked)
        assert isinstance(error.value, ConfigurationError) and isinstance(error.value, PrunekitError)
    with pytest.raises(DeviceError, match=r"Unknown device 'tpu'; choose auto"):
        devices.resolve_device("tpu")


def test_a_gpu_index_the_machine_lacks_names_the_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert devices.resolve_device("auto") == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match=r"'cuda:2' was asked for, but this machine has 2 GPU\(s\): 0..1"):
        devices.resolve_device("cuda:2")


def test_a_model_on_the_meta_device_is_refused_by_name():
    with torch.device("meta"):
        ghost = ASTForAudioClassification(_tiny_config())
    features = torch.zeros(2, 24, 16)
    for call in (
        lambda: score(ghost, "magnitude"),
        lambda: predict_logits(ghost, features),
        lambda: devices.place(ghost, "cpu"),
    ):
        with pytest.raises(DeviceError, match="'meta' device: it has shapes but no weights"):
            call()


def test_an_unknown_precision_is_refused(tiny_model):
    with pytest.raises(DeviceError, match=r"Unknown precision 'fp16'; choose one of fp32, bf16"):
        predict_logits(tiny_model, torch.zeros(1, 24, 16), precision="fp16")


def test_the_cli_refuses_a_missing_device_with_exit_2(run_main, tiny_model_dir, no_gpu, tmp_path):
    out = run_main("score", "--model", tiny_model_dir, "--scorer", "magnitude", "--device", "cuda")
    assert out.returncode == 2
    assert (
        out.stderr.startswith("error: Device 'cuda' was asked for, but torch")
        and "Traceback" not in out.stderr
    )
    ok = run_main("score", "--model", tiny_model_dir, "--scorer", "magnitude", "--device", "cpu")
    assert ok.returncode == 0, ok.stderr


def test_the_cli_evaluates_in_bf16(run_main, tiny_model_dir, tiny_speech_commands):
    args = ["evaluate", "--model", tiny_model_dir, "--data", tiny_speech_commands, "--repeats", "1"]
    out = run_main(*args, "--precision", "bf16", "--device", "cpu")
    assert out.returncode == 0 and "accuracy" in out.stdout, out.stderr
    refused = run_main(*args, "--precision", "fp16")
    assert refused.returncode == 2 and "invalid choice: 'fp16'" in refused.stderr


def test_bf16_autocast_changes_the_logits_a_little(tiny_model):
    x = torch.randn(4, 24, 16, generator=torch.Generator().manual_seed(0))
    fp32 = predict_logits(tiny_model, x)
    bf16 = predict_logits(tiny_model, x, precision="bf16")
    assert bf16.dtype == torch.float32  # logits come back in float32 whatever the compute precision
    assert 0 < (fp32 - bf16).abs().max() < 0.1


def test_every_entry_point_takes_device_cpu(tiny_model, tiny_model_dir, tiny_speech_commands):
    """device="cpu" is accepted everywhere and gives what the model's own device (None) gives."""
    model, extractor, labels = load_model(tiny_model_dir)
    dataset = open_dataset(str(tiny_speech_commands))
    data = scoring_data(dataset, extractor, labels, "train", clips=100)
    for scorer in ("fisher", "fisher-gate", "magnitude"):
        a = score(model, scorer, data, batch_size=2, cache=False, device="cpu").frame
        b = score(model, scorer, data, batch_size=2, cache=False).frame
        pd.testing.assert_frame_equal(a, b)
    table = score_split(
        model, extractor, labels, "fisher", dataset, split="train", batch_size=2, device="cpu"
    )
    logits = predict_logits(model, data.features, device="cpu")
    assert logits.shape == (6, 3) and devices.model_device(model) == torch.device("cpu")
    assert evaluate(model, extractor, labels, dataset, "test", device="cpu").summary["clips"].iloc[0] == 3
    plan = make_plan(table, "entire-head", "local", 0.5)
    variant = prune_and_evaluate(model, extractor, labels, plan, dataset, "test", repeats=1, device="cpu")
    assert variant.evaluation.summary["clips"].iloc[0] == 3
    config = RecoveryConfig(batch_size=3, lr=1e-3)
    merged, history = recover_on(model, data, data, config=config, device="cpu", precision="bf16")
    assert len(history) == 2 and devices.model_device(merged) == torch.device("cpu")
    run = IterativeConfig(schedule=(0.3,), recovery=config, latency_repeats=1, batch_size=2)
    state = prune_iteratively(load_model(tiny_model_dir), dataset, run, device="cpu")
    assert [r["step"] for r in state.steps] == [0, 1]
    tokens = prune_tokens(model, 0.5, (1,))
    tuned, _ = finetune_tokens_on(tokens, data, data, config=TokenFinetuneConfig(epochs=1), device="cpu")
    assert trace_tokens(tuned, data.features[:2], device="cpu").logits.shape == (2, 3)
    assert set(block_scores(tokens, data.features, device="cpu").scores) == {0, 1}
    ranks = torch.zeros(6, 4, dtype=torch.long)  # 4 patches of the tiny model
    assert 0 <= cluster_drop(model, data.features, data.targets, ranks, 1, [1], device="cpu") <= 1


def test_a_single_process_has_nothing_to_combine():
    assert devices.processes() == devices.Processes(0, 1) and devices.processes().main
    x = torch.ones(3)
    devices.sum_across([x])
    assert x.tolist() == [1.0, 1.0, 1.0] and devices.gather_across([x]) == [[x]]
    assert list(devices.Processes(1, 2).mine(5)) == [1, 3]


def test_only_rank_0_draws_a_progress_bar(monkeypatch, capsys):
    from prunekit import progress as progress_module

    for rank, drawn in ((0, True), (1, False)):
        monkeypatch.setattr(progress_module, "processes", lambda rank=rank: devices.Processes(rank, 2))
        bar, progress = progress_module.console_bar(f"rank {rank} working")
        progress(3, 4)
        bar.close()
        assert (f"rank {rank} working" in capsys.readouterr().err) is drawn


# --- several processes (torchrun, gloo on the CPU) ---------------------------------------------------
def _launch(nproc: int, *args, cache: Path, wait: bool = True):
    """``torchrun --nproc_per_node nproc ARGS`` (nproc 1: plain python), one thread per process."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PRUNEKIT_CACHE=str(cache))
    env["PYTHONPATH"] = str(REPO)
    head = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    head += ["--standalone"]
    command = [*head, *map(str, args)] if nproc > 1 else [sys.executable, *map(str, args)]
    if not wait:
        return subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-12000:]
    return done


@pytest.mark.slow  # torchrun starts 2-3 interpreters (torch + transformers imports each)
def test_two_processes_score_like_one(tiny_model_dir, tiny_speech_commands, tmp_path):
    """The README's command: torchrun's 2 ranks each score a share of the batches; the table is
    the single-process one (3 batches: rank 0 takes two, rank 1 one)."""
    args = ["--model", tiny_model_dir, "--data", tiny_speech_commands, "--score-split", "train"]
    args += ["--scorer", "fisher", "--batch-size", "2", "--device", "cpu"]
    one = _launch(1, "-m", "prunekit", "score", *args, "--out", tmp_path / "one.csv", cache=tmp_path / "c1")
    two = _launch(2, "-m", "prunekit", "score", *args, "--out", tmp_path / "two.csv", cache=tmp_path / "c2")
    assert two.stdout.count("score table written to") == 1  # rank 0 alone reports and writes
    a, b = (pd.read_csv(tmp_path / f"{n}.csv") for n in ("one", "two"))
    pd.testing.assert_frame_equal(a.drop(columns="score"), b.drop(columns="score"))
    np.testing.assert_allclose(b["score"], a["score"], rtol=1e-6, atol=0)
    assert one.stdout.splitlines()[0] == two.stdout.splitlines()[0]


@pytest.mark.slow  # torchrun starts 2-3 interpreters (torch + transformers imports each)
def test_two_processes_score_evaluate_and_recover_like_one(tiny_model_dir, tiny_speech_commands, tmp_path):
    job = REPO / "tests" / "data" / "distributed_job.py"
    for n in (1, 2):
        _launch(n, job, tiny_model_dir, tiny_speech_commands, tmp_path / f"{n}.pt", cache=tmp_path / f"c{n}")
    one, two = (torch.load(tmp_path / f"{n}.pt", weights_only=False) for n in (1, 2))
    assert (one["world"], two["world"]) == (1, 2)
    for scorer in ("fisher", "fisher-sample", "fisher-gate", "taylor"):
        np.testing.assert_allclose(two[scorer], one[scorer], rtol=1e-6, atol=1e-12, err_msg=scorer)
    torch.testing.assert_close(two["logits"], one["logits"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(two["history"], one["history"], rtol=1e-5, equal_nan=True)
    for name, weight in one["recovered"].items():
        torch.testing.assert_close(two["recovered"][name], weight, rtol=0, atol=1e-5, msg=name)
    # Stopped after its 2nd step by the last rank alone: rank 0 (which saved) stopped there too.
    assert (one["stopped"], one["stopped_steps"]) == (True, 2) == (two["stopped"], two["stopped_steps"])


SWEEP = ["--scorers", "fisher", "magnitude", "--patterns", "per-head", "--thresholds", "global"]
SWEEP += ["--steps", "3", "--fraction", "0.2", "--train-clips", "4", "--val-clips", "all"]
SWEEP += ["--batch-size", "2", "--repeats", "1", "--device", "cpu"]


def _results(out: Path) -> pd.DataFrame:
    frame = pd.read_csv(out / "results.csv")
    return frame.drop(columns=[c for c in TIMING_COLUMNS if c in frame])


@pytest.mark.slow  # torchrun starts 2-3 interpreters (torch + transformers imports each)
def test_a_two_process_sweep_equals_one_and_resumes_after_a_kill(
    tiny_model_dir, tiny_speech_commands, tmp_path
):
    """Configurations are spread over the ranks (each written by one process); the results are
    the single-process sweep's; a launch killed mid-way (SIGKILL to every process) continues."""
    common = ["-m", "prunekit", "sweep", "--model", tiny_model_dir, "--data", tiny_speech_commands, *SWEEP]
    _launch(1, *common, "--out", tmp_path / "one", cache=tmp_path / "c")
    two = _launch(2, *common, "--out", tmp_path / "two", cache=tmp_path / "c")
    assert two.stdout.count("written to") == 1
    pd.testing.assert_frame_equal(_results(tmp_path / "two"), _results(tmp_path / "one"))
    status = json.loads((tmp_path / "two" / "status.json").read_text())
    assert status["state"] == "finished" and status["configs_done"] == 2

    killed = tmp_path / "killed"
    launch = _launch(2, *common, "--out", killed, cache=tmp_path / "c", wait=False)
    states = [killed / "runs" / f"{s}_per-head_global_seed0" / "state.json" for s in ("fisher", "magnitude")]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(
        p.is_file() and len(json.loads(p.read_text())["steps"]) >= 2 for p in states
    ):
        time.sleep(0.05)
    os.killpg(launch.pid, signal.SIGKILL)
    launch.wait()
    saved = [len(json.loads(p.read_text())["steps"]) if p.is_file() else 0 for p in states]
    assert max(saved) >= 2 and min(saved) < 4, f"killed too late to test a resume: steps saved {saved}"
    _launch(2, *common, "--out", killed, cache=tmp_path / "c")
    pd.testing.assert_frame_equal(_results(killed), _results(tmp_path / "one"))


def test_the_app_sidebar_offers_the_devices_and_shows_the_one_in_use(no_gpu):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state["data_kind"] = "Folder per class"  # no demo set generated
    at.run()
    assert not at.exception, at.exception
    choice = at.sidebar.selectbox(key="device")
    assert choice.options == ["auto", "cpu"] and choice.value == "auto"
    assert "Computing on **cpu**" in [c.value for c in at.sidebar.caption]
    chosen = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)  # a rerun would run the page alone
    chosen.session_state["data_kind"], chosen.session_state["device"] = "Folder per class", "cpu"
    chosen.run()
    assert not chosen.exception and chosen.sidebar.selectbox(key="device").value == "cpu"
    assert "Computing on **cpu**" in [c.value for c in chosen.sidebar.caption]
