"""Sweeps: resuming after a kill gives the same results as an uninterrupted run, the status file
tells a poller where a sweep stands, the interpolated table, and the `sweep` command."""

import dataclasses
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from filelock import FileLock

from prunekit.cli import main
from prunekit.errors import OutputExistsError, SweepError
from prunekit.recovery.iterative import IterativeConfig
from prunekit.recovery.lora import RecoveryConfig
from prunekit.recovery.sweep import (
    RESULTS_FILE,
    STATUS_FILE,
    TABLE_FILE,
    TIMING_COLUMNS,
    SweepConfig,
    interpolated_table,
    load_results,
    run_sweep,
    sweep_status,
    table_markdown,
)
from prunekit.report import figures

RECOVERY = RecoveryConfig(train_clips=4, validation_clips=None, batch_size=2, lr=1e-3)
RUN = IterativeConfig(schedule=(0.2, 0.45), recovery=RECOVERY, latency_repeats=1)


@pytest.fixture
def config(tiny_model_dir, tiny_speech_commands):
    return SweepConfig(
        model=str(tiny_model_dir),
        data=str(tiny_speech_commands),
        scorers=("fisher",),
        patterns=("per-head", "entire-head"),
        thresholds=("global",),
        run=RUN,
    )


class Killed(Exception):
    pass


def _deterministic(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=list(TIMING_COLUMNS))


def test_a_sweep_the_user_stopped_says_so(config, tmp_path):
    def interrupt(name, record):
        raise KeyboardInterrupt  # what Ctrl-C and the page's Stop button (SIGINT) raise

    with pytest.raises(KeyboardInterrupt):
        run_sweep(config, tmp_path / "s", on_step=interrupt)
    status = sweep_status(tmp_path / "s")
    assert status["state"] == "stopped"
    assert (
        status["error"] == "stopped by you; run the same sweep again to continue from the last finished step"
    )


def test_a_killed_sweep_resumes_to_the_same_results(config, tmp_path):
    whole = run_sweep(config, tmp_path / "whole")

    def kill_at_second_config_step_1(name, record):
        if name.startswith("fisher_entire-head") and record["step"] == 1:
            raise Killed

    with pytest.raises(Killed):
        run_sweep(config, tmp_path / "killed", on_step=kill_at_second_config_step_1)
    stopped = sweep_status(tmp_path / "killed")
    assert stopped["state"] == "failed" and "Killed" in stopped["error"]
    assert (stopped["configs_done"], stopped["steps_done"]) == (1, 5)  # config 1: steps 0-2; config 2: 0-1
    assert len(list((tmp_path / "killed" / "runs" / "fisher_entire-head_global_seed0").glob("step-*"))) == 1

    seen = []
    resumed = run_sweep(config, tmp_path / "killed", on_step=lambda name, r: seen.append((name, r["step"])))
    assert seen == [("fisher_entire-head_global_seed0", 2)]  # the finished config is skipped
    pd.testing.assert_frame_equal(_deterministic(resumed), _deterministic(whole))
    for name in (RESULTS_FILE, TABLE_FILE):
        a, b = (pd.read_csv(tmp_path / d / name) for d in ("whole", "killed"))
        pd.testing.assert_frame_equal(
            a.drop(columns=[c for c in TIMING_COLUMNS if c in a]),
            b.drop(columns=[c for c in TIMING_COLUMNS if c in b]),
        )
    assert list(whole["scorer"].unique()) == ["fisher"] and len(whole) == 2 * 3

    status = sweep_status(tmp_path / "killed")
    assert status["state"] == "finished" and status["configs_done"] == status["configs_total"] == 2
    assert status["fraction"] == 1.0 and status["current"] is None
    structure = load_results(tmp_path / "killed")[1]
    assert len(structure) == 2 * 3 * 2 * 4  # configs x steps x layers x heads


def test_a_folder_holding_another_sweep_is_refused(config, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="holds no sweep"):
        run_sweep(config, tmp_path / "other", overwrite=True)
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps(dataclasses.replace(config, seeds=(1,)).to_dict()))
    with pytest.raises(SweepError, match=r"holds another sweep.*'seeds': \(\[1\], \[0\]\)"):
        run_sweep(config, out)
    with FileLock(f"{out}.lock"), pytest.raises(SweepError, match="Another sweep is running"):
        run_sweep(config, out)  # e.g. the app's button pressed twice


def test_a_killed_process_reads_as_stopped(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    status = {"state": "running", "pid": child.pid, "steps_done": 3, "steps_total": 12}
    (tmp_path / STATUS_FILE).write_text(json.dumps(status))
    assert sweep_status(tmp_path)["state"] == "stopped"
    assert sweep_status(tmp_path)["fraction"] == 0.25
    (tmp_path / STATUS_FILE).write_text(json.dumps({**status, "pid": os.getpid()}))
    assert sweep_status(tmp_path)["state"] == "running"
    assert sweep_status(tmp_path / "nowhere")["state"] == "absent"


def test_progress_moves_within_a_step_and_gives_the_time_left(tmp_path):
    from prunekit.recovery.sweep import PHASE_WEIGHTS, STATE_FILE, SWEEP_RUN, SweepConfig, _Status, run_name

    config = SweepConfig(scorers=("fisher",), patterns=("per-head",), thresholds=("global",))
    status = _Status(tmp_path, config)  # this process: "running"
    total = len(SWEEP_RUN.schedule) + 1
    status.update(current="x", step=0, stage="evaluating", stage_done=1, stage_total=2)
    seen = [sweep_status(tmp_path)["fraction"]]
    status.update(stage="measuring", stage_done=0, stage_total=1)
    seen.append(sweep_status(tmp_path)["fraction"])
    saved = tmp_path / "runs" / run_name(config.runs()[0]) / STATE_FILE  # steps are counted from these
    saved.parent.mkdir(parents=True)
    saved.write_text(json.dumps({"steps": [{"step": 0}]}))
    status.step_done("x", 0)
    seen.append(sweep_status(tmp_path)["fraction"])
    for stage in ("scoring", "evaluating", "recovering"):
        for done in (2, 5):
            status.update(stage=stage, stage_done=done, stage_total=10)
            seen.append(sweep_status(tmp_path)["fraction"])
    status.update(stage="evaluating", stage_done=10, stage_total=10)  # after the recovery
    seen.append(sweep_status(tmp_path)["fraction"])
    assert seen == sorted(seen) and len(set(seen)) == len(seen), seen
    assert seen[0] == pytest.approx(0.5 * 3.75 / (3.75 + 1.0) / total)
    assert seen[2] == pytest.approx(1 / total)
    weights = [PHASE_WEIGHTS[p] for p in ("scoring", "evaluating", "recovering", "evaluating", "measuring")]
    assert seen[-1] == pytest.approx((1 + sum(weights[:4]) / sum(weights)) / total)
    assert seen[-1] < 2 / total

    # The time left extrapolates this process's pace: a quarter done in 100 s leaves 300 s.
    record = json.loads((tmp_path / STATUS_FILE).read_text())
    now = datetime.now(UTC)
    started, updated = (now - timedelta(seconds=100)).isoformat(), now.isoformat()
    record |= {"started": started, "updated": updated, "steps_total": 12, "steps_done": 3}
    record |= {"step_fraction": 0.0, "steps_done_at_start": 0}
    (tmp_path / STATUS_FILE).write_text(json.dumps(record))
    assert sweep_status(tmp_path)["eta_seconds"] == pytest.approx(300, rel=0.02)
    # Steps saved by an earlier run do not count towards the pace.
    (tmp_path / STATUS_FILE).write_text(json.dumps({**record, "steps_done": 6, "steps_done_at_start": 3}))
    assert sweep_status(tmp_path)["eta_seconds"] == pytest.approx(100 * 6 / 3, rel=0.02)
    (tmp_path / STATUS_FILE).write_text(json.dumps({**record, "steps_done_at_start": 3}))
    assert sweep_status(tmp_path)["eta_seconds"] is None  # no pace yet


def test_interpolated_table():
    def run(scorer, seed, sparsities, accuracies):
        return pd.DataFrame(
            {
                "scorer": scorer,
                "pattern": "per-head",
                "threshold": "global",
                "seed": seed,
                "step": range(len(sparsities)),
                "attention_sparsity": sparsities,
                "accuracy_after": accuracies,
            }
        )

    results = pd.concat(
        [
            run("fisher", 0, [0.0, 0.2, 0.4, 0.6], [0.9, 0.8, 0.7, 0.6]),
            run("fisher", 1, [0.0, 0.2, 0.4, 0.6], [0.9, 0.6, 0.5, 0.4]),
            run("magnitude", 0, [0.0, 0.25, 0.25, 0.5], [0.9, 0.5, 0.7, 0.3]),  # 25 % twice: the first counts
            run("taylor", 0, [0.0, 0.3, 0.594], [0.9, 0.8, 0.6]),  # stops 0.6 points short of 60 %
            run("random", 0, [0.0, 0.3, 0.585], [0.9, 0.8, 0.6]),  # 1.5 points short
        ],
        ignore_index=True,
    )
    table = interpolated_table(results)
    assert list(table.columns) == [
        "pattern",
        "threshold",
        "scorer",
        "seeds",
        "dense",
        "10%",
        "20%",
        "30%",
        "40%",
        "50%",
        "60%",
    ]
    fisher, magnitude = table.iloc[0], table.iloc[1]
    assert fisher["seeds"] == 2 and fisher["dense"] == pytest.approx(90)
    assert fisher[["10%", "20%", "30%", "60%"]].tolist() == pytest.approx([80, 70, 65, 50])  # mean of 2 seeds
    assert magnitude[["10%", "20%", "30%", "50%"]].tolist() == pytest.approx([74, 58, 46, 30])
    assert np.isnan(magnitude["60%"])  # past the last step: not extrapolated
    taylor, random = table.iloc[2], table.iloc[3]
    assert taylor["60%"] == pytest.approx(60)  # within a point: read at the last step
    assert np.isnan(random["60%"]) and random["50%"] == pytest.approx(80 - 20 * 20 / 28.5)
    row = "| PH | G | Fisher | 2 | 90.00 | 80.00 | 70.00 | 65.00 | 60.00 | 55.00 | 50.00 |"  # seeds shown
    assert table_markdown(table).splitlines()[2] == row

    spread = interpolated_table(results, spread=True)  # sample standard deviation over seeds
    assert list(spread.columns[4:8]) == ["dense", "dense sd", "10%", "10% sd"]
    fisher, magnitude = spread.iloc[0], spread.iloc[1]
    assert fisher["dense sd"] == pytest.approx(0)
    assert fisher["10% sd"] == pytest.approx(np.std([85, 75], ddof=1))  # seeds at 10 %: 85 and 75
    assert fisher["60% sd"] == pytest.approx(np.std([60, 40], ddof=1))
    assert np.isnan(magnitude["10% sd"])  # one seed: no spread
    lines = table_markdown(spread).splitlines()
    assert lines[0].startswith("| scheme | thr | score | seeds | dense | 10% |")
    assert lines[2] == (
        "| PH | G | Fisher | 2 | 90.00 ± 0.00 | 80.00 ± 7.07 | 70.00 ± 14.14 | 65.00 ± 14.14 "
        "| 60.00 ± 14.14 | 55.00 ± 14.14 | 50.00 ± 14.14 |"
    )
    assert lines[3].startswith("| PH | G | Mag | 1 | 90.00 | 74.00 |")  # one seed: the mean alone


def test_sweep_command(tiny_model_dir, tiny_speech_commands, tmp_path, capsys, run_cli):
    """One real subprocess, as the app starts it; the bad inputs in-process (imports cost 5-10 s)."""
    args = [
        "sweep",
        "--model",
        tiny_model_dir,
        "--data",
        tiny_speech_commands,
        "--out",
        tmp_path / "s",
        "--scorers",
        "magnitude",
        "--patterns",
        "entire-head",
        "--thresholds",
        "local",
        "--steps",
        "1",
        "--fraction",
        "0.25",
        "--train-clips",
        "4",
        "--val-clips",
        "all",
        "--batch-size",
        "2",
        "--budget",
        "joint",
        "--repeats",
        "1",
    ]
    out = run_cli(*args, cache=tmp_path / "c")
    assert out.returncode == 0, out.stderr
    assert "| EH | L | Mag |" in out.stdout and "results.csv" in out.stdout
    results = pd.read_csv(tmp_path / "s" / RESULTS_FILE)
    assert list(results["attention_sparsity"]) == [0.0, 0.25]
    assert json.loads((tmp_path / "s" / STATUS_FILE).read_text())["state"] == "finished"
    assert json.loads((tmp_path / "s" / "sweep.json").read_text())["run"]["budget"] == "joint"
    assert (tmp_path / "s" / "accuracy.html").stat().st_size > 0

    assert main([*map(str, args[:-1]), "2"]) == 2  # --repeats 2: another sweep
    assert "holds another sweep" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # argparse rejects it before anything runs
        main(["sweep", "--out", str(tmp_path / "t"), "--steps", "0"])
    assert exit_.value.code == 2 and "--steps: expected a whole number >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_a_sweep_that_fails_at_start_is_reported_by_start_sweep(tmp_path):
    """It fails within seconds, while loading: start_sweep waits for that, so the caller (the
    Experiments page) never says "started" about a sweep that has already failed."""
    from prunekit.recovery.sweep import start_sweep

    with pytest.raises(
        SweepError, match=r"failed at start: ModelLoadError: No model folder at .*no/such/model"
    ):
        start_sweep(tmp_path / "bad", ["--model", str(tmp_path / "no/such/model")])
    assert (tmp_path / "bad.log").is_file()
    status = sweep_status(tmp_path / "bad")
    assert status["state"] == "failed" and "no/such/model" in status["error"]
    # The ended child is reaped (waited for), not left a zombie under the caller.
    deadline = time.monotonic() + 5
    while Path(f"/proc/{status['pid']}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{status['pid']}").exists()
    with pytest.raises(
        SweepError, match=r"stopped at once.*--steps: expected a whole number"
    ):  # argparse exits
        start_sweep(tmp_path / "bad-args", ["--steps", "many"])


def test_sweep_curves_show_the_spread_over_seeds():
    def run(seed, accuracies):
        return pd.DataFrame(
            {
                "scorer": "fisher",
                "pattern": "per-head",
                "threshold": "global",
                "seed": seed,
                "step": [0, 1, 2],
                "attention_sparsity": [0.0, 0.1, 0.19],
                "accuracy_after": accuracies,
            }
        )

    two = figures.sweep_curves(pd.concat([run(0, [0.9, 0.8, 0.7]), run(1, [0.9, 0.6, 0.5])]))
    (line,) = two.data
    assert list(line.y) == pytest.approx([90, 70, 60])  # means over the seeds, in %
    assert list(line.error_y.array) == pytest.approx([0, np.std([80, 60], ddof=1), np.std([70, 50], ddof=1)])
    assert "mean of 2 seeds" in two.layout.title.text
    (alone,) = figures.sweep_curves(run(0, [0.9, 0.8, 0.7])).data
    assert alone.error_y.array is None and list(alone.y) == pytest.approx([90, 80, 70])
