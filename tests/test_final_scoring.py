"""The final weights of a run scored on more generated validation images (`TrainConfig.final_val_size`): what the
run reports, what MLflow and the call's report say, how it resolves, what it refuses, and a stop during it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from experiments.data import FINAL_VAL_SIZE, final_val_images, generated_validation_set
from experiments.report import load_runs
from experiments.runner import run as run_module
from experiments.runner.checkpoint import load_checkpoint, model_from_checkpoint
from experiments.train_config import TrainConfig
from runner_support import ROOT, TINY_ARGS, tiny_model_cfg, tracking_uri, train

PER_EPOCH, FINAL = 32, 96


def _train_cfg(output, **changes) -> TrainConfig:
    return TrainConfig(**{"train_size": 32, "val_size": PER_EPOCH, "final_val_size": FINAL, "batch_size": 16,
                          "epochs": 1, "output": str(output), **changes})


def _top1_by_hand(model, images) -> tuple[float, torch.Tensor]:
    loader = torch.utils.data.DataLoader(images, batch_size=50)
    with torch.inference_mode():
        right = torch.cat([model(x).argmax(-1) == y for x, y in loader])
    return 100.0 * right.float().mean().item(), right


# ------------------------------------------------------------------------------ how many images
def test_the_default_scores_generated_data_on_ten_thousand_images_and_nothing_else():
    assert final_val_images(TrainConfig()) == FINAL_VAL_SIZE == 10_000
    assert final_val_images(TrainConfig(dataset="mirror-pairs")) == FINAL_VAL_SIZE
    assert final_val_images(TrainConfig(val_size=1000)) == FINAL_VAL_SIZE  # the default size, given explicitly
    assert final_val_images(TrainConfig(val_size=200)) == 0  # a per-epoch set the user sized: its score stands
    assert final_val_images(TrainConfig(dataset="digits")) == 0  # read from files: no more images to draw
    assert final_val_images(TrainConfig(final_val_size=0)) == 0
    assert final_val_images(TrainConfig(val_size=200, final_val_size=500)) == 500


@pytest.mark.parametrize("changes, message", [
    ({"dataset": "digits", "final_val_size": 5000}, "read from files"),
    ({"val_size": 2000, "final_val_size": 1500}, "not above val_size 2000"),
    ({"val_size": 2000, "final_val_size": 2000}, "not above val_size 2000"),
    ({"final_val_size": 1000}, "not above val_size 1000"),  # the default per-epoch set counts too
    ({"final_val_size": 500}, "not above val_size 1000"),
    ({"final_val_size": -3}, "positive integer, 0"),
])
def test_what_cannot_be_scored_is_refused_saying_what_to_pass(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_the_command_line_refuses_in_one_line_with_exit_code_2(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "ablate.py"), *TINY_ARGS, "--dataset", "digits",
                           "--final-val-size", "5000", "--output", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "read from files" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------ what a run reports
@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    from workbench.tracking import Tracker

    output = tmp_path_factory.mktemp("final")
    tracker = Tracker(tracking_uri(output), "final-scoring")
    result = train(tiny_model_cfg(), _train_cfg(output), "scored seed0", run_dir=output / "scored", tracker=tracker)
    return output, result


def test_the_run_reports_its_final_weights_on_the_final_images(scored_run):
    output, result = scored_run
    assert result.status == "FINISHED" and result.scored_images == FINAL
    ckpt = load_checkpoint(output / "scored" / "last.pth")
    assert ckpt["epoch"] == result.final["epoch"] == 1
    model = model_from_checkpoint(ckpt, output / "scored" / "last.pth", ema=False)
    final_set = generated_validation_set(result.train_cfg, FINAL, 32)
    top1, right = _top1_by_hand(model, final_set)
    assert result.top1 == pytest.approx(top1)  # computed independently from the saved weights
    # the per-epoch images are the final set's first ones, and the epoch's score is the score on them
    per_epoch = generated_validation_set(result.train_cfg.replace(final_val_size=0), PER_EPOCH, 32)
    assert torch.equal(per_epoch.images, final_set.images[:PER_EPOCH])
    assert result.history[-1]["val_top1"] == pytest.approx(100.0 * right[:PER_EPOCH].float().mean().item())


def test_mlflow_and_the_report_carry_the_final_score_and_its_image_count(scored_run):
    output, result = scored_run
    from mlflow.tracking import MlflowClient

    logged = MlflowClient(tracking_uri(output)).get_run(result.run_id)
    metrics = logged.data.metrics
    assert metrics["final_val_top1"] == pytest.approx(result.top1)
    assert metrics["final_val_images"] == FINAL
    inputs = {i.dataset.name: (json.loads(i.dataset.profile)["num_rows"], i.tags[0].value)
              for i in logged.inputs.dataset_inputs}
    assert inputs["synthetic-val"] == (PER_EPOCH, "validation")
    assert inputs["synthetic-val-final"] == (FINAL, "final validation")  # the images the reported top-1 is on
    frame = load_runs(tracking_uri(output), "final-scoring", calls="all")
    row = frame[frame["run_id"] == result.run_id].iloc[0]
    assert row["top1"] == pytest.approx(result.top1) and row["val_size"] == FINAL  # the chance interval's images
    saved = run_module.Result.from_dict(json.loads((output / "scored" / "result.json").read_text()),
                                        output / "scored")
    assert saved.top1 == result.top1 and saved.scored_images == FINAL


def test_a_stop_during_the_final_scoring_keeps_the_weights_and_a_resume_finishes_it(tmp_path, monkeypatch):
    from experiments.runner.run import RunInterrupted

    cfg = _train_cfg(tmp_path)
    uninterrupted = train(tiny_model_cfg(), cfg, "whole seed0", run_dir=tmp_path / "whole")
    real = run_module._score_final

    def stopped(parts, result, images):
        raise RunInterrupted(signum=15)

    monkeypatch.setattr(run_module, "_score_final", stopped)
    with pytest.raises(RunInterrupted):
        train(tiny_model_cfg(), cfg, "cut seed0", run_dir=tmp_path / "cut")
    saved = json.loads((tmp_path / "cut" / "result.json").read_text())
    assert saved["status"] == "KILLED" and "scoring of its final weights" in saved["reason"]
    assert not (tmp_path / "cut" / "interrupted.pth").exists()  # last.pth holds the final weights already
    assert load_checkpoint(tmp_path / "cut" / "last.pth")["epoch"] == cfg.epochs
    monkeypatch.setattr(run_module, "_score_final", real)
    resumed = train(tiny_model_cfg(), cfg, resume_from=tmp_path / "cut" / "last.pth")
    assert resumed.status == "FINISHED" and resumed.final == uninterrupted.final  # nothing retrained, same score
    assert len(resumed.history) == cfg.epochs


def test_an_error_during_the_final_scoring_says_so_and_how_to_finish(tmp_path, monkeypatch):
    def broken(parts, result, images):
        raise RuntimeError("disk unreadable")

    monkeypatch.setattr(run_module, "_score_final", broken)
    with pytest.raises(RuntimeError):
        train(tiny_model_cfg(), _train_cfg(tmp_path), "broken seed0", run_dir=tmp_path / "broken")
    saved = json.loads((tmp_path / "broken" / "result.json").read_text())
    assert saved["status"] == "FAILED" and saved["reason"].startswith("while scoring its final weights (--resume")
    assert "disk unreadable" in saved["reason"]


def test_a_run_with_an_ema_reports_the_emas_final_score(tmp_path):
    result = train(tiny_model_cfg(), _train_cfg(tmp_path, model_ema=True, epochs=2), "ema seed0",
                   run_dir=tmp_path / "ema")
    assert result.top1 == result.final["val_top1_ema"] and "val_top1" in result.final  # both scored, EMA reported
    path = tmp_path / "ema" / "last.pth"
    ema = model_from_checkpoint(load_checkpoint(path), path, ema=True)
    top1, _ = _top1_by_hand(ema, generated_validation_set(result.train_cfg, FINAL, 32))
    assert result.top1 == pytest.approx(top1)
