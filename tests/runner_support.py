"""Helpers shared by the runner/engine tests: tiny model and data settings, one migrated MLflow DB per session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sepvit.config import SepViTConfig

TINY_KWARGS = ["embed_dims=(16,32,64,128)", "num_heads=(1,1,2,4)"]
TINY_FIELDS = dict(embed_dims=(16, 32, 64, 128), num_heads=(1, 1, 2, 4))
# every CLI test adds these: micro_32 with tiny widths, 32 training / 32 validation images
TINY_ARGS = ["--model-kwargs", *TINY_KWARGS, "--train-size", "32", "--val-size", "32", "-b", "16", "--epochs", "1"]


def tiny_model_cfg(**changes) -> SepViTConfig:
    return SepViTConfig.preset("sepvit_micro_32", **TINY_FIELDS, **changes)


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory) -> Path:
    """A migrated, empty SQLite MLflow DB (migrations take ~2 s): copy it per test instead of creating one."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def output_dir(tmp_path, mlflow_db_template) -> Path:
    """An output folder that already holds a fresh copy of the migrated DB (the runner's default URI)."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(mlflow_db_template, out / "mlflow.db")
    return out


def tracking_uri(output: Path) -> str:
    return f"sqlite:///{output.resolve() / 'mlflow.db'}"
