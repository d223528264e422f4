"""Credentials in URLs never reach what MLflow stores (issue 21): the runner's Tracker masks every text it writes
(tags, the status reason, params, text artifacts), and the runner's command line is masked before it is kept.
The slow test runs the CLI against an MLflow server reached as http://user:password@host and greps the store."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import ablate
from runner_support import ROOT, TINY_ARGS, mlflow_db_template, run_to_end  # noqa: F401
from workbench.tracking import Tracker, mask_secrets

PASSWORD = "s3cr3t-Pa55"
URL = f"postgresql://alice:{PASSWORD}@db.example.org:5432/optuna"


def stored_bytes(*roots: Path) -> bytes:
    """Everything under `roots` (database files and artifacts), as one byte string to grep."""
    return b"".join(p.read_bytes() for root in roots for p in sorted(root.rglob("*")) if p.is_file())


def test_mask_secrets_hides_the_password_only():
    assert mask_secrets(f"--storage {URL} and http://bob:pw@h:5000/x") == (
        "--storage postgresql://alice:***@db.example.org:5432/optuna and http://bob:***@h:5000/x")
    assert mask_secrets("sqlite:////tmp/mlflow.db http://host:5000") == "sqlite:////tmp/mlflow.db http://host:5000"


def test_the_search_masks_with_the_same_function():
    """One owner of the rule: the search uses workbench.tracking's mask_secrets, not a copy."""
    from experiments.search import mask_secrets as search_mask

    assert search_mask is mask_secrets


def test_every_text_the_tracker_stores_is_masked(tmp_path, mlflow_db_template):  # noqa: F811
    shutil.copy(mlflow_db_template, tmp_path / "mlflow.db")
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "secrets", artifact_root=tmp_path / "artifacts")
    run = tracker.start_run("r", tags={"command": f"search.py --storage {URL}"})
    tracker.log_params(run, {"storage": URL})
    tracker.set_tags(run, {"note": URL})
    tracker.log_text(run, f"storage: {URL}", "notes.txt")
    tracker.log_json(run, {"storage": URL}, "config.json")
    tracker.log_files(run, [("summary.md", URL)])
    tracker.end_run(run, "FAILED", f"OperationalError: could not connect to {URL}")
    stored = stored_bytes(tmp_path)
    assert PASSWORD.encode() not in stored
    assert b"alice:***@db.example.org" in stored  # what the user needs to recognise the store is kept


def test_the_command_a_call_keeps_is_masked():
    assert ablate.command_line(["--tracking-uri", f"http://alice:{PASSWORD}@host:5000", "--seeds", "2"]) == (
        "ablate.py --tracking-uri http://alice:***@host:5000 --seeds 2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_password_in_the_tracking_uri_is_nowhere_in_the_store(tmp_path):
    """The CLI against an MLflow server (SQLite behind it) reached with credentials in the URL."""
    store, artifacts, port = tmp_path / "server.db", tmp_path / "served-artifacts", _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{store}",
                               "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "the MLflow server did not start"
                time.sleep(0.5)
        uri = f"http://alice:{PASSWORD}@127.0.0.1:{port}"
        done = run_to_end([*TINY_ARGS, "--output", str(tmp_path / "out"), "--tracking-uri", uri])
        assert done.returncode == 0, done.stderr[-3000:]
        assert PASSWORD not in done.stderr and PASSWORD not in done.stdout
        stored = stored_bytes(artifacts) + store.read_bytes()
        assert b"alice:***@127.0.0.1" in stored  # the command tag was stored, masked
        assert PASSWORD.encode() not in stored
    finally:
        os.killpg(server.pid, 15)  # the server and its uvicorn worker (their own session)
        server.wait(timeout=30)
