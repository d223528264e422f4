"""Finding and loading the runner's logged models (experiments.logged_models)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import timm.data
import torch

from experiments.runner.checkpoint import load_model, save_checkpoint
from experiments.logged_models import load_logged_model, matching_runs
from experiments.train_config import TrainConfig
from workbench.tracking import flatten
from sepvit import SepViTConfig
from runner_support import tiny_model_cfg, train


def micro(**changes) -> SepViTConfig:
    base = dict(embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 2, 4))
    return SepViTConfig.preset("sepvit_micro_32", **{**base, **changes})


def test_matching_runs_picks_the_best_finished_run_of_exactly_this_config():
    cfg = micro()
    same = flatten(cfg.to_dict(), "model.")
    other = flatten(cfg.replace(window_token="zero").to_dict(), "model.")
    runs = pd.DataFrame([
        {"run_id": "a", "status": "FINISHED", "best_top1": 20.0, **same},
        {"run_id": "b", "status": "FINISHED", "best_top1": 30.0, **same},
        {"run_id": "c", "status": "FAILED", "best_top1": 90.0, **same},
        {"run_id": "d", "status": "FINISHED", "best_top1": 95.0, **other},
    ])
    assert matching_runs(runs, cfg)["run_id"].tolist() == ["b", "a"]
    # a param the runs lack, where this config is not the default: it cannot be checked, so no match
    assert matching_runs(runs.drop(columns=["model.embed_dims"]), cfg).empty


def test_runs_logged_before_a_field_existed_match_its_default():
    cfg = micro()
    old = {k: v for k, v in flatten(cfg.to_dict(), "model.").items() if k != "model.proj_drop_rate"}
    runs = pd.DataFrame([{"run_id": "old", "status": "FINISHED", "best_top1": 50.0, **old},
                         {"run_id": "new", "status": "FINISHED", "best_top1": 40.0,
                          **flatten(cfg.to_dict(), "model.")}])
    assert matching_runs(runs, cfg)["run_id"].tolist() == ["old", "new"]  # proj_drop_rate=0.0: the old behaviour
    assert matching_runs(runs, cfg.replace(proj_drop_rate=0.1)).empty


def test_load_logged_model_reads_the_runners_checkpoint_artifact(tmp_path):
    from mlflow.tracking import MlflowClient

    torch.manual_seed(0)
    cfg = micro()
    model = cfg.build().eval()
    path = save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 1}, tmp_path / "best.pth")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(exp).info.run_id
    client.log_artifact(run_id, str(path), "checkpoint")
    loaded = load_logged_model(uri, run_id)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert loaded.config == cfg


# ---------------------------------------------------------------------------------- pretrained_cfg round trip
def _write_image_folder(root, classes=("cat", "dog"), per_class=2):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, size=(40, 52, 3), dtype=np.uint8)).save(
                    root / split / name / f"{i}.png")


def _tiny_run(out, **data):
    train_cfg = TrainConfig(batch_size=8, epochs=1, warmup_epochs=0, output=str(out), **data)
    return train(tiny_model_cfg(), train_cfg, "tiny", cost={})  # cost={}: no fvcore trace


def test_a_runs_checkpoint_resolves_to_its_own_data_config(tmp_path):
    """digits: one channel, 32 px, the training split's own mean/std, fed whole (no crop)."""
    from experiments.data import build_datasets

    result = _tiny_run(tmp_path, dataset="digits", train_size=16, val_size=8)
    info = build_datasets("digits", train_size=16, val_size=8)[2]
    model = load_model(result.run_dir / "best.pth")
    resolved = timm.data.resolve_model_data_config(model)
    assert resolved["input_size"] == (1, 32, 32)
    assert resolved["mean"] == pytest.approx(info.mean) and resolved["std"] == pytest.approx(info.std)
    assert resolved["mean"] != timm.data.IMAGENET_DEFAULT_MEAN
    assert resolved["crop_pct"] == 1.0
    assert model.pretrained_cfg["num_classes"] == 10 and "label_names" not in model.pretrained_cfg  # numbers only
    assert load_model(result.run_dir / "last.pth").pretrained_cfg == model.pretrained_cfg


def test_an_imagefolder_checkpoint_reproduces_the_evaluation_transform_and_names_its_classes(tmp_path):
    from PIL import Image

    _write_image_folder(tmp_path / "photos")
    result = _tiny_run(tmp_path / "out", dataset="imagefolder", data_dir=str(tmp_path / "photos"), img_size=32)
    model = load_model(result.run_dir / "best.pth")
    config = timm.data.resolve_model_data_config(model)
    assert config["input_size"] == (3, 32, 32) and config["crop_pct"] == 0.875
    assert model.pretrained_cfg["label_names"] == ("cat", "dog")
    # a user's timm pipeline from the checkpoint alone gives exactly the tensor the run was evaluated on
    from experiments.data import build_datasets

    val = build_datasets("imagefolder", str(tmp_path / "photos"), img_size=32)[1]
    path, label = val.samples[3]
    expected, _ = val[3]
    torch.testing.assert_close(timm.data.create_transform(**config)(Image.open(path).convert("RGB")), expected)
    assert model.pretrained_cfg["label_names"][label] == "dog"


def test_a_checkpoint_without_pretrained_cfg_still_gives_its_models_size(tmp_path):
    cfg = tiny_model_cfg(num_classes=7)
    path = save_checkpoint({"model": cfg.build().state_dict(), "config": cfg.to_dict()}, tmp_path / "old.pth")
    model = load_model(path)
    assert timm.data.resolve_model_data_config(model)["input_size"] == (3, 32, 32)
    assert model.pretrained_cfg["num_classes"] == 7
