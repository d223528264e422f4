"""The command line `experiments/ablate.py`: refusing bad input, a compare call end to end, kill-and-resume."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import ablate
from runner_support import TINY_ARGS, TINY_KWARGS, mlflow_db_template, output_dir, tracking_uri  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BAD_INPUT = {
    "contradictory --no-lwt/--window-token": (["--no-lwt", "--window-token", "avgpool"], "--no-lwt"),
    "contradictory --no-dssa/--no-lwt": (["--no-dssa", "--no-lwt"], "--no-dssa"),
    "contradictory --no-gsa/--group-size": (["--no-gsa", "--group-size", "2"], "--group-size"),
    "contradictory --no-dssa/--group-size": (["--no-dssa", "--group-size", "2"], "--group-size"),
    "switch only for sepvit blocks": (["--block-pattern", "swin", "--no-dssa"], "block_pattern"),
    "grid plus switches": (["--grid", "paper", "--no-gsa"], "--grid"),
    "unknown dataset": (["--dataset", "mnist"], "unknown dataset"),
    "unknown model": (["--model", "resnet50"], "unknown model"),
    "unknown choice": (["--window-token", "conv"], "invalid choice"),
    "missing data folder": (["--dataset", "cifar10", "--data-dir", "/nonexistent/cifar"], "does not exist"),
    "data folder not given": (["--dataset", "imagefolder"], "--data-dir"),
    "zero batch size": (["-b", "0"], "batch_size"),
    "negative epochs": (["--epochs", "-1"], "epochs"),
    "zero seeds": (["--seeds", "0"], "--seeds"),
    "group size that does not fit": (["--group-size", "16"], "does not fit"),
    "heads that do not divide": (["--model-kwargs", "embed_dims=(16,32,64,128)", "num_heads=(3,1,2,4)"], "num_heads"),
    "unknown config field": (["--model-kwargs", "colour=1"], "colour"),
    "file-store tracking uri": (["--tracking-uri", "./mlruns"], "sqlite"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
def test_bad_input_is_refused_before_training(case, tmp_path, capsys, monkeypatch):
    import experiments.engine as engine

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(engine, "train_and_evaluate", no_training)
    argv, expected = BAD_INPUT[case]
    rc = _call([*argv, "--output", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert expected in err and "Traceback" not in err


def _call(argv: list[str]) -> int:
    """ablate.main in-process; argparse's own refusals arrive as SystemExit(2)."""
    try:
        return ablate.main(argv)
    except SystemExit as exc:
        return exc.code


def test_unreachable_tracking_server_fails_fast(tmp_path, capsys):
    start = time.perf_counter()
    rc = ablate.main(["--tracking-uri", f"http://127.0.0.1:{_free_port()}", "--output", str(tmp_path), *TINY_ARGS])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "unreachable" in err
    assert time.perf_counter() - start < 10


def _runner(args: list[str], env_extra: dict | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, str(ROOT / "experiments" / "ablate.py"), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_sigkill_during_epoch_two_then_resume_matches_uninterrupted_run(tmp_path, mlflow_db_template):
    import shutil

    from experiments.checkpoint import load_checkpoint
    from mlflow.tracking import MlflowClient

    common = [*TINY_ARGS[:-2], "--epochs", "2", "--warmup-epochs", "1"]
    runs = {}
    for name in ("straight", "killed"):
        out = tmp_path / name
        out.mkdir()
        shutil.copy(mlflow_db_template, out / "mlflow.db")
        runs[name] = out
    # the killed run pauses at the first batch of epoch 2 (test hook), and is SIGKILLed there
    killed = _runner([*common, "--output", str(runs["killed"])], {"SEPVIT_TEST_PAUSE_AT_EPOCH": "2"})
    straight = _runner([*common, "--output", str(runs["straight"])])
    deadline = time.time() + 240
    while not list(runs["killed"].rglob("paused")):
        assert killed.poll() is None, killed.communicate()
        assert time.time() < deadline, "the run never reached epoch 2"
        time.sleep(0.2)
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate()
    out_straight, err_straight = straight.communicate(timeout=240)
    assert straight.returncode == 0, err_straight

    last = next(runs["killed"].rglob("last.pth"))
    ckpt = load_checkpoint(last)
    assert ckpt["epoch"] == 1  # the last complete epoch before the kill
    client = MlflowClient(tracking_uri(runs["killed"]))
    assert client.get_run(ckpt["run_id"]).info.status == "RUNNING"  # SIGKILL: nobody could mark it

    resumed = _runner(["--resume", str(last)])
    _, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err

    def final(out: Path):
        c = MlflowClient(tracking_uri(out))
        exp = c.get_experiment_by_name("sepvit-ablation")
        children = c.search_runs([exp.experiment_id], filter_string="tags.kind = 'train'")
        assert len(children) == 1  # one MLflow run, continued
        run = children[0]
        history = {key: [(m.step, m.value) for m in c.get_metric_history(run.info.run_id, key)]
                   for key in ("val_top1", "val_loss", "train_loss")}
        return run, history

    run_a, hist_a = final(runs["straight"])
    run_b, hist_b = final(runs["killed"])
    assert run_b.info.status == "FINISHED" and run_b.data.tags.get("resumed") == "true"
    for key in hist_a:
        steps_b = [s for s, _ in hist_b[key]]
        assert sorted(steps_b) == [1, 2] and len(set(steps_b)) == len(steps_b)  # no duplicated steps
        a = dict(hist_a[key])
        b = dict(hist_b[key])
        for step in a:
            assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), (key, step)


@pytest.mark.parametrize("sig, word", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_interrupt_marks_runs_killed_with_reason_and_keeps_checkpoints(sig, word, output_dir):
    from mlflow.tracking import MlflowClient

    from experiments.checkpoint import load_checkpoint

    # pytest-xdist workers ignore SIGINT and children inherit that: give the runner a terminal's default
    proc = _runner([*TINY_ARGS[:-2], "--epochs", "2", "--output", str(output_dir)], {"SEPVIT_TEST_PAUSE_AT_EPOCH": "2"},
                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while not list(output_dir.rglob("paused")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the run never reached epoch 2"
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == ablate.EXIT_INTERRUPTED, err
    assert "--resume" in err and "Traceback" not in err

    client = MlflowClient(tracking_uri(output_dir))
    exp = client.get_experiment_by_name("sepvit-ablation")
    runs = {r.data.tags["kind"]: r for r in client.search_runs([exp.experiment_id])}
    child, parent = runs["train"], runs["parent"]
    assert child.info.status == "KILLED" and parent.info.status == "KILLED"
    assert f"interrupted during epoch 2 ({word})" in child.data.tags["status_reason"]
    assert load_checkpoint(next(output_dir.rglob("last.pth")))["epoch"] == 1
    interrupted = load_checkpoint(next(output_dir.rglob("interrupted.pth")))
    assert interrupted["reason"].startswith("interrupted during epoch 2")


@pytest.fixture(scope="module")
def compare_call(tmp_path_factory, mlflow_db_template):
    """One in-process call: --no-gsa --compare --seeds 2 on tiny settings (4 runs under one parent)."""
    import contextlib
    import io
    import shutil

    out = tmp_path_factory.mktemp("compare")
    shutil.copy(mlflow_db_template, out / "mlflow.db")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = ablate.main(["--no-gsa", "--compare", "--seeds", "2", *TINY_ARGS, "--output", str(out),
                          "--experiment", "cmp"])
    return rc, stdout.getvalue(), stderr.getvalue(), out


def test_compare_call_prints_the_table_and_records_one_parent_with_children(compare_call):
    from mlflow.tracking import MlflowClient

    rc, stdout, stderr, out = compare_call
    assert rc == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].split()[:2] == ["configuration", "seeds"] and "MACs" in lines[0]
    assert any(line.startswith("no-gsa ") and " 2 " in line for line in lines)
    assert any(line.startswith("reference *") for line in lines)
    assert any("Welch 95% CI" in line for line in lines)
    client = MlflowClient(tracking_uri(out))
    exp = client.get_experiment_by_name("cmp")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'parent'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    children = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    assert sorted((c.data.tags["config"], c.data.params["train.seed"]) for c in children) == [
        ("no-gsa", "0"), ("no-gsa", "1"), ("reference", "0"), ("reference", "1")]
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["is_reference"] for c in children if c.data.tags["config"] == "reference"} == {"true"}
    assert {a.path for a in client.list_artifacts(parent)} >= {"summary.csv", "summary.md", "comparison.csv"}
    # the artifacts live next to the database, not in ./mlruns of the current folder
    assert all(c.info.artifact_uri.startswith((out / "mlartifacts").resolve().as_uri()) for c in children)


def test_report_reads_the_call_back_from_mlflow(compare_call):
    from experiments.report import compare_to_reference, load_histories, load_runs, summarize

    _, _, _, out = compare_call
    runs = load_runs(tracking_uri(out), "cmp")
    assert len(runs) == 4 and set(runs["config"]) == {"no-gsa", "reference"}
    summary = summarize(runs).set_index("config")
    assert summary.loc["no-gsa", "seeds"] == 2 and summary.loc["reference", "is_reference"]
    assert summary.loc["no-gsa", "params"] != summary.loc["reference", "params"]
    comparison = compare_to_reference(runs)
    assert list(comparison["config"]) == ["no-gsa"]
    expected = runs[runs.config == "no-gsa"].top1.mean() - runs[runs.config == "reference"].top1.mean()
    assert comparison["diff"].iloc[0] == pytest.approx(expected)
    history = load_histories(tracking_uri(out), runs)
    assert set(history["metric"]) == {"train_loss", "val_top1"} and set(history["epoch"]) == {1}
