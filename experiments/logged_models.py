"""Models the runner logged to MLflow: find the runs of a configuration, load a run's checkpoint.

These belong to the experiment side (they read the runner's MLflow params and artifacts); analysis code
receives the loaded model and never imports this package.
"""
from __future__ import annotations

import tempfile
from typing import Any

import pandas as pd

from experiments.runner.checkpoint import load_model
from workbench.tracking import flatten


def matching_runs(runs: pd.DataFrame, config: Any) -> pd.DataFrame:
    """The FINISHED runs (rows of `experiments.report.load_runs`) whose logged model.* params equal `config`
    (a SepViTConfig), best validation top-1 first.

    A field a run did not log (added to the configuration after the run) matches when `config` holds that
    field's default, which is what the run's model had: new fields default to the old behaviour.
    """
    if runs.empty:
        return runs
    wanted = flatten(config.to_dict(), "model.")
    defaults = flatten(type(config)().to_dict(), "model.")
    keep = runs["status"].eq("FINISHED")
    for key, value in wanted.items():
        unlogged_default = value == defaults.get(key)
        if key in runs:
            logged = runs[key]
            keep &= logged.astype(str).eq(value) | (logged.isna() & unlogged_default)
        elif not unlogged_default:
            keep &= False
    return runs[keep].sort_values("best_top1", ascending=False, na_position="last")


def load_logged_model(tracking_uri: str, run_id: str, artifact: str = "checkpoint/best.pth"):
    """The SepViT of a runner's run: its checkpoint artifact, downloaded from MLflow, loaded in eval mode."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in notebooks
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=tmp,
                                                   tracking_uri=tracking_uri)
        return load_model(path)
