"""Finding and loading the runner's logged models (experiments.logged_models)."""
from __future__ import annotations

import pandas as pd
import torch

from experiments.logged_models import load_logged_model, matching_runs
from workbench.tracking import flatten
from sepvit import SepViTConfig


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

    from experiments.checkpoint import save_checkpoint

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
