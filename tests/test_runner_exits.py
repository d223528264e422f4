"""Every exit of `experiments/ablate.py` leaves nothing RUNNING (issue 21): a stop signal at any stage of a call
(start-up, a run's start, after its last epoch, between runs, the summary), an error, a full disk; each ends with
one line that says how to go on, and `--resume` then completes the call with one child run per planned run.

Each test starts the real CLI as a process (tests/fault_runner.py pauses it at the stage, then it is signalled).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import ablate
from experiments.runner.calls import Call
from runner_support import (TINY_ARGS, all_runs, children, histories, mlflow_db_template, output_dir,  # noqa: F401
                            run_to_end, runner, temporary_files, tmpfs, wait_for, wait_for_file)

# two runs of one epoch, one after the other
TWO_RUNS = [*TINY_ARGS, "--seeds", "2", "--parallel", "1"]
PLANNED = ["reference seed0", "reference seed1"]


def stopped_at(stage: str, output: Path, marker: Path, sig: int = signal.SIGTERM) -> subprocess.CompletedProcess:
    """The two-run call, paused at `stage` by the fault runner, then sent `sig`."""
    proc = runner([*TWO_RUNS, "--output", str(output)], fault=f"pause-at:{stage}", marker=marker)
    wait_for_file(marker, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=180)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def runner_lines(err: str) -> list[str]:
    """The runner's own messages (its progress and MLflow lines, and training logs, aside)."""
    return [line for line in err.splitlines() if line.startswith("ablate.py:")]


def assert_nothing_running(output: Path) -> None:
    runs = all_runs(output)
    assert runs, "no run was recorded"
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    closed = [r for r in runs if r.info.status in ("KILLED", "FAILED")]
    assert all(r.data.tags.get("status_reason") for r in closed), [r.info.run_name for r in closed]
    assert temporary_files(output) == []


def assert_resume_completes(output: Path) -> subprocess.CompletedProcess:
    """--resume finishes the call: one parent, one FINISHED child per planned run, no step logged twice."""
    call_folder = next(output.glob("*/*/call.json")).parent
    done = run_to_end(["--resume", str(call_folder)])
    assert done.returncode == 0, done.stderr[-3000:]
    client, trained, parents = children(output)
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert sorted(r.info.run_name for r in trained) == PLANNED
    assert all(r.info.status == "FINISHED" for r in trained)
    for run in trained:
        assert all([s for s, _ in points] == [1] for points in histories(client, run).values()), run.info.run_name
    assert Call.load(call_folder).parent_run_id == parents[0].info.run_id
    return done


def _check_stop(stage: str, output: Path, marker: Path, sig: int = signal.SIGTERM) -> None:
    stopped = stopped_at(stage, output, marker, sig)
    assert stopped.returncode == 128 + sig, stopped.stderr[-3000:]
    lines = runner_lines(stopped.stderr)
    assert len(lines) == 1 and "--resume" in lines[0], stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    assert_nothing_running(output)
    _, _, parents = children(output)
    assert parents[0].info.status == "KILLED" and "--resume" in parents[0].data.tags["status_reason"]
    assert_resume_completes(output)


def test_sigterm_between_two_runs_closes_the_call_and_resume_completes_it(output_dir, tmp_path):
    _check_stop("between", output_dir, tmp_path / "paused")


def test_sigterm_after_the_last_epoch_then_resume_completes_the_record(output_dir, tmp_path):
    """result.json says FINISHED, the MLflow record was cut short: resume completes it (metrics, checkpoint,
    logged model, status) instead of leaving it KILLED or training it again."""
    _check_stop("finish", output_dir, tmp_path / "paused")
    client, trained, _ = children(output_dir)
    first = next(r for r in trained if r.info.run_name == PLANNED[0])
    assert "final_val_top1" in first.data.metrics and first.data.tags.get("resumed") == "true"
    assert "checkpoint" in {a.path for a in client.list_artifacts(first.info.run_id)}
    assert [m.step for m in client.get_metric_history(first.info.run_id, "final_val_top1")] == [1]


def test_sigterm_before_a_run_s_first_epoch_then_resume_reuses_its_record(output_dir, tmp_path):
    """The run's MLflow record was opened, no checkpoint exists: resume reopens that record (one child per planned
    run), it does not open a second of the same name."""
    _check_stop("cost", output_dir, tmp_path / "paused")
    client, trained, _ = children(output_dir)
    first = next(r for r in trained if r.info.run_name == PLANNED[0])
    assert first.data.tags.get("resumed") == "true" and first.data.tags.get("previous_status_reason")
    assert [m.step for m in client.get_metric_history(first.info.run_id, "params")] == [0]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["parent", "summary"])
def test_sigterm_at_start_up_or_in_the_summary_closes_the_call(stage, output_dir, tmp_path):
    _check_stop(stage, output_dir, tmp_path / "paused")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGINT])
def test_a_closed_terminal_or_ctrl_c_between_runs_is_handled_as_sigterm(sig, output_dir, tmp_path):
    _check_stop("between", output_dir, tmp_path / "paused", sig)


def test_an_unforeseen_error_whose_log_cannot_be_written_is_still_one_line(output_dir, monkeypatch, capsys):
    """The error handler cannot itself fail: error.log on a full disk is reported, not raised."""
    import errno

    from experiments.runner import executor

    def broken(*args, **kwargs):
        raise RuntimeError("something nobody foresaw")

    real_write = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name == "error.log":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(executor, "train_run", broken)
    monkeypatch.setattr(Path, "write_text", write_text)
    rc = ablate.main([*TINY_ARGS, "--output", str(output_dir), "--parallel", "1"])
    err = capsys.readouterr().err
    assert rc == ablate.EXIT_RUN_FAILED
    lines = runner_lines(err)
    assert len(lines) == 1 and "something nobody foresaw" in lines[0], err
    assert "traceback could not be written" in lines[0] and "--resume" in lines[0]
    _, _, parents = children(output_dir)
    assert parents[0].info.status == "FAILED" and "nobody foresaw" in parents[0].data.tags["status_reason"]


# ---------------------------------------------------------------------------------- a full disk
TWO_EPOCHS = [*TINY_ARGS[:-2], "--epochs", "2", "--parallel", "1"]


def assert_full_disk_handled(done: subprocess.CompletedProcess, output: Path) -> None:
    """One line that says to free space and resume; every run FAILED with that reason; no temporary file left."""
    assert done.returncode == ablate.EXIT_RUN_FAILED, done.stderr[-3000:]
    lines = runner_lines(done.stderr)
    assert len(lines) == 1 and "free space, then resume" in lines[0] and "--resume" in lines[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    runs = all_runs(output)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FAILED"}
    assert all("no space left on device" in r.data.tags["status_reason"] for r in runs)
    assert temporary_files(output) == []


def assert_resumed_whole(output: Path) -> None:
    done = run_to_end(["--resume", str(next(output.glob("*/*/call.json")).parent)])
    assert done.returncode == 0, done.stderr[-3000:]
    client, trained, parents = children(output)
    assert [p.info.status for p in parents] == ["FINISHED"] and [r.info.status for r in trained] == ["FINISHED"]
    assert all([s for s, _ in points] == [1, 2] for points in histories(client, trained[0]).values())
    assert "status_reason" not in trained[0].data.tags  # the failure's reason no longer describes the run


@pytest.mark.parametrize("what", ["checkpoint:2", pytest.param("result", marks=pytest.mark.slow)])
def test_an_injected_full_disk_fails_the_runs_in_one_line_and_resume_finishes(what, output_dir):
    proc = runner([*TWO_EPOCHS, "--output", str(output_dir)], fault=f"enospc:{what}")
    out, err = proc.communicate(timeout=300)
    assert_full_disk_handled(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), output_dir)
    assert_resumed_whole(output_dir)  # "space freed": the same call without the fault


@pytest.mark.slow
def test_a_real_full_disk_fails_the_runs_in_one_line_and_resume_finishes(tmpfs, mlflow_db_template):  # noqa: F811
    """An 8 MiB tmpfs as --output (root only): the second epoch's checkpoints do not fit."""
    root, remount = tmpfs
    remount("size=8m")
    output = root / "out"
    output.mkdir()
    shutil.copy(mlflow_db_template, output / "mlflow.db")
    done = run_to_end([*TWO_EPOCHS, "--output", str(output)])
    assert_full_disk_handled(done, output)
    remount("size=64m")
    assert_resumed_whole(output)


# ---------------------------------------------------------------------------------- one process per call
def test_two_resumes_of_one_call_at_once_train_it_once(output_dir):
    """Both started together: one trains, the other is refused in one line (exit 2); no epoch is logged twice."""
    killed = runner([*TWO_EPOCHS, "--output", str(output_dir)], fault="pause:2")
    wait_for(output_dir, "paused", killed)
    killed.send_signal(signal.SIGKILL)  # the kernel releases its lock
    killed.communicate()
    folder = next(output_dir.glob("*/*/call.json")).parent
    procs = [runner(["--resume", str(folder)]) for _ in range(2)]
    done = [(p.returncode, err) for p in procs for _, err in [p.communicate(timeout=600)]]
    codes = sorted(code for code, _ in done)
    assert codes == [0, 2], [err[-2000:] for _, err in done]
    refused = next(err for code, err in done if code == 2).strip()
    assert len(refused.splitlines()) == 1 and "being trained by another process" in refused, refused
    client, trained, parents = children(output_dir)
    assert [p.info.status for p in parents] == ["FINISHED"] and [r.info.status for r in trained] == ["FINISHED"]
    for key, points in histories(client, trained[0]).items():
        assert [s for s, _ in points] == [1, 2], key


def test_a_call_is_locked_while_a_process_holds_it_and_free_after(tmp_path):
    from experiments.runner.calls import CallError, CallLock

    held = CallLock.acquire(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                            "from experiments.runner.calls import CallLock, CallError\n"
                            "try:\n    CallLock.acquire(Path(sys.argv[1]))\nexcept CallError as e:\n"
                            "    print(e); sys.exit(3)", str(tmp_path)], capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parents[1])
    assert probe.returncode == 3 and f"pid {os.getpid()}" in probe.stdout, probe.stderr
    held.release()
    CallLock.acquire(tmp_path).release()  # free again
    with pytest.raises(CallError, match="another process"):
        held_again = CallLock.acquire(tmp_path)
        try:
            CallLock.acquire(tmp_path)  # a second open file description in this process is refused too
        finally:
            held_again.release()


# ---------------------------------------------------------------------------------- a new store
def _stores(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*mlflow.db*") if not p.name.endswith(".lock"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)])
def test_a_store_interrupted_while_it_is_created_is_not_left_half_made(sig, tmp_path):
    """A signal (or SIGKILL) mid-migration leaves no mlflow.db at all, and the next call on the folder works (it
    used to leave a half-migrated store: "duplicate column name: step" on every later call)."""
    output, marker = tmp_path / "fresh", tmp_path / "paused"
    proc = runner([*TINY_ARGS, "--output", str(output)], fault="pause-at:migration", marker=marker)
    wait_for_file(marker, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert "mlflow.db" not in _stores(output)
    if sig == signal.SIGKILL:
        assert _stores(output) != [], "the killed creation's temporary file is where the next one cleans it up"
        again = run_to_end([*TINY_ARGS, "--output", str(output)])
    else:
        assert proc.returncode == 128 + sig and len(runner_lines(err)) == 1 and "Traceback" not in err, err
        assert _stores(output) == []
        again = run_to_end(["--resume", str(next(output.glob("*/*/call.json")).parent)])
    assert again.returncode == 0, again.stderr[-3000:]
    assert _stores(output) == ["mlflow.db"]
    _, trained, parents = children(output)
    assert [r.info.status for r in trained] == ["FINISHED"] and [p.info.status for p in parents] == ["FINISHED"]
