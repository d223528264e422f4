"""torchrun with 2 CPU processes (gloo): DistributedDataParallel trains, only rank 0 logs and checkpoints."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


from runner_support import TINY_ARGS, mlflow_db_template, tracking_uri  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_two_cpu_processes(tmp_path, mlflow_db_template):
    from mlflow.tracking import MlflowClient

    from experiments.checkpoint import load_checkpoint

    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(mlflow_db_template, out / "mlflow.db")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "experiments" / "ablate.py"), *TINY_ARGS[:-2], "--epochs", "2", "--device", "cpu",
           "--output", str(out), "--experiment", "ddp"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri(out))
    exp = client.get_experiment_by_name("ddp")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["kind"] for r in runs) == ["parent", "train"]  # rank 1 logged nothing
    child = next(r for r in runs if r.data.tags["kind"] == "train")
    assert child.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(child.info.run_id, "val_top1")] == [1, 2]
    checkpoints = list(out.rglob("last.pth"))
    assert len(checkpoints) == 1 and load_checkpoint(checkpoints[0])["epoch"] == 2
    assert done.stderr.count("seed0 epoch 2/2") == 1  # only rank 0 reports
