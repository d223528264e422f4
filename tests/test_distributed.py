"""torchrun with 2 CPU processes (gloo): DDP trains, only rank 0 logs and checkpoints, and the result equals
single-process training with the same global batch."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner_support import TINY_ARGS, children, histories, mlflow_db_template, run_to_end  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
# No drop path, Mixup or augmentation (the synthetic set has none): both runs compute the same function of the same
# data; what remains is float summation order (DDP averages two half-batch gradients), hence a tolerance.
COMMON = [*TINY_ARGS[:TINY_ARGS.index("-b")], "--epochs", "2", "--device", "cpu"]
TOLERANCE = dict(rel=2e-4, abs=2e-4)


def _torchrun(out: Path, per_rank_batch: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "experiments" / "ablate.py"), *COMMON, "-b", str(per_rank_batch), "--output", str(out)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path, mlflow_db_template):
    from experiments.runner.checkpoint import load_checkpoint

    outs = {}
    for name in ("ddp", "single"):
        outs[name] = tmp_path / name
        outs[name].mkdir()
        shutil.copy(mlflow_db_template, outs[name] / "mlflow.db")
    ddp = _torchrun(outs["ddp"], per_rank_batch=8)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = run_to_end([*COMMON, "-b", "16", "--output", str(outs["single"])])
    assert single.returncode == 0, single.stderr[-3000:]

    client, trained, parents = children(outs["ddp"])
    assert len(parents) == 1 and len(trained) == 1  # rank 1 logged nothing
    assert trained[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(trained[0].info.run_id, "val_top1")] == [1, 2]
    checkpoints = list(outs["ddp"].rglob("last.pth"))
    assert len(checkpoints) == 1 and load_checkpoint(checkpoints[0])["epoch"] == 2
    assert ddp.stderr.count("seed0 epoch 2/2") == 1  # only rank 0 reports
    assert len(list((outs["ddp"] / "sepvit-ablation").iterdir())) == 1  # one call folder, shared by the ranks

    single_client, single_trained, _ = children(outs["single"])
    got, expected = histories(client, trained[0]), histories(single_client, single_trained[0])
    for key in expected:
        assert [v for _, v in got[key]] == pytest.approx([v for _, v in expected[key]], **TOLERANCE), key
