"""A study on a real PostgreSQL server (a throwaway cluster on 127.0.0.1, see tests/postgres_support.py) with two
worker processes: every trial appears exactly once, with unique numbers, in both Optuna and MLflow."""
from __future__ import annotations

import shutil

import optuna
import pytest

from experiments import search
from postgres_support import Cluster, postgres_cluster, server_binaries  # noqa: F401
from runner_support import mlflow_db_template  # noqa: F401
from test_search import TINY, _runs, _subprocess

N_TRIALS = 4


def test_two_workers_share_a_study_on_postgresql(postgres_cluster, tmp_path, mlflow_db_template):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(mlflow_db_template, out / "mlflow.db")
    proc = _subprocess([*TINY, "--workers", "2", "--n-trials", str(N_TRIALS), "--storage", postgres_cluster.url,
                        "--study-name", "pg-study", "--output", str(out)])
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert "[worker 0]" in stderr and "[worker 1]" in stderr  # both processes ran trials
    study = optuna.load_study(study_name="pg-study", storage=search.open_storage(postgres_cluster.url, None))
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(N_TRIALS))
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)
    assert sum(bool(t.user_attrs.get("reference")) for t in study.trials) == 1
    _, children, parents = _runs(out)
    assert len(parents) == 1
    child_numbers = [int(c.data.tags["optuna.trial_number"]) for c in children]
    assert sorted(child_numbers) == list(range(N_TRIALS))  # once each
    assert {c.data.tags["optuna.study"] for c in children} == {"pg-study"}
    states = {t.number: t.state.name for t in study.trials}
    assert all(c.data.tags["optuna.state"] == states[int(c.data.tags["optuna.trial_number"])] for c in children)
    assert "postgresql://sepvit@127.0.0.1" in parents[0].data.tags["optuna.storage"]


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
