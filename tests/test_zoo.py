"""The notebooks' model zoo: runner runs at one budget, trained once and found again by what the model computes."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from experiments import zoo
from sepvit.config import SepViTConfig
from workbench.tracking import flatten


def _run(run_id: str, cfg: SepViTConfig, start: int, best: float) -> dict:
    return dict(run_id=run_id, status="FINISHED", start_time=start, best_top1=best, **flatten(cfg.to_dict(), "model."))


def test_same_model_ignores_how_attention_was_computed_but_nothing_else():
    nano = SepViTConfig.preset("sepvit_nano_32")
    assert not nano.fused_attn
    runs = pd.DataFrame([_run("fused-old", nano.replace(fused_attn=True), 1, 90.0),
                         _run("explicit-new", nano, 2, 80.0),
                         _run("local-only", nano.replace(dssa=False), 3, 85.0),
                         _run("other-window", nano.replace(fused_attn=True, window_size=2), 4, 70.0)])
    assert zoo.same_model(runs, nano)["run_id"].tolist() == ["explicit-new", "fused-old"]  # newest first
    assert zoo.same_model(runs, nano.replace(fused_attn=True))["run_id"].tolist() == ["explicit-new", "fused-old"]
    found = zoo.same_model(runs, nano.replace(dssa=False))
    assert found["run_id"].tolist() == ["local-only"] and found["model.fused_attn"].tolist() == ["False"]  # kept
    assert zoo.same_model(runs.iloc[:0], nano).empty


def test_zoo_trains_a_missing_model_once_and_then_finds_it_however_it_was_computed(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # trained on the fused kernel with one thread; looked up for the preset's explicit path
        first = zoo.trained(["local-only"], output=tmp_path, smoke=True,
                            extra_args=["--model-kwargs", "fused_attn=true"])["local-only"]
    finally:
        torch.set_num_threads(threads)
    again = zoo.trained(["local-only"], output=tmp_path, smoke=True)["local-only"]
    assert first.trained_here and not again.trained_here
    assert again.run_id == first.run_id and again.top1 == first.top1
    assert again.execution == {"model.fused_attn": "True", "env.torch_threads": "1"}
    assert again.model.config.dssa is False and again.num_classes == 10 and again.val_size == 64
    other = zoo.trained(["local-only"], output=tmp_path, smoke=True, extra_args=["--seed", "1"])["local-only"]
    assert other.trained_here and other.run_id != first.run_id  # the training seed is part of the identity


def test_zoo_refuses_an_unknown_model(tmp_path):
    with pytest.raises(ValueError, match="unknown zoo model"):
        zoo.trained(["resnet"], output=tmp_path, smoke=True)
