"""A study on a real PostgreSQL server (a throwaway cluster on 127.0.0.1, see tests/postgres_support.py) with two
worker processes: every trial appears exactly once, with unique numbers, in both Optuna and MLflow."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import optuna
import pytest

from experiments import search, search_storage
from postgres_support import Cluster, postgres_cluster, server_binaries  # noqa: F401
from runner_support import ROOT, mlflow_db_template  # noqa: F401

TINY = ["--train-size", "32", "--val-size", "32", "-b", "16", "--epochs", "1"]

N_TRIALS = 4


def test_two_workers_share_a_study_on_postgresql(postgres_cluster, tmp_path, mlflow_db_template):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(mlflow_db_template, out / "mlflow.db")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    command = [*TINY, "--processes", "2", "--n-trials", str(N_TRIALS), "--storage", postgres_cluster.url,
               "--study-name", "pg-study", "--output", str(out)]
    proc = subprocess.Popen([sys.executable, "experiments/search.py", *command], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert "with 2 worker(s)" in stderr and "[worker " in stderr
    workers_used = {line.split("[worker ")[1][0] for line in stderr.splitlines() if "COMPLETE [worker " in line}
    study = optuna.load_study(study_name="pg-study", storage=search_storage.open_storage(postgres_cluster.url, None))
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(N_TRIALS))
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)
    assert sum(bool(t.user_attrs.get("reference")) for t in study.trials) == 1
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(search.DEFAULT_EXPERIMENT).experiment_id])
    children = [r for r in runs if r.data.tags.get("kind") == "train"]
    parents = [r for r in runs if r.data.tags.get("kind") == "search"]
    assert len(parents) == 1
    child_numbers = [int(c.data.tags["optuna.trial_number"]) for c in children]
    assert sorted(child_numbers) == list(range(N_TRIALS))  # once each
    assert {c.data.tags["optuna.study"] for c in children} == {"pg-study"}
    states = {t.number: t.state.name for t in study.trials}
    assert all(c.data.tags["optuna.state"] == states[int(c.data.tags["optuna.trial_number"])] for c in children)
    assert "postgresql://sepvit@127.0.0.1" in parents[0].data.tags["optuna.storage"]
    print(f"trials completed by workers {sorted(workers_used)}")  # both, unless one was slow to start


def test_the_throwaway_cluster_stops():
    binaries = server_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server here (initdb/pg_ctl not found)")
    cluster = Cluster(binaries)
    try:
        cluster.start()
        assert cluster.accepts_connections()
    finally:
        cluster.stop()
    assert not cluster.accepts_connections() and not cluster.folder.exists()
