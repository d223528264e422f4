"""The engine and one run's lifecycle: determinism, seeds per rank, data order, optimiser groups, EMA, NaN, resume,
and what a run records in MLflow."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from experiments.runner import engine
from experiments.runner.checkpoint import load_checkpoint, load_model
from experiments.data import build_datasets
from workbench.tracking import Tracker
from experiments.train_config import TrainConfig
from runner_support import mlflow_db_template, output_dir, tiny_model_cfg, tracking_uri, train  # noqa: F401


@pytest.fixture(scope="module")
def tiny_data():
    return build_datasets("synthetic", train_size=32, val_size=32, seed=0)


def _train_cfg(out, **changes) -> TrainConfig:
    # the sizes of tiny_data, which the runs are given: so no final scoring on more images (test_final_scoring.py)
    return TrainConfig(**{"batch_size": 16, "epochs": 2, "warmup_epochs": 1, "output": str(out), "train_size": 32,
                          "val_size": 32, **changes})


KEYS = ("train_loss", "val_loss", "val_top1", "val_top5", "lr")


def _numbers(history, keys=KEYS):
    return [[h[k] for k in keys] for h in history]


def test_same_seed_same_metrics_other_seed_differs(tmp_path, tiny_data):
    cfg = tiny_model_cfg()
    first, again = (_numbers(train(cfg, _train_cfg(tmp_path / n, seed=3), datasets=tiny_data).history)
                    for n in ("a", "b"))
    other = train(cfg, _train_cfg(tmp_path / "c", seed=4, epochs=1), datasets=tiny_data).history
    assert len(first) == 2 and first == again
    assert _numbers(other)[0] != first[0]


def test_sharded_order_is_the_shuffled_order_split_across_ranks():
    def order(rank, world, seed=5):
        g = torch.Generator().manual_seed(seed)
        return list(engine.ShardedShuffle(10, rank, world, g))

    g = torch.Generator().manual_seed(5)
    assert order(0, 1) == list(torch.utils.data.RandomSampler(range(10), generator=g))  # world 1: plain shuffle
    ranks = [order(r, 2) for r in range(2)]
    batch = 2  # per rank: the ranks' k-th batches together are the single-process k-th batch of 4
    for k in range(2):
        together = sorted(ranks[0][k * batch:(k + 1) * batch] + ranks[1][k * batch:(k + 1) * batch])
        assert together == sorted(order(0, 1)[k * 2 * batch:(k + 1) * 2 * batch])
    assert len(order(0, 3)) == len(order(2, 3)) == 4  # padded to an equal share


def test_epoch_seeds_differ_per_rank_but_the_data_order_does_not():
    draws = {}
    for rank in (0, 1):
        parts = SimpleNamespace(rank=rank, loader_generator=torch.Generator())
        engine.seed_epoch(seed=0, epoch=3, parts=parts)
        draws[rank] = (torch.rand(3).tolist(), torch.randperm(8, generator=parts.loader_generator).tolist())
    assert draws[0][0] != draws[1][0]  # drop path, Mixup, augmentation: independent per rank
    assert draws[0][1] == draws[1][1]  # one shuffled order, split by ShardedShuffle


def _decayed(optimizer) -> set[int]:
    return {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}


def test_weight_decay_on_window_tokens_and_cpe_follows_the_switch():
    model = tiny_model_cfg().build()
    named = dict(model.named_parameters())
    tokens = [p for n, p in named.items() if "window_token" in n]
    cpe_weights = [p for n, p in named.items() if ".cpe." in n and p.ndim > 1]
    biases_and_norms = [p for n, p in named.items() if p.ndim <= 1]
    assert tokens and cpe_weights
    authors = _decayed(engine.build_optimizer(model, TrainConfig(decay_tokens_cpe=True)))
    excluded = _decayed(engine.build_optimizer(model, TrainConfig(decay_tokens_cpe=False)))
    assert all(id(p) in authors for p in tokens + cpe_weights)
    assert not any(id(p) in excluded for p in tokens + cpe_weights)
    assert not any(id(p) in authors or id(p) in excluded for p in biases_and_norms)


def test_schedule_is_timms_cosine_with_per_update_warmup():
    from timm.scheduler import create_scheduler_v2

    cfg = TrainConfig(epochs=3, warmup_epochs=1, lr=1e-2, min_lr=1e-4, warmup_lr=1e-5)
    ours = engine.build_scheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr), cfg, 5)
    theirs, _ = create_scheduler_v2(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr), sched="cosine",
                                    num_epochs=3, warmup_epochs=1, warmup_lr=1e-5, min_lr=1e-4, step_on_epochs=False,
                                    updates_per_epoch=5)
    assert [ours._get_lr(t) for t in range(15)] == [theirs._get_lr(t) for t in range(15)]
    warmup = [ours._get_lr(t)[0] for t in range(5)]
    assert warmup[0] == pytest.approx(1e-5) and warmup == sorted(warmup)  # rises per update from warmup_lr


def test_nan_loss_stops_marks_failed_and_keeps_last_good_checkpoint(output_dir, tiny_data, monkeypatch):
    build = engine.build_criterion

    def nan_from_epoch_two(cfg, num_classes):
        criterion, mixup = build(cfg, num_classes)
        calls = []

        def loss(out, y):
            calls.append(1)
            return criterion(out, y) * (float("nan") if len(calls) > 2 else 1.0)  # 2 batches per epoch
        return loss, mixup

    monkeypatch.setattr(engine, "build_criterion", nan_from_epoch_two)
    tracker = Tracker(tracking_uri(output_dir), "nan-test")
    result = train(tiny_model_cfg(), _train_cfg(output_dir), "nan", tracker=tracker, datasets=tiny_data)
    assert result.status == "FAILED" and "nan" in result.reason.lower() and "--lr" in result.reason
    assert [h["epoch"] for h in result.history] == [1]
    ckpt = load_checkpoint(result.run_dir / "last.pth")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    run = tracker.client.get_run(result.run_id)
    assert run.info.status == "FAILED" and "epoch 2" in run.data.tags["status_reason"]
    assert json.loads((result.run_dir / "result.json").read_text())["status"] == "FAILED"


def test_on_epoch_end_can_stop_the_run_early(tmp_path, tiny_data):
    seen = []

    def stop_after_first(epoch, metrics):
        seen.append((epoch, metrics["val_top1"]))
        return True

    result = train(tiny_model_cfg(), _train_cfg(tmp_path), on_epoch_end=stop_after_first, datasets=tiny_data)
    assert result.stopped_early and result.status == "FINISHED"
    assert seen == [(1, result.history[0]["val_top1"])]


def test_ema_warmup_keeps_the_average_away_from_the_init(tmp_path, tiny_data):
    from sepvit.layers import init_by_name

    cfg = tiny_model_cfg()
    start = cfg.replace(num_classes=10).build()
    init_by_name(start, seed=0)  # the init build_parts gives seed 0
    init = {k: v.clone() for k, v in start.state_dict().items()}
    distances = {}
    for warmup in (True, False):
        parts = engine.build_parts(cfg, _train_cfg(tmp_path, model_ema=True, model_ema_warmup=warmup, seed=0),
                                   tiny_data)
        for epoch in (1, 2):
            engine.seed_epoch(0, epoch, parts)
            engine.train_one_epoch(parts, parts_cfg := _train_cfg(tmp_path, model_ema=True), epoch)  # noqa: F841
        ema, model = parts.ema.module.state_dict(), parts.model.state_dict()
        key = "stages.0.patch_embed.proj.weight"
        distances[warmup] = ((ema[key] - model[key]).norm().item(), (ema[key] - init[key]).norm().item())
    to_model, to_init = distances[True]
    assert to_model < to_init  # with warm-up the EMA follows the trained weights
    assert distances[False][1] < distances[False][0]  # without it, 4 updates at 0.998 still hold the init


def test_ema_run_interrupted_and_resumed_equals_uninterrupted(tmp_path, tiny_data):
    cfg, keys = tiny_model_cfg(), (*KEYS, "val_top1_ema", "val_loss_ema")
    straight = train(cfg, _train_cfg(tmp_path / "a", model_ema=True, epochs=3), datasets=tiny_data)

    def interrupt_after_first(epoch, metrics):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, _train_cfg(tmp_path / "b", model_ema=True, epochs=3), run_dir=tmp_path / "b" / "run",
              on_epoch_end=interrupt_after_first, datasets=tiny_data)
    assert load_checkpoint(tmp_path / "b" / "run" / "interrupted.pth", required=("model",))["reason"].startswith(
        "interrupted during epoch 1")
    resumed = train(cfg, _train_cfg(tmp_path / "b", model_ema=True, epochs=3),
                    resume_from=tmp_path / "b" / "run" / "last.pth", datasets=tiny_data)
    assert _numbers(resumed.history, keys) == _numbers(straight.history, keys)
    assert resumed.top1 == straight.history[-1]["val_top1_ema"]  # the EMA's accuracy is the reported one


def test_mlflow_record_contents(output_dir, tiny_data):
    tracker = Tracker(tracking_uri(output_dir), "record-test", artifact_root=output_dir / "mlartifacts")
    parent = tracker.start_run("parent")
    cfg = tiny_model_cfg(gsa=False)
    result = train(cfg, _train_cfg(output_dir, model_ema=True, mixup=0.2, cutmix=0.2), "no-gsa seed0",
                   {"config": "no-gsa", "ablation.gsa": "False"}, tracker=tracker, parent_run_id=parent,
                   datasets=tiny_data)
    run = tracker.client.get_run(result.run_id)
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    # the whole configuration, flattened, reads back into the same SepViTConfig
    model_params = {k[len("model."):]: v for k, v in params.items() if k.startswith("model.")}
    assert set(model_params) == set(result.model_cfg.to_dict())
    assert json.loads(model_params["embed_dims"]) == list(cfg.embed_dims) and model_params["gsa"] == "False"
    assert params["train.model_ema"] == "True" and params["train.batch_size"] == "16"
    assert {"git.commit", "env.torch", "env.timm", "env.mlflow", "data.name", "data.num_classes"} <= set(params)
    assert params["env.torch_threads"] == str(torch.get_num_threads()) and params["env.cpu"]  # numbers depend on it
    assert tags["mlflow.parentRunId"] == parent and tags["ablation.gsa"] == "False" and tags["kind"] == "train"
    assert tags["reported_metric"] == "val_top1_ema"
    for key in ("train_loss", "val_top1", "val_top1_ema", "val_top5", "lr", "img_per_s", "epoch_time"):
        assert [m.step for m in tracker.client.get_metric_history(result.run_id, key)] == [1, 2], key
    assert metrics["params"] == sum(p.numel() for p in cfg.build().parameters())
    assert metrics["macs"] > 0 and metrics["latency_ms"] > 0
    assert metrics["final_val_top1"] == result.history[-1]["val_top1_ema"] == result.top1
    assert metrics["best_val_top1"] == max(h["val_top1_ema"] for h in result.history)
    artifacts = {a.path for a in tracker.client.list_artifacts(result.run_id)}
    assert {"config.json", "learning_curve.png", "checkpoint"} <= artifacts
    assert [a.path for a in tracker.client.list_artifacts(result.run_id, "checkpoint")] == ["checkpoint/best.pth"]
    assert not (result.run_dir / "best.pth").exists()  # stored once: in the run's artifacts
    assert run.info.status == "FINISHED"
    best = tracker.client.download_artifacts(result.run_id, "checkpoint/best.pth", str(output_dir))
    assert load_checkpoint(best)["weights"] == "ema"
    model = load_model(best)  # the notebook's path: the best checkpoint rebuilds the model
    assert model.config == result.model_cfg
    assert not math.isnan(result.top1)


def test_a_checkpoint_from_before_a_training_field_existed_still_resumes(tmp_path):
    """A TrainConfig field added later takes its default (the old behaviour); a real difference is still refused."""
    from experiments.runner.checkpoint import CheckpointError, check_resumable_checkpoint
    from experiments.train_config import TrainConfig

    cfg, train = tiny_model_cfg(), TrainConfig()
    old = {k: v for k, v in train.to_dict().items() if k != "amp_dtype"}  # written before --amp-dtype existed
    state = {"model": {}, "optimizer": {}, "config": cfg.to_dict(), "train_config": old, "epoch": 2, "history": []}
    torch.save(state, tmp_path / "last.pth")
    assert check_resumable_checkpoint(tmp_path / "last.pth", cfg, train) == 2
    torch.save({**state, "train_config": {**old, "smoothing": 0.0}}, tmp_path / "last.pth")
    with pytest.raises(CheckpointError, match="smoothing"):
        check_resumable_checkpoint(tmp_path / "last.pth", cfg, train)
