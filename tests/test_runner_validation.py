"""Validation helpers of the runner and the report API: names that are never folders outside their parent,
folders that cannot be written, and stores that are refused in one line and never created by reading."""
from __future__ import annotations

import sqlite3

import pytest

from experiments.runner.calls import slug
from experiments.report import ReportError, list_calls, load_runs
from runner_support import mlflow_db_template  # noqa: F401
from workbench.tracking import sqlite_store_problem, unwritable_folder


@pytest.mark.parametrize("text", [".", "..", "...", "/", "../..", " . ", "", "-.-"])
def test_slug_is_never_this_folder_or_its_parent(text):
    name = slug(text)
    assert name not in ("", ".", "..") and "/" not in name


def test_slug_keeps_ordinary_names():
    assert slug("no-gsa seed0") == "no-gsa-seed0"
    assert slug("../../escaped") == "..-..-escaped"  # no separator left: one name inside its parent


def test_unwritable_folder_tries_for_real_and_leaves_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    assert unwritable_folder(target) is None
    assert list(tmp_path.iterdir()) == []  # the probe was removed, and nothing was created on the way
    assert "/sys" in unwritable_folder("/sys/sepvit")
    (tmp_path / "file").write_text("x")
    assert "is a file" in unwritable_folder(tmp_path / "file" / "below")


def test_reading_a_mistyped_store_refuses_and_creates_nothing(tmp_path):
    missing = tmp_path / "typo" / "mlfow.db"
    for read in (lambda uri: load_runs(uri, "sepvit-ablation"), lambda uri: list_calls(uri, "sepvit-ablation")):
        with pytest.raises(ReportError, match="no MLflow store at") as err:
            read(f"sqlite:///{missing}")
        assert len(str(err.value).splitlines()) == 1
    assert not missing.exists() and not missing.parent.exists()


@pytest.mark.parametrize("content", ["garbage", "empty sqlite", "other sqlite"])
def test_reading_a_store_that_is_not_one_is_one_line(content, tmp_path):
    path = tmp_path / "mlflow.db"
    if content == "garbage":
        path.write_bytes(b"not a database" * 100)
    elif content == "empty sqlite":
        path.touch()
    else:
        with sqlite3.connect(path) as connection:
            connection.execute("CREATE TABLE notes (text)")
    before = path.read_bytes()
    with pytest.raises(ReportError) as err:
        load_runs(f"sqlite:///{path}", "sepvit-ablation")
    assert len(str(err.value).splitlines()) == 1 and str(path) in str(err.value)
    assert path.read_bytes() == before  # refused without a migration or a table being added


def test_a_real_store_passes_the_check(mlflow_db_template):  # noqa: F811
    assert sqlite_store_problem(mlflow_db_template) is None
    with pytest.raises(ReportError, match="no MLflow experiment"):
        load_runs(f"sqlite:///{mlflow_db_template}", "nothing-here")


def test_reports_count_one_run_per_planned_run_of_a_call(tmp_path, mlflow_db_template):  # noqa: F811
    """A call resumed by older code holds an abandoned child beside the one that finished: the report counts the
    planned run once, as finished (it used to read "1 seed, 1 failed")."""
    import shutil

    from experiments.report import summarize
    from workbench.tracking import Tracker

    shutil.copy(mlflow_db_template, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "sepvit-ablation")
    parent = tracker.start_run("call", tags={"kind": "parent"})
    for status, top1 in (("KILLED", None), ("FINISHED", 50.0)):
        child = tracker.start_run("reference seed0", parent, tags={"kind": "train", "config": "reference"})
        tracker.log_params(child, {"train.seed": 0})
        if top1 is not None:
            tracker.log_metrics(child, {"final_val_top1": top1}, step=1)
        tracker.end_run(child, status)
    tracker.end_run(parent)
    runs = load_runs(uri, "sepvit-ablation")
    assert list(runs["status"]) == ["FINISHED"]
    row = summarize(runs).iloc[0]
    assert (row["seeds"], row["failed"], row["top1_mean"]) == (1, 0, 50.0)
