"""The notebooks' model zoo: runner runs at one budget, trained once and found again."""
from __future__ import annotations

import pytest

from experiments import zoo


def test_zoo_trains_a_missing_model_once_and_then_reuses_it(tmp_path):
    first = zoo.trained(["local-only"], output=tmp_path, smoke=True)["local-only"]
    again = zoo.trained(["local-only"], output=tmp_path, smoke=True)["local-only"]
    assert first.trained_here and not again.trained_here
    assert again.run_id == first.run_id and again.top1 == first.top1
    assert again.model.config.dssa is False and again.num_classes == 10 and again.val_size == 64


def test_zoo_refuses_an_unknown_model(tmp_path):
    with pytest.raises(ValueError, match="unknown zoo model"):
        zoo.trained(["resnet"], output=tmp_path, smoke=True)
