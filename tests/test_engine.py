"""The training engine: determinism, NaN handling, early stopping, and what a run records in MLflow."""
from __future__ import annotations

import json
import math

import pytest
import torch

from experiments.checkpoint import load_checkpoint, load_model
from experiments.data import build_datasets
from experiments.engine import NAN_ENV, train_and_evaluate
from experiments.tracking import Tracker
from experiments.train_config import TrainConfig
from runner_support import mlflow_db_template, output_dir, tiny_model_cfg, tracking_uri  # noqa: F401


@pytest.fixture(scope="module")
def tiny_data():
    return build_datasets("synthetic", train_size=32, val_size=32, seed=0)


def _train_cfg(out, **changes) -> TrainConfig:
    return TrainConfig(**{"batch_size": 16, "epochs": 2, "warmup_epochs": 1, "output": str(out), **changes})


def test_same_seed_same_metrics_other_seed_differs(tmp_path, tiny_data):
    cfg = tiny_model_cfg()
    keys = ("train_loss", "val_loss", "val_top1", "val_top5", "lr")
    first, again = ([[h[k] for k in keys] for h in train_and_evaluate(cfg, _train_cfg(tmp_path / name, seed=3),
                                                                       datasets=tiny_data).history]
                    for name in ("a", "b"))
    other = train_and_evaluate(cfg, _train_cfg(tmp_path / "c", seed=4, epochs=1), datasets=tiny_data).history
    assert len(first) == 2 and first == again
    assert [other[0][k] for k in keys] != first[0]


def test_nan_loss_stops_marks_failed_and_keeps_last_good_checkpoint(output_dir, tiny_data, monkeypatch):
    monkeypatch.setenv(NAN_ENV, "2")
    tracker = Tracker(tracking_uri(output_dir), "nan-test")
    result = train_and_evaluate(tiny_model_cfg(), _train_cfg(output_dir), tracker, run_name="nan",
                                datasets=tiny_data)
    assert result.status == "FAILED" and "nan" in result.reason.lower()
    assert [h["epoch"] for h in result.history] == [1]
    ckpt = load_checkpoint(result.run_dir / "last.pth")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    run = tracker.client.get_run(result.run_id)
    assert run.info.status == "FAILED"
    assert "epoch 2" in run.data.tags["status_reason"]


def test_on_epoch_end_can_stop_the_run_early(tmp_path, tiny_data):
    seen = []

    def stop_after_first(epoch, metrics):
        seen.append((epoch, metrics["val_top1"]))
        return True

    result = train_and_evaluate(tiny_model_cfg(), _train_cfg(tmp_path), on_epoch_end=stop_after_first,
                                datasets=tiny_data)
    assert result.stopped_early and result.status == "FINISHED"
    assert seen == [(1, result.history[0]["val_top1"])]


def test_mlflow_record_contents(output_dir, tiny_data):
    tracker = Tracker(tracking_uri(output_dir), "record-test", artifact_root=output_dir / "mlartifacts")
    parent = tracker.start_run("parent")
    cfg = tiny_model_cfg(gsa=False)
    result = train_and_evaluate(cfg, _train_cfg(output_dir, model_ema=True, mixup=0.2, cutmix=0.2), tracker,
                                run_name="no-gsa seed0", parent_run_id=parent,
                                tags={"config": "no-gsa", "ablation.gsa": "False"}, datasets=tiny_data)
    run = tracker.client.get_run(result.run_id)
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    # the whole configuration, flattened, reads back into the same SepViTConfig
    model_params = {k[len("model."):]: v for k, v in params.items() if k.startswith("model.")}
    assert set(model_params) == set(result.model_cfg.to_dict())
    assert json.loads(model_params["embed_dims"]) == list(cfg.embed_dims) and model_params["gsa"] == "False"
    assert params["train.model_ema"] == "True" and params["train.batch_size"] == "16"
    assert {"git.commit", "env.torch", "env.timm", "env.mlflow", "data.name"} <= set(params)
    assert tags["mlflow.parentRunId"] == parent and tags["ablation.gsa"] == "False" and tags["kind"] == "train"
    for key in ("train_loss", "val_top1", "val_top5", "lr", "img_per_s", "epoch_time", "val_top1_raw"):
        assert [m.step for m in tracker.client.get_metric_history(result.run_id, key)] == [1, 2], key
    assert metrics["params"] == sum(p.numel() for p in cfg.build().parameters())
    assert metrics["macs"] > 0 and metrics["latency_ms"] > 0
    assert metrics["best_val_top1"] == max(h["val_top1"] for h in result.history)
    artifacts = {a.path for a in tracker.client.list_artifacts(result.run_id)}
    assert {"config.json", "learning_curve.png", "checkpoint"} <= artifacts
    assert [a.path for a in tracker.client.list_artifacts(result.run_id, "checkpoint")] == ["checkpoint/best.pth"]
    assert run.info.status == "FINISHED"
    # the best checkpoint rebuilds the model (the notebook's path)
    model = load_model(result.run_dir / "best.pth")
    assert model.config == result.model_cfg
    assert not math.isnan(result.top1)
