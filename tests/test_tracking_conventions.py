"""What MLflow's UI and users expect of the runner's records: the experiment's kind, the runs' context tags, the
dataset inputs, the best model as a logged model that `mlflow.pytorch.load_model` opens, the call's summary on
the parent run."""
from __future__ import annotations

import contextlib
import json
import math
import subprocess
from pathlib import Path

import pytest
import torch

from experiments.runner.checkpoint import load_model
from runner_support import ROOT, TINY_ARGS, children, mlflow_db_template, output_dir, run_to_end  # noqa: F401
from runner_support import tracking_uri
from workbench.tracking import EXPERIMENT_KIND, Tracker, summary_metrics


@pytest.fixture(scope="module")
def tiny_call(tmp_path_factory, mlflow_db_template):
    """One tiny run of the runner's command line (1 epoch, 32 images) into an empty store."""
    import shutil

    out = tmp_path_factory.mktemp("conventions")
    shutil.copy(mlflow_db_template, out / "mlflow.db")
    done = run_to_end([*TINY_ARGS, "--output", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_the_experiment_opens_as_a_model_development_experiment(tiny_call):
    client, _, _ = children(tiny_call)
    assert client.get_experiment_by_name("sepvit-ablation").tags["mlflow.experimentKind"] == \
        "custom_model_development" == EXPERIMENT_KIND


def test_parent_and_child_runs_carry_mlflows_context_tags(tiny_call):
    _, trained, parents = children(tiny_call)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    for run in (*trained, *parents):
        tags = run.data.tags
        assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"].endswith("ablate.py")
        assert tags["mlflow.user"]
        assert tags["mlflow.source.git.commit"] == head == run.data.params.get("git.commit", head)


def test_the_data_are_run_inputs_described_not_copied(tiny_call):
    _, (run,), _ = children(tiny_call)
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"synthetic-train", "synthetic-val"}
    for name, context in (("synthetic-train", "training"), ("synthetic-val", "validation")):
        dataset = inputs[name].dataset
        assert {t.key: t.value for t in inputs[name].tags}["mlflow.data.context"] == context
        assert json.loads(dataset.profile) == {"num_rows": 32}
        assert dataset.source_type == "code" and json.loads(dataset.source)["tags"]["data_seed"] == 0
        assert len(dataset.digest) == 8
        assert json.loads(dataset.schema)["mlflow_colspec"][0]["tensor-spec"]["shape"] == [-1, 3, 32, 32]
    assert inputs["synthetic-train"].dataset.digest != inputs["synthetic-val"].dataset.digest


def test_the_best_model_is_a_logged_model_that_mlflow_loads_and_the_checkpoint_stays(tiny_call, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client, (run,), _ = children(tiny_call)
    (output,) = run.outputs.model_outputs
    logged = client.get_logged_model(output.model_id)
    assert logged.source_run_id == run.info.run_id and logged.status == "READY"
    assert logged.experiment_id == run.info.experiment_id
    checkpoint = load_model(client.download_artifacts(run.info.run_id, "checkpoint/best.pth", str(tiny_call)))
    mlflow.set_tracking_uri(tracking_uri(tiny_call))
    try:
        model = mlflow.pytorch.load_model(f"models:/{output.model_id}")
        info = mlflow.models.get_model_info(f"models:/{output.model_id}")
    finally:
        mlflow.set_tracking_uri(None)
    x = torch.randn(3, 3, 32, 32)  # another batch size than the input example's
    with torch.no_grad():
        torch.testing.assert_close(model(x), checkpoint(x))
    assert model.pretrained_cfg == checkpoint.pretrained_cfg
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 3, 32, 32]
    assert list(info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 10]
    requirements = mlflow.artifacts.download_artifacts(artifact_uri=f"{logged.artifact_location}/requirements.txt",
                                                       dst_path=str(tiny_call / "requirements"))
    pinned = Path(requirements).read_text().split()  # given, not inferred by importing the model's modules
    assert {r.split("==")[0] for r in pinned} >= {"torch", "torchvision", "timm", "sepvit-workbench"}


def test_an_existing_experiment_gets_the_kind_and_a_users_own_kind_stays(output_dir):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(output_dir))
    client.create_experiment("old")
    client.create_experiment("theirs", tags={"mlflow.experimentKind": "finetuning"})
    for name, kind in (("old", EXPERIMENT_KIND), ("theirs", "finetuning")):
        Tracker(tracking_uri(output_dir), name)
        assert client.get_experiment_by_name(name).tags["mlflow.experimentKind"] == kind


# ---------------------------------------------------------------------------------- the call's summary
ROWS = [
    {"config": "reference", "top1_mean": 40.0, "top1_ci95": 2.0, "diff": float("nan")},
    {"config": "no-gsa", "top1_mean": 35.5, "top1_ci95": 1.5, "diff": -4.5, "welch_low": -7.0, "welch_high": -2.0},
    {"config": "window_size=8", "top1_mean": 30.0, "top1_ci95": float("nan")},  # one seed: no CI
]


def test_summary_metrics_per_configuration():
    metrics = summary_metrics(ROWS)
    assert metrics == {
        "reference/top1_mean": 40.0, "reference/top1_ci_low": 38.0, "reference/top1_ci_high": 42.0,
        "no-gsa/top1_mean": 35.5, "no-gsa/top1_ci_low": 34.0, "no-gsa/top1_ci_high": 37.0,
        "no-gsa/delta_top1": -4.5, "no-gsa/delta_top1_low": -7.0, "no-gsa/delta_top1_high": -2.0,
        "window_size_8/top1_mean": 30.0}
    assert not any(math.isnan(v) for v in metrics.values())
    with pytest.raises(ValueError, match="same metric name"):
        summary_metrics([{"config": "a=b", "top1_mean": 1.0}, {"config": "a:b", "top1_mean": 2.0}])


def test_the_summary_is_logged_on_the_parent_run(output_dir):
    tracker = Tracker(tracking_uri(output_dir), "summary")
    parent = tracker.start_run("call")
    logged = tracker.log_call_summary(parent, ROWS)
    assert tracker.client.get_run(parent).data.metrics == logged


def test_a_model_that_cannot_be_logged_leaves_the_run_finished_with_its_checkpoint(output_dir, monkeypatch):
    from experiments.train_config import TrainConfig
    from runner_support import tiny_model_cfg, train

    def refuse(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Tracker, "log_pytorch_model", refuse)
    tracker = Tracker(tracking_uri(output_dir), "unloggable")
    train_cfg = TrainConfig(batch_size=16, epochs=1, warmup_epochs=0, train_size=16, val_size=16,
                            output=str(output_dir))
    result = train(tiny_model_cfg(), train_cfg, "r", tracker=tracker, cost={})
    run = tracker.client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["logged_model_error"] == "OSError: disk full"
    assert [a.path for a in tracker.client.list_artifacts(result.run_id, "checkpoint")] == ["checkpoint/best.pth"]
    assert not run.outputs.model_outputs


# ---------------------------------------------------------------- a store that SQLite reports locked
def _locked_error():
    """What MLflow raises when SQLite refuses a write as locked: its own exception, raised from the driver's (through
    SQLAlchemy's, which repeats the driver's message)."""
    import sqlite3

    from mlflow.exceptions import MlflowException

    cause = sqlite3.OperationalError("database is locked")
    try:
        raise MlflowException(message=cause) from cause
    except MlflowException as exc:
        return exc


class _Flaky:
    """A client whose `set_terminated` fails with `error` `failures` times, then goes through."""

    def __init__(self, failures: int, error: Exception):
        self.failures, self.error, self.calls = failures, error, 0

    def set_terminated(self, run_id, status):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return (run_id, status)


def test_a_store_call_refused_as_locked_is_tried_again_and_goes_through():
    from workbench.tracking import StoreClient, is_database_locked

    error = _locked_error()
    assert is_database_locked(error) and not is_database_locked(RuntimeError("disk I/O error"))
    flaky = _Flaky(failures=2, error=error)
    assert StoreClient(flaky, delays=(0.0, 0.0, 0.0)).set_terminated("run", "KILLED") == ("run", "KILLED")
    assert flaky.calls == 3


def test_a_store_call_locked_past_every_retry_or_failing_otherwise_raises_its_error():
    from workbench.tracking import StoreClient

    locked = _Flaky(failures=10, error=_locked_error())
    with pytest.raises(Exception, match="database is locked"):
        StoreClient(locked, delays=(0.0, 0.0)).set_terminated("run", "KILLED")
    assert locked.calls == 3  # the first try and one per delay

    other = _Flaky(failures=1, error=RuntimeError("no such table: runs"))
    with pytest.raises(RuntimeError, match="no such table"):
        StoreClient(other, delays=(0.0, 0.0)).set_terminated("run", "KILLED")
    assert other.calls == 1  # only the lock is worth waiting for


def test_a_store_call_holds_the_stop_signals_so_no_interrupt_lands_inside_a_transaction():
    import signal

    from workbench.tracking import StoreClient

    class Probe:
        def blocked(self):
            return signal.pthread_sigmask(signal.SIG_BLOCK, [])

    held = StoreClient(Probe()).blocked()
    assert signal.SIGINT in held and signal.SIGTERM in held
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # released after the call
    # a tracking server's client retries for minutes: Ctrl-C must reach it
    assert signal.SIGINT not in StoreClient(Probe(), hold_signals=False).blocked()


def test_a_tracker_on_a_sqlite_store_holds_the_signals(output_dir):
    assert Tracker(tracking_uri(output_dir), "held").client._held is not contextlib.nullcontext


@pytest.mark.slow
def test_a_run_closes_after_another_process_held_the_store_past_mlflows_busy_timeout(output_dir):
    """The real case: another connection holds SQLite's write lock for longer than MLflow's 20 s busy timeout;
    the close is refused once ("database is locked"), tried again, and the run ends KILLED."""
    import sqlite3
    import threading
    import time

    tracker = Tracker(tracking_uri(output_dir), "locked")
    run_id = tracker.start_run("held")
    holder = sqlite3.connect(output_dir / "mlflow.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(22.0, lambda: holder.execute("COMMIT"))
    release.start()
    started = time.time()
    assert tracker.close_run(run_id, "KILLED", "interrupted")
    release.join()
    assert time.time() - started > 20.0  # it did meet the lock
    assert tracker.client.get_run(run_id).info.status == "KILLED"


def test_mlflows_traceback_for_a_locked_store_is_not_printed_and_other_errors_are(caplog):
    import logging

    import workbench.tracking  # noqa: F401  (installs the filter)

    logger = logging.getLogger("mlflow.store.db.utils")
    with caplog.at_level(logging.ERROR, logger="mlflow.store.db.utils"):
        logger.error("SQLAlchemy database error. The following exception is caught.\n%s", _locked_error())
        logger.error("SQLAlchemy database error. The following exception is caught.\n%s", "no such table: runs")
    assert [r.getMessage().splitlines()[-1] for r in caplog.records] == ["no such table: runs"]
