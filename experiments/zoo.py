"""The trained models the notebooks compare: runner runs at one shared budget, trained once and then reused.

    models = zoo.trained(["sepvit", "swin", "local-only"])      # name -> ZooModel(model, top1, run_id, ...)

Every model is an ordinary runner run (`experiments/ablate.py` with the switches in `ZOO`, one seed, the runner's
default training budget unless `smoke`), logged to the experiment `notebook-models` of a store (default the
repository's `output/mlflow.db`, the README main command's). A model already there that computes the same function
and was trained the same way is loaded instead of trained again, so two notebooks (and their re-runs) compare the
very same checkpoints, all trained alike. `smoke=True` (CI) trains tiny throw-away models that stay near chance.

Identity. A logged run is "the same model" when its model.* params equal the planned configuration's apart from
`sepvit.config.EXECUTION_FIELDS` (fused or explicit attention: the same output within 1e-5), and its train.*
params equal the planned training's apart from bookkeeping (`experiments.report.BOOKKEEPING`: output, device,
DataLoader workers; the seed counts). The thread count is an env.* param, never part of it. These execution details
stay recorded on every run and are returned with the model (`ZooModel.execution`). Where several runs qualify, the
newest is used (not the most accurate: picking the best of repeats would flatter the model).
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from torch import nn

from sepvit.config import EXECUTION_FIELDS, SepViTConfig

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
# how a run was computed, recorded on it but not part of what the model is
EXECUTION_PARAMS = (*(f"model.{name}" for name in EXECUTION_FIELDS), "env.torch_threads")


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
    execution: dict[str, str | None]  # EXECUTION_PARAMS as the run logged them (None: not logged)


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
    from experiments.logged_models import load_logged_model

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
        match = _same_training(same_model(_finished_runs(uri), planned.model), planned.train)
        trained_here = match.empty
        if trained_here:
            with contextlib.redirect_stdout(io.StringIO()):
                if ablate.main(argv) != 0:
                    raise RuntimeError(f"training zoo model {name!r} failed: see {output}")
            match = _same_training(same_model(_finished_runs(uri), planned.model), planned.train)
        row = match.iloc[0]
        found[name] = ZooModel(name, load_logged_model(uri, row["run_id"]), float(row["top1"]),
                               float(row["best_top1"]), int(row["num_classes"]), int(row["val_size"]),
                               row["run_id"], trained_here, _execution(uri, row["run_id"]))
    return found


def same_model(runs, config: SepViTConfig):
    """The FINISHED runs (rows of `experiments.report.load_runs`) whose model computes what `config`'s does:
    every model.* param equal but EXECUTION_FIELDS (module docstring), newest first."""
    from experiments.logged_models import matching_runs

    if runs.empty:
        return runs
    # matching_runs takes a param a run did not log as matching the field's default: without the execution
    # columns, and with the default asked for, any execution matches
    defaults = type(config)()
    neutral = config.replace(**{name: getattr(defaults, name) for name in EXECUTION_FIELDS})
    execution = [f"model.{name}" for name in EXECUTION_FIELDS if f"model.{name}" in runs]
    found = matching_runs(runs.drop(columns=execution), neutral)
    return runs.loc[found.index].sort_values("start_time", ascending=False)


def _finished_runs(uri: str):
    """Every FINISHED run of the zoo's experiment, read call by call: `load_runs(calls="all")` pools calls and
    refuses a label whose runs differ in any param, which runs of one model computed differently do."""
    import pandas as pd

    from experiments.report import ReportError, list_calls, load_runs

    try:
        calls = list_calls(uri, EXPERIMENT)
    except ReportError:  # no such experiment yet
        return pd.DataFrame()
    frames = [frame for parent in calls["parent_run_id"]
              if not (frame := load_runs(uri, EXPERIMENT, calls=[parent])).empty]
    runs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return runs[runs["status"] == "FINISHED"] if len(runs) else runs


def _execution(uri: str, run_id: str) -> dict[str, str | None]:
    """EXECUTION_PARAMS of one run, as logged."""
    from mlflow.tracking import MlflowClient

    params = MlflowClient(tracking_uri=uri).get_run(run_id).data.params
    return {name: params.get(name) for name in EXECUTION_PARAMS}


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
