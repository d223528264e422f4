"""The trained models the notebooks compare: runner runs at one shared budget, trained once and then reused.

    models = zoo.trained(["sepvit", "swin", "local-only"])      # name -> ZooModel(model, top1, run_id, ...)

Every model is an ordinary runner run (`experiments/ablate.py` with the switches in `ZOO`, one seed, the runner's
default training budget unless `smoke`), logged to the experiment `notebook-models` of a store (default the
repository's `output/mlflow.db`, the README main command's). A model already there with the same configuration
and training configuration is loaded instead of trained again, so two notebooks (and their re-runs) compare the very
same checkpoints, all trained alike. `smoke=True` (CI) trains tiny throw-away models that stay near chance.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from torch import nn

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "notebook-models"
# name -> the runner's switches for it (the reference model is every switch at its default)
ZOO: dict[str, list[str]] = {
    "sepvit": [],
    "sepvit, zero tokens": ["--no-lwt"],
    "sepvit, avgpool tokens": ["--window-token", "avgpool"],
    "sepvit without GSA": ["--no-gsa"],
    "local-only": ["--no-dssa"],
    "swin": ["--block-pattern", "swin"],
    "twins": ["--block-pattern", "twins"],
    "msa": ["--block-pattern", "msa"],
}
SMOKE_BUDGET = ["--epochs", "1", "--train-size", "64", "--val-size", "64", "-b", "32"]


@dataclass
class ZooModel:
    name: str
    model: nn.Module  # eval mode, the reported (best-epoch) weights
    top1: float  # the run's reported top-1 (last epoch), percent
    best_top1: float
    num_classes: int
    val_size: int
    run_id: str
    trained_here: bool  # False: found in the store


def default_output(smoke: bool) -> Path:
    if smoke:
        import tempfile

        return Path(tempfile.mkdtemp(prefix="sepvit-zoo-"))
    return ROOT / "output"


def trained(names: Sequence[str], output: str | Path | None = None, smoke: bool = False,
            extra_args: Sequence[str] = ()) -> dict[str, ZooModel]:
    """The zoo models `names` (keys of ZOO), trained at one budget; missing ones are trained now (in order)."""
    from workbench.tracking import default_tracking_uri

    from experiments import ablate
    from experiments.logged_models import load_logged_model, matching_runs
    from experiments.report import load_runs

    unknown = sorted(set(names) - set(ZOO))
    if unknown:
        raise ValueError(f"unknown zoo model(s) {', '.join(unknown)}: use {', '.join(ZOO)}")
    output = Path(output) if output is not None else default_output(smoke)
    uri = default_tracking_uri(output)
    budget = [*(SMOKE_BUDGET if smoke else []), *extra_args]
    found = {}
    for name in names:
        argv = [*ZOO[name], *budget, "--output", str(output), "--experiment", EXPERIMENT]
        planned = ablate.prepare(ablate.build_parser().parse_args(argv))[0][0]
        runs = _finished_runs(uri, load_runs)
        match = _same_training(matching_runs(runs, planned.model), planned.train)
        trained_here = match.empty
        if trained_here:
            with contextlib.redirect_stdout(io.StringIO()):
                if ablate.main(argv) != 0:
                    raise RuntimeError(f"training zoo model {name!r} failed: see {output}")
            runs = _finished_runs(uri, load_runs)
            match = _same_training(matching_runs(runs, planned.model), planned.train)
        row = match.iloc[0]
        found[name] = ZooModel(name, load_logged_model(uri, row["run_id"]), float(row["top1"]),
                               float(row["best_top1"]), int(row["num_classes"]), int(row["val_size"]),
                               row["run_id"], trained_here)
    return found


def _finished_runs(uri: str, load_runs):
    from experiments.report import ReportError

    try:
        runs = load_runs(uri, EXPERIMENT, calls="all")
    except ReportError:  # no such experiment yet
        import pandas as pd

        return pd.DataFrame()
    return runs[runs["status"] == "FINISHED"] if len(runs) else runs


def _same_training(runs, train_cfg):
    """Rows trained exactly as `train_cfg` says (seed, budget, optimiser...; not where or how fast)."""
    import pandas as pd

    from workbench.tracking import flatten

    from experiments.report import BOOKKEEPING

    if runs.empty:
        return runs
    keep = pd.Series(True, index=runs.index)
    for key, value in flatten(train_cfg.to_dict(), "train.").items():
        if key in BOOKKEEPING and key != "train.seed":
            continue
        keep &= runs[key].astype(str).eq(value) if key in runs else False
    return runs[keep]
