"""Helpers shared by the runner/engine tests: tiny model and data settings, one migrated MLflow DB per session,
and the runner started as a subprocess (optionally with a fault injected by tests/fault_runner.py)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sepvit.config import SepViTConfig

ROOT = Path(__file__).resolve().parents[1]
# tests/fault_runner.py's pauses touch $SEPVIT_PAUSE_MARKER, else <output>/paused, and then sleep
PAUSE_MARKER_ENV, PAUSED = "SEPVIT_PAUSE_MARKER", "paused"
TINY_KWARGS = ["embed_dims=16,32,64,128", "num_heads=1,1,2,4"]
TINY_FIELDS = dict(embed_dims=(16, 32, 64, 128), num_heads=(1, 1, 2, 4))
# every CLI test adds these: micro_32 with tiny widths, 32 training / 32 validation images, 1 epoch
TINY_ARGS = ["--model", "sepvit_micro_32", "--model-kwargs", *TINY_KWARGS, "--train-size", "32", "--val-size", "32",
             "-b", "16", "--epochs", "1"]


def tiny_model_cfg(**changes) -> SepViTConfig:
    return SepViTConfig.preset("sepvit_micro_32", **TINY_FIELDS, **changes)


def train(model_cfg, train_cfg, name: str = "run", tags: dict | None = None, **context):
    """One run outside any call through the runner's API: `context` holds RunContext's fields."""
    from experiments.runner import PlannedRun, RunContext, train_and_evaluate

    return train_and_evaluate(PlannedRun.of(model_cfg, train_cfg, name, tags), RunContext(**context))


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory) -> Path:
    """A migrated, empty SQLite MLflow DB (migrations take ~2 s): copy it per test instead of creating one."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def output_dir(tmp_path, mlflow_db_template) -> Path:
    """An output folder that already holds a fresh copy of the migrated DB (the runner's default URI)."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(mlflow_db_template, out / "mlflow.db")
    return out


@pytest.fixture
def tmpfs(tmp_path):
    """A mounted 64 MiB tmpfs (root only; skipped elsewhere): (its folder, remount(options)), e.g. remount("ro") or
    remount("size=8m")."""
    root = tmp_path / "tmpfs"
    root.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(root)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield root, lambda options: subprocess.run(["mount", "-o", f"remount,{options}", str(root)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True)


def tracking_uri(output: Path) -> str:
    return f"sqlite:///{output.resolve() / 'mlflow.db'}"


def runner(args: list[str], fault: str | None = None, marker: Path | None = None, **kwargs) -> subprocess.Popen:
    """ablate.py in a subprocess with one thread (as the xdist workers), SIGINT at its default (xdist ignores it);
    `fault`: see tests/fault_runner.py, whose pauses touch `marker` (default <output>/paused)."""
    script = ["tests/fault_runner.py", fault, "--"] if fault else ["experiments/ablate.py"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    if marker is not None:
        env[PAUSE_MARKER_ENV] = str(marker)
    return subprocess.Popen([sys.executable, *script, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs)


def run_to_end(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    proc = runner(args)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for(path_glob_root: Path, name: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until a file `name` appears under `path_glob_root` (the fault runner's pause marker)."""
    _wait(lambda: any(path_glob_root.rglob(name)), name, proc, timeout)


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until `path` exists (a fault runner's pause marker), failing if the process ends first."""
    _wait(path.exists, str(path), proc, timeout)


def _wait(appeared, what: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while not appeared():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"{what} never appeared"
        time.sleep(0.2)


def all_runs(output: Path, experiment: str = "sepvit-ablation"):
    """Every MLflow run of the experiment in the output folder's store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(output))
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], run_view_type=3) if exp else []  # 3: active and deleted


def temporary_files(folder: Path) -> list[Path]:
    """Files that a cut-short atomic write leaves behind (`.name.tmp<pid>`)."""
    return [p for p in folder.rglob(".*.tmp*") if p.is_file()]


def children(output: Path, experiment: str = "sepvit-ablation"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(output))
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return client, [r for r in runs if r.data.tags.get("kind") == "train"], [r for r in runs
                                                                              if r.data.tags.get("kind") == "parent"]


def histories(client, run) -> dict[str, list[tuple[int, float]]]:
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            for key in ("val_top1", "val_loss", "train_loss")}
