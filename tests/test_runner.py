"""The command line `experiments/ablate.py`: refusing bad input before any run exists, a compare call end to end,
the call as the unit of resume (kill mid-call, resume, same numbers), interrupts, concurrency, relocation."""
from __future__ import annotations

import contextlib
import io
import math
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest
import torch

from experiments import ablate, runner as runner_api
from experiments.runner.calls import Call, new_call_folder
from runner_support import (TINY_ARGS, children, histories, mlflow_db_template, output_dir, run_to_end,  # noqa: F401
                            runner, tmpfs, tracking_uri, wait_for)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _broken_imagefolder(root: Path) -> str:
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
        from PIL import Image

        Image.new("RGB", (8, 8)).save(root / split / "a" / "ok.png")
    (root / "train" / "a" / "broken.png").write_bytes(b"not an image at all")
    return str(root)


# case -> (argv, a word the one-line error must contain); the catalogue of refusals (README lists the categories)
BAD_INPUT = {
    # contradictory or impossible switches
    "contradictory --no-lwt/--window-token": (["--no-lwt", "--window-token", "avgpool"], "--no-lwt"),
    "contradictory --no-dssa/--no-lwt": (["--no-dssa", "--no-lwt"], "--no-dssa"),
    "contradictory --no-gsa/--group-size": (["--no-gsa", "--group-size", "2"], "--group-size"),
    "contradictory --no-dssa/--group-size": (["--no-dssa", "--group-size", "2"], "--group-size"),
    "switch only for sepvit blocks": (["--block-pattern", "swin", "--no-dssa"], "block_pattern"),
    "grid plus switches": (["--grid", "paper", "--no-gsa"], "--grid"),
    "group size that does not fit": (["--group-size", "16"], "does not fit"),
    "unknown choice": (["--window-token", "conv"], "invalid choice"),
    # model configuration
    "unknown model": (["--model", "resnet50"], "unknown model"),
    "heads that do not divide": (["--model-kwargs", "embed_dims=16,32,64,128", "num_heads=3,1,2,4"], "num_heads"),
    "unknown config field": (["--model-kwargs", "colour=1"], "colour"),
    "badly typed config field": (["--model-kwargs", "gsa=maybe"], "gsa"),
    "unparsable per-stage list": (["--model-kwargs", "depths=abc"], "depths"),
    "model field owned by the data": (["--model-kwargs", "img_size=64"], "--img-size"),
    "classes owned by the data": (["--model-kwargs", "num_classes=5"], "dataset"),
    # data
    "unknown dataset": (["--dataset", "mnist"], "unknown dataset"),
    "data folder the synthetic set ignores": (["--data-dir", "/tmp"], "not used"),
    "data folder the digits set ignores": (["--dataset", "digits", "--data-dir", "/tmp"], "not used"),
    "more training images than digits has": (["--dataset", "digits", "--train-size", "5000"], "holds 1437"),
    "more validation images than digits has": (["--dataset", "digits", "--val-size", "500"], "holds 360"),
    "mixup with fewer images than one batch": (["--mixup", "0.8", "--train-size", "8"], "one batch of 16"),
    "missing data folder": (["--dataset", "cifar10", "--data-dir", "/nonexistent/cifar"], "does not exist"),
    "data folder not given": (["--dataset", "imagefolder"], "--data-dir"),
    "unreadable image": (["--dataset", "imagefolder", "--data-dir", "BROKEN_IMAGEFOLDER"], "broken.png"),
    # training settings
    "zero batch size": (["-b", "0"], "batch_size"),
    "negative epochs": (["--epochs", "-1"], "epochs"),
    "fractional epochs": (["--epochs", "1.5"], "epochs"),
    "zero seeds": (["--seeds", "0"], "--seeds"),
    "zero parallel": (["--parallel", "0"], "--parallel"),
    "word parallel": (["--parallel", "many"], "--parallel"),
    "zero window size": (["--window-size", "0"], "window_size"),  # 0 is a value, not "unset"
    "calibrate with compare": (["--calibrate", "--compare", "--no-gsa"], "--calibrate"),
    "negative min lr": (["--min-lr", "-0.00001"], "min_lr"),
    "min lr above lr": (["--min-lr", "1"], "min_lr"),
    "unknown optimiser": (["--opt", "adamq"], "--opt"),
    "unknown schedule": (["--sched", "zigzag"], "--sched"),
    "unparsable clip": (["--clip-grad", "lots"], "clip_grad"),
    "unknown device": (["--device", "tpu"], "device"),
    # tracking
    "file-store tracking uri": (["--tracking-uri", "./mlruns"], "sqlite"),
    "in-memory sqlite": (["--tracking-uri", "sqlite:///"], "in-memory"),
    "unknown uri scheme": (["--tracking-uri", "ftp://host/db"], "scheme"),
    "unwritable tracking location": (["--tracking-uri", "sqlite:////proc/no/mlflow.db"], "/proc/no"),
    "store under a system path": (["--tracking-uri", "sqlite:////sys/mlflow.db"], "/sys"),
    "empty experiment name": (["--experiment", ""], "experiment"),
    "experiment name longer than a file name": (["--experiment", "x" * 300], "at most 200"),
}
if not torch.cuda.is_available():
    BAD_INPUT["cuda without a GPU"] = (["--device", "cuda"], "GPU")


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
def test_bad_input_is_refused_before_any_run(case, tmp_path, output_dir, capsys, monkeypatch):
    import experiments.runner.run as run

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(run, "train_and_evaluate", no_training)
    argv, expected = BAD_INPUT[case]
    if "BROKEN_IMAGEFOLDER" in argv:
        argv = [_broken_imagefolder(tmp_path / "images") if a == "BROKEN_IMAGEFOLDER" else a for a in argv]
    rc = _call([*TINY_ARGS, *argv, "--output", str(output_dir)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert expected in err and "Traceback" not in err, err
    _, trained, parents = children(output_dir)
    assert not trained and not parents  # the database is unchanged: no run was opened
    assert not (output_dir / "sepvit-ablation").exists()  # and no call folder


def _call(argv: list[str]) -> int:
    """ablate.main in-process; argparse's own refusals arrive as SystemExit(2)."""
    try:
        return ablate.main(argv)
    except SystemExit as exc:
        return exc.code


def test_an_output_folder_under_a_system_path_is_refused_before_anything_is_made(tmp_path, capsys):
    store = tmp_path / "store"
    rc = _call([*TINY_ARGS, "--output", "/sys/sepvit-out", "--tracking-uri", f"sqlite:///{store}/mlflow.db"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "/sys" in err and "--output" in err, err
    assert not Path("/sys/sepvit-out").exists() and not store.exists()


def test_unreachable_tracking_server_fails_fast(tmp_path, capsys):
    start = time.perf_counter()
    rc = ablate.main(["--tracking-uri", f"http://127.0.0.1:{_free_port()}", "--output", str(tmp_path), *TINY_ARGS])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "unreachable" in err
    assert time.perf_counter() - start < 10


# ---------------------------------------------------------------------------------- a whole call
COMPARE = ["--no-gsa", "--compare", "--seeds", "2", *TINY_ARGS[:-2], "--epochs", "2"]


@pytest.fixture(scope="module")
def straight_compare(tmp_path_factory, mlflow_db_template):
    """One uninterrupted `--no-gsa --compare --seeds 2` call (4 runs of 2 epochs) in a subprocess."""
    out = tmp_path_factory.mktemp("straight")
    shutil.copy(mlflow_db_template, out / "mlflow.db")
    done = run_to_end([*COMPARE, "--output", str(out), "--experiment", "cmp"])
    assert done.returncode == 0, done.stderr[-3000:]
    return done, out


def test_compare_call_prints_the_table_and_records_one_parent_with_children(straight_compare):
    done, out = straight_compare
    lines = done.stdout.splitlines()
    assert lines[0].split()[:2] == ["configuration", "seeds"] and "MACs" in lines[0]
    assert any(line.startswith("no-gsa ") and " 2 " in line for line in lines)
    assert any(line.startswith("reference *") for line in lines)
    assert any("Welch 95% CI" in line for line in lines)
    assert any(line.startswith("`no-gsa` vs the reference") or line.startswith("`no-gsa` ") for line in lines)
    assert "With 2 seeds per configuration this call resolves differences ≥" in done.stdout
    assert "interleaved rounds after training" in done.stdout  # cost columns timed side by side, with quartiles
    client, trained, parents = children(out, "cmp")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    assert sorted((c.data.tags["config"], c.data.params["train.seed"]) for c in trained) == [
        ("no-gsa", "0"), ("no-gsa", "1"), ("reference", "0"), ("reference", "1")]
    assert all(c.info.status == "FINISHED" and c.data.tags["mlflow.parentRunId"] == parent for c in trained)
    assert {c.data.tags["is_reference"] for c in trained if c.data.tags["config"] == "reference"} == {"true"}
    assert {a.path for a in client.list_artifacts(parent)} >= {"summary.csv", "summary.md", "comparison.csv",
                                                               "call.json"}
    summary = client.get_run(parent).data.metrics  # the call's result on the parent's row of the runs table
    assert {"reference/top1_mean", "no-gsa/top1_mean", "no-gsa/delta_top1", "no-gsa/delta_top1_paired_low"} <= set(summary)
    ref = [c for c in trained if c.data.tags["config"] == "reference"]
    assert summary["reference/top1_mean"] == pytest.approx(
        sum(c.data.metrics["val_top1"] for c in ref) / len(ref))
    # the artifacts live next to the database, not in ./mlruns of the current folder
    assert all(c.info.artifact_uri.startswith((out / "mlartifacts").resolve().as_uri()) for c in trained)
    call = Call.load(out / parents[0].data.tags["call_folder"])
    assert call.parent_run_id == parent and [r.name for r in call.runs] == [
        "no-gsa seed0", "no-gsa seed1", "reference seed0", "reference seed1"]
    assert all(call.state_of(r) == "finished" for r in call.runs)


def test_killed_compare_call_resumes_every_run_with_the_same_numbers(straight_compare, output_dir):
    """SIGKILL in epoch 2 of the 2nd of 4 runs; --resume CALL: run 1 skipped, run 2 continued, runs 3-4 trained."""
    killed = runner([*COMPARE, "--output", str(output_dir), "--experiment", "cmp"], fault="pause:2:2")
    wait_for(output_dir, "paused", killed)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    client, trained, parents = children(output_dir, "cmp")
    assert parents[0].info.status == "RUNNING"  # SIGKILL: nobody could close it
    call_folder = output_dir / parents[0].data.tags["call_folder"]
    call = Call.load(call_folder)
    assert [call.state_of(r) for r in call.runs] == ["finished", "resumable", "new", "new"]

    resumed = run_to_end(["--resume", str(call_folder / call.runs[1].folder / "last.pth")])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "1 of 4 runs finished" in resumed.stderr
    client, trained, parents = children(output_dir, "cmp")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(trained) == 4 and all(r.info.status == "FINISHED" for r in trained)
    assert {a.path for a in client.list_artifacts(parents[0].info.run_id)} >= {"comparison.csv", "summary.csv"}
    straight_client, straight_runs, _ = children(straight_compare[1], "cmp")
    expected = {r.info.run_name: histories(straight_client, r) for r in straight_runs}
    for run in trained:
        got = histories(client, run)
        for key, points in expected[run.info.run_name].items():
            assert [s for s, _ in got[key]] == [1, 2], (run.info.run_name, key)  # no duplicated steps
            assert [v for _, v in got[key]] == pytest.approx([v for _, v in points], rel=1e-5, abs=1e-6)
    assert "Welch 95% CI" in resumed.stdout


def test_an_interrupted_parallel_call_starts_none_of_its_queued_runs(output_dir):
    """SIGINT to the runner alone: the two runs in training are checkpointed and marked KILLED, and the runs the
    process pool had already queued are never started (they used to start and train on after the message)."""
    proc = runner(["--no-gsa", "--compare", "--seeds", "2", *TINY_ARGS[:-2], "--epochs", "200", "--parallel", "2",
                   "--output", str(output_dir)])
    deadline = time.time() + 300
    while len(list(output_dir.rglob("last.pth"))) < 2:  # both workers are training (each run saved an epoch)
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == ablate.EXIT_INTERRUPTED, err
    assert "--resume" in err and "Traceback" not in err
    call = Call.load(next(output_dir.glob("*/*/call.json")).parent)
    states = [call.state_of(r) for r in call.runs]
    assert states.count("new") == 2 and "finished" not in states, states


@pytest.mark.parametrize("sig, word", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_interrupt_marks_runs_killed_with_reason_and_keeps_checkpoints(sig, word, output_dir):
    from experiments.runner.checkpoint import load_checkpoint

    proc = runner([*TINY_ARGS[:-2], "--epochs", "2", "--output", str(output_dir)], fault="pause:2")
    wait_for(output_dir, "paused", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err  # what a shell expects: Ctrl-C 130, SIGTERM 143
    assert "--resume" in err and "Traceback" not in err
    _, trained, parents = children(output_dir)
    child, parent = trained[0], parents[0]
    assert child.info.status == "KILLED" and parent.info.status == "KILLED"
    assert f"interrupted during epoch 2 ({word})" in child.data.tags["status_reason"]
    assert "--resume" in parent.data.tags["status_reason"] and "unfinished" in parent.data.tags["status_reason"]
    assert load_checkpoint(next(output_dir.rglob("last.pth")))["epoch"] == 1
    interrupted = load_checkpoint(next(output_dir.rglob("interrupted.pth")))
    assert interrupted["reason"].startswith("interrupted during epoch 2")


def test_diverged_weights_are_never_the_last_good_checkpoint(output_dir):
    """Weights x1e6 after epoch 2 (what --lr 1e8 does, loss still finite): epoch 2 is not kept; the reason names
    epoch 1's checkpoint, whose weights are sound, and a resume with a lower lr finishes from it."""
    from experiments.runner.checkpoint import load_checkpoint, unsound_weights

    proc = runner([*TINY_ARGS[:-2], "--epochs", "2", "--output", str(output_dir)], fault="diverge:2")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == ablate.EXIT_RUN_FAILED and "Traceback" not in err, err[-3000:]
    _, trained, parents = children(output_dir)
    reason = trained[0].data.tags["status_reason"]
    assert trained[0].info.status == "FAILED" and "diverged in epoch 2" in reason and "(epoch 1)" in reason, reason
    last = load_checkpoint(next(output_dir.rglob("last.pth")))
    assert last["epoch"] == 1 and unsound_weights(last["model"]) is None
    resumed = run_to_end(["--resume", str(output_dir / parents[0].data.tags["call_folder"]), "--lr", "1e-3"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    client, trained, _ = children(output_dir)
    assert trained[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(trained[0].info.run_id, "val_top1")] == [1, 2]


def test_unsound_weights_are_named():
    from experiments.runner.checkpoint import unsound_weights

    assert unsound_weights({"a": torch.ones(3), "step": torch.tensor(7)}) is None
    assert "b is not finite" in unsound_weights({"a": torch.ones(3), "b": torch.tensor([1.0, float("nan")])})
    assert "|w| = 5e+07" in unsound_weights({"w": torch.full((2,), 5e7)})


def test_nan_then_resume_with_a_lower_lr_is_applied_and_recorded(output_dir):
    proc = runner([*TINY_ARGS[:-2], "--epochs", "2", "--output", str(output_dir)], fault="nan:2")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == ablate.EXIT_RUN_FAILED and "lower --lr" in err
    client, trained, parents = children(output_dir)
    assert trained[0].info.status == "FAILED" and parents[0].info.status == "FAILED"
    resumed = run_to_end(["--resume", str(output_dir / parents[0].data.tags["call_folder"]), "--lr", "1e-3"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _, trained, parents = children(output_dir)
    assert trained[0].info.status == "FINISHED" and parents[0].info.status == "FINISHED"
    assert trained[0].data.tags["resume.lr"] == "0.003 -> 0.001"


# ---------------------------------------------------------------------------------- resume: what it refuses
@pytest.fixture(scope="module")
def finished_call(tmp_path_factory, mlflow_db_template):
    """A finished one-run call (1 epoch): tests copy it, which also exercises moved output folders."""
    out = tmp_path_factory.mktemp("finished") / "out"
    out.mkdir()
    shutil.copy(mlflow_db_template, out / "mlflow.db")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert ablate.main([*TINY_ARGS, "--output", str(out)]) == 0
    return out


def _copy_call(finished_call: Path, tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "moved"
    shutil.copytree(finished_call, out)
    folder = next(p.parent for p in out.glob("*/*/call.json"))
    return out, folder


def _damage(kind: str, last: Path, other: Path) -> None:
    if kind == "truncated":
        last.write_bytes(last.read_bytes()[:200])
    elif kind == "not a checkpoint":
        torch.save(torch.zeros(3), last)
    elif kind == "unsafe pickle":
        torch.save({"model": {}, "config": {}, "payload": Path("/tmp")}, last)
    elif kind == "diverged":
        state = torch.load(last, weights_only=True)
        state["model"] = {k: v * 5e7 if v.is_floating_point() else v for k, v in state["model"].items()}
        torch.save(state, last)
    elif kind == "other configuration":
        state = torch.load(last, weights_only=True)
        state["config"]["gsa"] = not state["config"]["gsa"]
        torch.save(state, last)


RESUME_REFUSALS = {
    "a model switch": (["--no-gsa"], None, "--no-gsa"),
    "a training flag": (["-b", "8"], None, "--batch-size"),
    "a shorter run": (["--epochs", "0"], None, "epochs"),
    "fewer seeds": (["--seeds", "0"], None, "cannot drop"),
    "more seeds on a changed schedule": (["--seeds", "2", "--epochs", "2"], None, "add the seeds first"),
    "no such call": (["--resume", "/nonexistent/call"], None, "no such file"),
    "not a call folder": (["--resume", "/tmp"], None, "not inside a runner call"),
    "the plan's copy in the artifacts": (["--resume", "ARTIFACT_COPY"], None, "a copy of a call's plan"),
    "a store without the call's parent": ([], "store", "holds no run"),
    "truncated checkpoint": ([], "truncated", "truncated"),
    "foreign file": ([], "not a checkpoint", "not a workbench checkpoint"),
    "unsafe pickle": ([], "unsafe pickle", "safe loading refuses"),
    "other configuration": ([], "other configuration", "gsa"),
    "diverged checkpoint": ([], "diverged", "diverged weights"),
}


@pytest.mark.parametrize("case", list(RESUME_REFUSALS), ids=list(RESUME_REFUSALS))
def test_resume_refuses_what_it_cannot_honour(case, finished_call, tmp_path, capsys):
    out, folder = _copy_call(finished_call, tmp_path)
    argv, damage, expected = RESUME_REFUSALS[case]
    run_dir = next(folder.glob("*/last.pth")).parent
    if damage and damage != "store":
        (run_dir / "result.json").unlink()  # unfinished: resume must read its last.pth
        _damage(damage, run_dir / "last.pth", folder)
    if "ARTIFACT_COPY" in argv:
        argv = [str(next((out / "mlartifacts").rglob("call.json")).parent) if a == "ARTIFACT_COPY" else a
                for a in argv]
    if damage == "store":  # the call names a parent run that its store does not hold
        call = Call.load(folder)
        call.parent_run_id = "0" * 32
        call.save()
    argv = argv if argv[:1] == ["--resume"] else ["--resume", str(folder), *argv]
    rc = _call(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert expected in err, err
    assert "weights_only=False" not in err
    _, trained, parents = children(out)
    if damage != "store":
        assert parents[0].info.status == "FINISHED" and trained[0].info.status == "FINISHED"  # untouched
    assert not (out / "mlartifacts" / "mlflow.db").exists()  # no store made beside the plan's copy


def test_resuming_a_read_only_call_folder_is_one_line(finished_call, tmpfs, capsys):
    root, remount = tmpfs
    shutil.copytree(finished_call, root / "out")
    folder = next(p.parent for p in (root / "out").glob("*/*/call.json"))
    remount("ro")
    rc = _call(["--resume", str(folder), "--epochs", "2"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "cannot be written" in err and "Traceback" not in err, err


def test_a_moved_output_folder_resumes_and_extends_in_place(finished_call, tmp_path, capsys):
    out, folder = _copy_call(finished_call, tmp_path)
    rc = _call(["--resume", str(folder), "--epochs", "2"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "0 of 1 runs finished" in captured.err and "epochs=2" in captured.err
    client, trained, parents = children(out)
    run = trained[0]
    assert run.info.status == "FINISHED" and run.data.tags["resume.epochs"] == "1 -> 2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_top1")] == [1, 2]
    assert run.info.artifact_uri.startswith((out / "mlartifacts").resolve().as_uri())  # not the original folder
    assert (out / "mlartifacts").is_dir() and parents[0].info.status == "FINISHED"


def test_more_seeds_extend_a_finished_call_with_the_runs_a_new_call_would_train(straight_compare, tmp_path,
                                                                                mlflow_db_template):
    """`--resume CALL --seeds 3` on a finished 2-seed compare call trains seed 2 of both configurations as a new
    call at that seed trains it, reports all 3 seeds with the false-positive rate of having looked twice, and
    records the extension (call.json, the parent's tags); fewer seeds than trained are then refused."""
    out = tmp_path / "extended"
    shutil.copytree(straight_compare[1], out)
    _, _, parents = children(out, "cmp")
    folder = out / parents[0].data.tags["call_folder"]
    extended = run_to_end(["--resume", str(folder), "--seeds", "3"])
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert "4 of 6 runs finished" in extended.stderr and "seeds per configuration: 2 -> 3" in extended.stderr
    assert any(line.startswith("no-gsa ") and " 3 " in line for line in extended.stdout.splitlines())
    assert "With 3 seeds per configuration this call resolves" in extended.stdout
    assert "This call was reported at 2 → 3 seeds per configuration" in extended.stdout
    assert "2 looks at the data" in extended.stdout and "`--seed 3 --seeds 3`" in extended.stdout
    call = Call.load(folder)
    assert call.seed_counts == [2, 3] and [r.name for r in call.runs] == [
        "no-gsa seed0", "no-gsa seed1", "no-gsa seed2", "reference seed0", "reference seed1", "reference seed2"]
    client, trained, parents = children(out, "cmp")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    tags = parents[0].data.tags
    assert (tags["seeds"], tags["planned_runs"], tags["resume.seeds"]) == ("3", "6", "2 -> 3")
    assert len(trained) == 6 and all(r.info.status == "FINISHED" for r in trained)
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in trained)

    fresh_out = tmp_path / "fresh"
    fresh_out.mkdir()
    shutil.copy(mlflow_db_template, fresh_out / "mlflow.db")
    fresh = run_to_end([*COMPARE, "--seed", "2", "--seeds", "1", "--output", str(fresh_out), "--experiment", "cmp"])
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    fresh_client, fresh_runs, _ = children(fresh_out, "cmp")
    expected = {r.info.run_name: histories(fresh_client, r) for r in fresh_runs}
    added = [r for r in trained if r.info.run_name.endswith("seed2")]
    assert sorted(r.info.run_name for r in added) == sorted(expected) == ["no-gsa seed2", "reference seed2"]
    for run in added:
        for key, points in histories(client, run).items():
            want = expected[run.info.run_name][key]
            assert [s for s, _ in points] == [s for s, _ in want] == [1, 2], (run.info.run_name, key)
            assert [v for _, v in points] == pytest.approx([v for _, v in want], rel=1e-5, abs=1e-6), (run.info.run_name,
                                                                                                   key)

    from experiments.rescoring import rescore

    rescored, _ = rescore(folder, 64)  # rescore.py says it too
    assert "This call was reported at 2 → 3 seeds per configuration" in rescored

    fewer = run_to_end(["--resume", str(folder), "--seeds", "2"])
    assert fewer.returncode == 2 and len(fewer.stderr.strip().splitlines()) == 1, fewer.stderr
    assert "cannot drop" in fewer.stderr and "Traceback" not in fewer.stderr


@pytest.mark.parametrize("known_by", ["parent tag", "plan"])
def test_more_seeds_for_a_search_confirmation_are_asked_of_the_search(finished_call, tmp_path, capsys, known_by):
    """A confirmation's seeds are recorded in its study: `--resume --seeds` refuses it in one line, changing nothing,
    whether its MLflow parent says so or only its plan does (a confirmation killed before its parent opened)."""
    from mlflow.tracking import MlflowClient

    out, folder = _copy_call(finished_call, tmp_path)
    if known_by == "parent tag":
        _, _, parents = children(out)
        MlflowClient(tracking_uri(out)).set_tag(parents[0].info.run_id, "search.confirmation", "true")
    else:
        call = Call.load(folder)
        call.confirmation = "study s trial 1"
        call.save()
    rc = _call(["--resume", str(folder), "--seeds", "2"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--confirm 2" in err and "Traceback" not in err, err
    assert len(Call.load(folder).runs) == 1 and Call.load(folder).seed_counts is None


def test_more_seeds_for_runs_continued_on_a_changed_schedule_are_refused(finished_call, tmp_path, capsys):
    """A run extended to 2 epochs trained on another schedule than a new 2-epoch seed would: no pooling."""
    out, folder = _copy_call(finished_call, tmp_path)
    assert _call(["--resume", str(folder), "--epochs", "2"]) == 0
    capsys.readouterr()
    rc = _call(["--resume", str(folder), "--seeds", "2"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "resume.epochs 1 -> 2" in err and "new call" in err, err
    assert len(Call.load(folder).runs) == 1


def test_an_extended_call_counts_a_look_only_for_a_report_with_every_run_finished(tmp_path):
    from types import SimpleNamespace

    from experiments.runner.calls import PlannedRun
    from experiments.runner.running import record_look
    from experiments.train_config import TrainConfig
    from runner_support import tiny_model_cfg

    runs = [PlannedRun(label, seed, tiny_model_cfg(), TrainConfig(seed=seed), f"{label}-{seed}")
            for label in ("a", "b") for seed in range(6)]
    folder = tmp_path / "exp" / "call"  # <output>/<experiment>/<call id>, as Call.load requires
    folder.mkdir(parents=True)
    call = Call(folder, "cmd", "exp", runs, seed_counts=[3])
    record_look(call, [SimpleNamespace(status="FINISHED")] * 11 + [SimpleNamespace(status="FAILED")])
    assert call.seed_counts == [3]  # a failed run: the report was not a look at 6 seeds
    record_look(call, [SimpleNamespace(status="FINISHED")] * 12)
    record_look(call, [SimpleNamespace(status="FINISHED")] * 12)  # the same report again (--rerender) is no new look
    assert call.seed_counts == [3, 6] and Call.load(folder).seed_counts == [3, 6]
    never_extended = Call(tmp_path / "x", "cmd", "exp", runs)
    record_look(never_extended, [SimpleNamespace(status="FINISHED")] * 12)
    assert never_extended.seed_counts is None


def test_the_more_seeds_hint_names_the_call_and_the_seeds_an_unresolved_comparison_asks_for(tmp_path):
    rows = [{"config": "reference", "verdict": math.nan, "seeds_needed": math.nan, "seeds": math.nan},
            {"config": "no-gsa", "verdict": "unresolved", "seeds_needed": 6.0, "seeds": 3},
            {"config": "no-ope", "verdict": "unresolved", "seeds_needed": math.nan, "seeds": 3},  # > the limit
            {"config": "no-lwt", "verdict": "separated", "seeds_needed": math.nan, "seeds": 3}]
    hint = ablate.more_seeds_hint(runner_api.Results(0, tmp_path, rows=rows))
    assert f"python experiments/ablate.py --resume {tmp_path} --seeds 6" in hint
    assert ablate.more_seeds_hint(runner_api.Results(1, tmp_path, rows=rows)) is None  # a run failed: resume first
    assert ablate.more_seeds_hint(runner_api.Results(0, tmp_path, rows=rows[-1:])) is None
    assert ablate.more_seeds_hint(runner_api.Results(0, tmp_path, rows=[])) is None
    # a partial call's estimate below its planned seeds: adding seeds is not what it needs
    assert ablate.more_seeds_hint(runner_api.Results(0, tmp_path, rows=[{**rows[1], "seeds": 6}])) is None


# ---------------------------------------------------------------------------------- concurrency
def test_three_runners_started_together_on_a_new_folder_all_finish(tmp_path):
    out = tmp_path / "fresh"  # no database yet: the three race to create it
    procs = [runner([*TINY_ARGS, "--seed", str(seed), "--output", str(out)]) for seed in range(3)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-1500:] for _, err in results]
    _, trained, parents = children(out)
    assert len(parents) == 3 and len(trained) == 3
    assert sorted(r.data.params["train.seed"] for r in trained) == ["0", "1", "2"]
    assert len({p.data.tags["call_folder"] for p in parents}) == 3


def test_calls_started_in_the_same_second_keep_separate_folders(tmp_path):
    folders = {new_call_folder(tmp_path, "exp") for _ in range(20)}
    assert len(folders) == 20 and all(f.is_dir() for f in folders)
    assert len({f.name[:15] for f in folders}) <= 2  # same second (or two), yet distinct


# ---------------------------------------------------------------------------------- reports over calls
def test_reports_default_to_the_newest_call_and_pool_only_without_duplicates(straight_compare, tmp_path):
    from experiments.report import ReportError, load_runs, pool, summarize

    _, original = straight_compare
    out = tmp_path / "two-calls"
    shutil.copytree(original, out)  # the same experiment gets a second, identical call
    second = run_to_end([*COMPARE, "--output", str(out), "--experiment", "cmp"])
    assert second.returncode == 0, second.stderr[-2000:]
    uri = tracking_uri(out)
    latest = summarize(load_runs(uri, "cmp")).set_index("config")
    assert latest.loc["no-gsa", "seeds"] == 2 and latest.loc["reference", "seeds"] == 2
    pooled = summarize(load_runs(uri, "cmp", calls="all")).set_index("config")
    assert pooled.loc["no-gsa", "seeds"] == 2 and pooled.loc["reference", "seeds"] == 2  # never 4
    assert latest.loc["no-gsa", "top1_mean"] == pooled.loc["no-gsa", "top1_mean"]
    frame = load_runs(uri, "cmp", calls="all")
    relabelled = frame.copy()
    relabelled.loc[relabelled["config"] == "reference", "config"] = "no-gsa"  # one label, two configurations
    with pytest.raises(ReportError, match="different configurations"):
        pool(relabelled)


def test_parallel_call_equals_the_sequential_call(straight_compare, output_dir):
    """--parallel 2: two worker processes of one thread each; every run's numbers equal the sequential call's."""
    done = run_to_end([*COMPARE, "--output", str(output_dir), "--experiment", "cmp", "--parallel", "2"])
    assert done.returncode == 0, done.stderr[-3000:]
    client, trained, parents = children(output_dir, "cmp")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(trained) == 4
    straight_client, straight_runs, _ = children(straight_compare[1], "cmp")
    expected = {r.info.run_name: histories(straight_client, r) for r in straight_runs}
    for run in trained:
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert histories(client, run) == expected[run.info.run_name]
        assert run.data.params["env.torch_threads"] == "1"  # the count each worker trained with is recorded
    assert {r.data.params["env.torch_threads"] for r in straight_runs} == {"1"}
    assert "Welch 95% CI" in done.stdout
