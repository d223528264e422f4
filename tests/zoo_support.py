"""A smoke zoo store shared by the zoo and notebook tests: one model at two seeds, trained once per session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from experiments import zoo

STORE_LOOKUP = {"local-only": (0, 1)}  # what the shared store holds (smoke budget)


@pytest.fixture(scope="session")
def zoo_store(tmp_path_factory, mlflow_db_template) -> Path:
    """An output folder holding `STORE_LOOKUP` at the zoo's smoke budget, both seeds from ONE runner call."""
    folder = tmp_path_factory.mktemp("zoo_store")
    shutil.copy(mlflow_db_template, folder / "mlflow.db")  # a migrated store: no 2 s migration
    threads = torch.get_num_threads()
    try:
        zoo.trained_seeds(STORE_LOOKUP, output=folder, smoke=True, parallel=1)
    finally:
        torch.set_num_threads(threads)
    return folder
