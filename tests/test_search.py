"""experiments/search.py and its spaces: valid samples only, bad input refused before any trial, a study end to end
(reference first, resumed by a second call, one MLflow child per trial), pruning, faults (a raising trial, a killed
worker), multi-objective Pareto fronts and latency measured once per architecture."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest

from experiments import search, search_objective, search_storage
from experiments.search_call import plan_search
from experiments.search_report import differences, pareto_front, summary_text, trials_frame
from experiments.search_space import (FIT, InvalidCombination, SpaceError, default_space, load_space, parse_space,
                                      training_space)
from experiments.train_config import TrainConfig
from workbench.cli import UsageError
from runner_support import ROOT, mlflow_db_template  # noqa: F401
from sepvit.config import WINDOW_TOKENS, SepViTConfig

TINY = ["--train-size", "32", "--val-size", "32", "-b", "16", "--epochs", "1"]
NANO = SepViTConfig.preset("sepvit_nano_32")
TRAIN = TrainConfig(img_size=32)


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def optuna_db_template(tmp_path_factory) -> Path:
    """An Optuna SQLite storage with its tables (created once; tests copy it)."""
    path = tmp_path_factory.mktemp("optuna_template") / "optuna.db"
    search_storage.open_storage(f"sqlite:///{path}", heartbeat=None)
    return path


@pytest.fixture
def out(tmp_path, mlflow_db_template, optuna_db_template) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    shutil.copy(mlflow_db_template, folder / "mlflow.db")
    shutil.copy(optuna_db_template, folder / "optuna.db")
    return folder


def _storage(folder: Path) -> str:
    return f"sqlite:///{folder / 'optuna.db'}"


def _study(folder: Path, name: str = search.DEFAULT_STUDY) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=_storage(folder))


def _runs(folder: Path, experiment: str = search.DEFAULT_EXPERIMENT):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return (client, [r for r in runs if r.data.tags.get("kind") == "train"],
            [r for r in runs if r.data.tags.get("kind") == "search"])


def _call(argv: list[str]) -> int:
    try:
        return search.main(argv)
    except SystemExit as exc:  # argparse's own refusals
        return exc.code


def _tiny_train(out: Path, epochs: int = 1) -> TrainConfig:
    """TINY as a TrainConfig."""
    return TrainConfig(train_size=32, val_size=32, batch_size=16, epochs=epochs, output=str(out))


def _yaml(folder: Path, text: str, name: str = "space.yaml") -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


def _subprocess(args: list[str], fault: str | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    if fault:
        env["SEPVIT_SEARCH_FAULT"] = fault
    script = "tests/search_faults.py" if fault else "experiments/search.py"
    return subprocess.Popen([sys.executable, script, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


# ---------------------------------------------------------------------------------- spaces
def test_default_space_covers_every_group_size_that_fits_and_nothing_else():
    space = default_space(NANO)
    assert space.names == ["window_size", "group_size.2", "group_size.3", "window_token"]
    combos, complete = space.combinations(NANO, TRAIN)
    assert complete and all(error is None for _, error in combos)  # nothing invalid is ever proposed
    # maps 16 and 8 px in stages 2-3: windows 4/8 give 4/2 and 2/1 windows per side
    fits = {4: (4, 2), 8: (2, 1)}
    for window, (most2, most3) in fits.items():
        seen = {(v["group_size.2"], v["group_size.3"]) for v, _ in combos if v["window_size"] == window}
        assert seen == {(a, b) for a in range(1, most2 + 1) for b in range(1, most3 + 1)}
    assert len(combos) == len(WINDOW_TOKENS) * sum(a * b for a, b in fits.values())
    with_small = parse_space({**space.to_dict(), "window_size": [2, 4, 8]}, "t")  # a smaller window, by YAML
    seen = {(v["group_size.2"], v["group_size.3"]) for v, _ in with_small.combinations(NANO, TRAIN)[0]
            if v["window_size"] == 2}
    assert seen == {(a, b) for a in range(1, 9) for b in range(1, 5)}
    for values, _ in combos[:40]:
        _, model, _ = space.sample_fixed(values, NANO, TRAIN)
        for stage in (1, 2):
            assert model.group_sizes[stage] <= model.windows_per_side(stage)


def test_the_reference_is_the_papers_configuration_and_samples_back_to_it():
    for space in (default_space(NANO), training_space(NANO, TRAIN)):
        values, why = space.reference_values(NANO, TRAIN)
        assert why == "" and values["group_size.2"] == 2 and values["group_size.3"] == 2
        assert values["window_size"] == 4 and values["window_token"] == "learnable"
        _, model, train = space.sample_fixed(values, NANO, TRAIN)
        assert model.group_sizes == NANO.group_sizes and model.window_size == NANO.window_size
        assert train == TRAIN
    values, why = parse_space({"window_size": [2, 8]}, "t").reference_values(NANO, TRAIN)
    assert values is None and "window_size=4" in why


def test_yaml_values_are_typed_by_the_field_parser(tmp_path):
    path = _yaml(tmp_path, "embed_dims: ['16,32,64,128', [24, 48, 96, 192]]\n"
                           "num_heads: ['1,1,2,4']\n"
                           "gsa: [true, 'false']\n"
                           "lr: {low: 1e-4, high: 1e-2, log: true}\n"
                           "group_size.2: {low: 1, high: fit}\n")
    space = load_space(path, NANO, TRAIN)
    dims, _, gsa, lr, group = space.params
    assert dims.choices == ("16,32,64,128", "24,48,96,192") and dims.value("24,48,96,192") == (24, 48, 96, 192)
    assert gsa.choices == (True, False)
    assert (lr.low, lr.high, lr.log, lr.kind) == (1e-4, 1e-2, True, "float")
    assert group.high == FIT and group.kind == "int"
    assert parse_space(space.to_dict(), "again").to_dict() == space.to_dict()
    # conditional: without grouped blocks (gsa=false) the stage-2 group size is not sampled
    values, model, _ = space.sample_fixed({"embed_dims": "16,32,64,128", "num_heads": "1,1,2,4", "gsa": False,
                                           "lr": 1e-3}, NANO, TRAIN)
    assert "group_size.2" not in values and model.gsa is False and model.group_size == NANO.group_size


def test_an_invalid_combination_is_caught_before_training():
    space = parse_space({"dssa": [True, False], "window_token": ["learnable", "zero"]}, "t")
    info = space.check(NANO, TRAIN)
    assert info["combinations"] == 4 and info["valid"] == 3
    with pytest.raises(InvalidCombination, match="dssa=False"):
        space.sample_fixed({"dssa": False, "window_token": "zero"}, NANO, TRAIN)


def test_a_group_range_that_cannot_fit_the_sampled_window_is_invalid_not_a_crash(tmp_path):
    space = load_space(_yaml(tmp_path, "window_size: [4, 8]\ngroup_size.2: {low: 3, high: fit}\n"), NANO, TRAIN)
    info = space.check(NANO, TRAIN)
    assert info["valid"] < info["combinations"]  # window 8 leaves too few windows per side for a group of 3

    def optuna_like(p, high):  # Optuna's suggest_int raises on an empty range; it must never be reached
        if p.choices is not None:
            return 8 if p.name == "window_size" else p.choices[0]
        assert high >= p.low, f"{p.name} sampled from an empty range [{p.low}, {high}]"
        return p.low

    with pytest.raises(InvalidCombination, match="group_size.2 needs at least 3"):
        space.sample(optuna_like, NANO, TRAIN)


SPACE_REFUSALS = {
    "empty": ({}, "empty"),
    "contradictory": ({"dssa": [False], "window_token": ["zero"]}, "no combination"),
    "never takes effect": ({"gsa": [False], "group_size.2": {"low": 1, "high": FIT}}, "never takes effect"),
    "unknown field": ({"colour": [1, 2]}, "unknown field"),
    "data-owned field": ({"img_size": [32, 64]}, "--img-size"),
    "shared budget": ({"epochs": [1, 2]}, "--epochs"),
    "stage without groups": ({"group_size.4": [1]}, "N = 2 or 3"),
    "wrong type": ({"window_size": [2.5]}, "expects int"),
    "reversed range": ({"lr": {"low": 0.1, "high": 0.001}}, "above high"),
    "range of text": ({"window_token": {"low": 1, "high": 2}}, "not a number"),
    "no choices": ({"window_size": []}, "no choices"),
    "repeated choice": ({"window_size": [4, 4]}, "repeats"),
    "log range from 0": ({"lr": {"low": 0, "high": 0.01, "log": True}}, "low > 0"),
    "fit on another field": ({"window_size": {"low": 1, "high": FIT}}, "fit only applies"),
    "not a mapping": ([1, 2], "must map"),
}


@pytest.mark.parametrize("case", list(SPACE_REFUSALS), ids=list(SPACE_REFUSALS))
def test_spaces_that_cannot_be_searched_are_refused_with_one_line(case):
    spec, expected = SPACE_REFUSALS[case]
    with pytest.raises(SpaceError) as error:
        parse_space(spec, "t").check(NANO, TRAIN)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_pareto_front_and_differences():
    frame = pd.DataFrame({"number": [0, 1, 2, 3, 4], "state": ["COMPLETE"] * 4 + ["PRUNED"],
                          "top1": [50.0, 60.0, 55.0, 40.0, 99.0], "macs": [10.0, 20.0, 25.0, 5.0, 1.0],
                          "param group_size.2": [2, 1, 4, 2, 2], "param window_size": [4, 4, 8, 4, 4]})
    assert list(pareto_front(frame)["number"]) == [3, 0, 1]  # 2 is dominated by 1; a pruned trial never counts
    assert differences(frame.iloc[1], frame.iloc[0], ["param group_size.2", "param window_size"]) == \
        "group_size.2 2->1"


# ---------------------------------------------------------------------------------- bad input
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BAD_INPUT = {
    "unknown objective": (["--objectives", "top1", "flops"], "invalid choice"),
    "objectives without top1": (["--objectives", "macs"], "top1 must be one"),
    "repeated objective": (["--objectives", "top1", "top1"], "repeats"),
    "pruner with several objectives": (["--objectives", "top1", "macs", "--pruner", "median"], "single objective"),
    "unknown sampler": (["--sampler", "cmaes"], "invalid choice"),
    "grid over a continuous range": (["--space", "training", "--sampler", "grid"], "finite space"),
    "zero processes": (["--processes", "0"], "--processes"),
    "--parallel without --confirm": (["--parallel", "2"], "use it with --confirm"),
    "negative timeout": (["--timeout", "-5"], "--timeout"),
    "bad study name": (["--study-name", "it's"], "--study-name"),
    "empty space file": (["--space", "SPACE:"], "empty"),
    "contradictory space file": (["--space", "SPACE:dssa: [false]\nwindow_token: [zero]\n"], "no combination"),
    "unknown field in space file": (["--space", "SPACE:colour: [red]\n"], "unknown field"),
    "space file that is not YAML": (["--space", "SPACE:window_size: [2, 4\n"], "not valid YAML"),
    "missing space file": (["--space", "/nonexistent/space.yaml"], "cannot read"),
    "unknown predefined space": (["--space", "everything"], "default, training"),
    "unreachable PostgreSQL": (["--storage", "postgresql://u@127.0.0.1:PORT/optuna"], "cannot reach"),
    "unknown storage scheme": (["--storage", "redis://localhost/0"], "postgresql://"),
    "in-memory storage": (["--storage", "sqlite:///:memory:"], "in-memory"),
    "unwritable storage": (["--storage", "sqlite:////proc/no/optuna.db"], "/proc/no"),
    "unknown model field": (["--model-kwargs", "colour=1"], "colour"),
    "unknown dataset": (["--dataset", "mnist"], "unknown dataset"),
    "zero batch size": (["-b", "0"], "batch_size"),
    "unreachable tracking server": (["--tracking-uri", "http://127.0.0.1:PORT"], "unreachable"),
    "300-character experiment name": (["--experiment", "e" * 300], "--experiment is 300 characters long"),
    "300-character study name": (["--study-name", "s" * 300], "--study-name is 300 characters long"),
    "negative --confirm": (["--confirm", "-1"], "--confirm must be 0 (off) or at least 2 seeds"),
    "one-seed --confirm": (["--confirm", "1"], "--confirm must be 0 (off) or at least 2 seeds"),
    "--confirm over a training space": (["--space", "training", "--confirm", "3"], "training fields (lr, weight_decay)"),
    "--n-trials 0 without --confirm": (["--n-trials", "0"], "0 only with --confirm"),
    "--n-trials 0 --confirm on a new study": (["--n-trials", "0", "--confirm", "2"], "holds no study"),
    "--parallel 0": (["--confirm", "2", "--parallel", "0"], "--parallel"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
def test_bad_input_is_refused_before_any_trial(case, out, capsys, monkeypatch):
    import experiments.runner.run as run

    monkeypatch.setattr(run, "train_and_evaluate", lambda *a, **k: pytest.fail("training started"))
    argv, expected = BAD_INPUT[case]
    argv = [a.replace("PORT", str(_free_port())) for a in argv]
    argv = [_yaml(out.parent, a[len("SPACE:"):]) if a.startswith("SPACE:") else a for a in argv]
    start = time.perf_counter()
    rc = _call([*TINY, *argv, "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert expected in err and "Traceback" not in err, err
    assert time.perf_counter() - start < 30
    assert optuna.get_all_study_names(_storage(out)) == []  # no study, so no trial
    _, children, parents = _runs(out)
    assert not children and not parents


# ---------------------------------------------------------------------------------- a study, continued
@pytest.fixture(scope="module")
def continued_study(tmp_path_factory, mlflow_db_template):
    """Three trials of two epochs, then a second call of the same command adding two more."""
    folder = tmp_path_factory.mktemp("study") / "out"
    folder.mkdir()
    shutil.copy(mlflow_db_template, folder / "mlflow.db")
    argv = [*TINY[:-2], "--epochs", "2", "--output", str(folder)]
    first = search.main([*argv, "--n-trials", "3"])
    after_first = [(t.number, t.state) for t in _study(folder).trials]
    second = search.main([*argv, "--n-trials", "2"])
    return folder, argv, (first, second), after_first


def test_a_study_starts_with_the_reference_and_logs_one_child_run_per_trial(continued_study):
    folder, _, (first, _), after_first = continued_study
    assert first == 0 and len(after_first) == 3
    study = _study(folder)
    assert study.metric_names == ["top1"]  # optuna-dashboard's name for the objective
    assert study.user_attrs["sepvit.data"] == {"name": "synthetic", "num_classes": 10, "val_size": 32}
    reference = study.trials[0]
    assert reference.user_attrs["reference"] is True
    assert reference.params == {"window_size": 4, "window_token": "learnable", "group_size.2": 2, "group_size.3": 2}
    assert [t.user_attrs.get("reference", False) for t in study.trials].count(True) == 1  # enqueued once
    for trial in study.trials:
        assert trial.user_attrs["macs"] > 0 and trial.state in (optuna.trial.TrialState.COMPLETE,
                                                                optuna.trial.TrialState.PRUNED)
    client, children, parents = _runs(folder)
    assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)
    numbers = sorted(int(c.data.tags["optuna.trial_number"]) for c in children)
    assert numbers == [0, 1, 2, 3, 4]
    by_number = {int(c.data.tags["optuna.trial_number"]): c for c in children}
    for trial in study.trials:
        child = by_number[trial.number]
        assert child.data.tags["optuna.state"] == trial.state.name
        assert child.data.tags["mlflow.parentRunId"] == trial.user_attrs["mlflow_parent_run_id"]
        if "duplicate_of" not in trial.user_attrs:
            assert child.data.params["model.window_size"] == str(trial.params["window_size"])
    first_parent = next(p for p in parents if p.data.tags["trials_before"] == "0")
    artifacts = {a.path for a in client.list_artifacts(first_parent.info.run_id)}
    assert {"best_trial.json", "trials.csv", "importances.json", "report.txt", "space.json",
            "optimization_history.png", "param_importances.png", "parallel_coordinate.png"} <= artifacts
    assert "best_minus_reference_top1" in first_parent.data.metrics


def test_the_same_command_adds_trials_to_the_same_study(continued_study):
    folder, _, (_, second), after_first = continued_study
    assert second == 0
    study = _study(folder)
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert [(t.number, t.state) for t in study.trials[:3]] == after_first  # earlier trials untouched
    calls = {t.user_attrs["mlflow_parent_run_id"] for t in study.trials}
    assert len(calls) == 2
    text = summary_text(study)
    assert "reference (the base configuration, trial 0)" in text and "vs reference" in text


def test_continuing_a_study_with_other_settings_is_refused(continued_study, capsys):
    folder, argv, _, _ = continued_study
    for extra, expected in ((["--epochs", "3"], "training settings"), (["--space", "training"], "search space"),
                            (["--objectives", "top1", "macs", "--pruner", "none"], "--objectives top1")):
        rc = _call([*argv, *extra, "--n-trials", "1"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert len(_study(folder).trials) == 5


def test_a_study_made_before_final_scoring_continues_as_its_trials_were_scored(continued_study):
    folder, argv, _, _ = continued_study
    study = _study(folder)
    saved = study.user_attrs["sepvit.settings"]
    old = {**saved, "train": {k: v for k, v in saved["train"].items() if k != "final_val_size"}}
    study.set_user_attr("sepvit.settings", old)  # as a study made before the field existed stored it
    try:
        # its trials (--val-size 32) were scored on their per-epoch images, as the same command still scores them
        search.prepare(search.build_parser().parse_args(argv), argv)
        more = [*argv, "--final-val-size", "64"]
        with pytest.raises(UsageError, match="final_val_size: 0 -> 64"):
            search.prepare(search.build_parser().parse_args(more), more)
    finally:
        study.set_user_attr("sepvit.settings", saved)


# ---------------------------------------------------------------------------------- pruning
def test_a_pruned_trial_stops_training_and_is_tagged(out):
    prepared = plan_search(NANO, _tiny_train(out, epochs=3))  # the API the command line calls
    study = search_storage.open_study(prepared)
    from workbench.tracking import Tracker

    settings = prepared.settings
    tracker = Tracker(settings.tracking_uri, settings.experiment, settings.artifact_root)
    settings.parent_run_id = tracker.start_run("parent", tags={"kind": "search"})
    # a pruner that prunes whenever it may: at epoch 1 (the last epoch is never pruned: the trial is done)
    study = optuna.load_study(study_name=settings.study_name, storage=_storage(out),
                              pruner=optuna.pruners.ThresholdPruner(lower=101.0))
    objective = search_objective.TrialObjective(settings, prepared.space, prepared.base, prepared.train,
                                                prepared.datasets, tracker, out)
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED and list(trial.intermediate_values) == [1]
    _, children, _ = _runs(out)
    child = children[0]
    assert child.data.tags["optuna.state"] == "PRUNED" and child.data.tags["stopped_early"] == "true"
    assert "pruned after epoch 1 of 3" in child.data.tags["optuna.pruned_reason"]
    assert trial.user_attrs["pruned_reason"] == child.data.tags["optuna.pruned_reason"]


# ---------------------------------------------------------------------------------- faults
def test_a_trial_that_raises_is_failed_with_its_reason_and_the_study_goes_on(out, monkeypatch, capsys):
    from experiments.runner import engine

    original = engine.train_one_epoch

    def faulty(parts, cfg, epoch, desc="train"):
        if desc == "trial 1":
            raise RuntimeError("injected fault")
        return original(parts, cfg, epoch, desc)

    monkeypatch.setattr(engine, "train_one_epoch", faulty)
    space = _yaml(out.parent, "window_token: [learnable, zero, avgpool]\n")
    rc = search.main([*TINY, "--space", space, "--sampler", "grid", "--n-trials", "5", "--output", str(out)])
    assert rc == 0
    study = _study(out)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"]  # the grid ended after its 3 combinations
    failed = study.trials[1]
    assert failed.user_attrs["fail_reason"] == failed.system_attrs["fail_reason"] == "RuntimeError: injected fault"
    _, children, parents = _runs(out)
    child = next(c for c in children if c.data.tags["optuna.trial_number"] == "1")
    assert child.info.status == "FAILED" and child.data.tags["optuna.state"] == "FAIL"
    assert "injected fault" in child.data.tags["status_reason"]
    assert parents[0].info.status == "FINISHED"
    assert "trial 1 FAIL: RuntimeError: injected fault" in capsys.readouterr().err


def test_a_killed_worker_leaves_its_trial_failed_and_the_others_finish(out):
    proc = _subprocess([*TINY, "--processes", "2", "--n-trials", "4", "--heartbeat", "1", "--output", str(out)],
                       fault="pause:trial 1")
    deadline = time.time() + 300
    while not list(out.glob("paused-*")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "trial 1 never started"
        time.sleep(0.2)
    pid = int(next(out.glob("paused-*")).name.split("-")[1])
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == search.EXIT_FAILED, stderr[-3000:]
    assert "died" in stderr and "marked FAIL (worker lost)" in stderr
    study = _study(out)
    states = {t.number: t.state.name for t in study.trials}
    assert len(states) == 4 and states[1] == "FAIL"
    assert all(state in ("COMPLETE", "PRUNED") for number, state in states.items() if number != 1)
    _, children, parents = _runs(out)
    assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == [0, 1, 2, 3]
    killed = next(c for c in children if c.data.tags["optuna.trial_number"] == "1")
    # failed by the other worker's heartbeat check, or at once by the call (the worker's pid is gone)
    reason = killed.data.tags["status_reason"]
    assert killed.info.status == "FAILED" and ("heartbeats" in reason or f"pid {pid}" in reason), reason
    assert study.trials[1].system_attrs["fail_reason"] == study.trials[1].user_attrs["fail_reason"] == reason
    assert "died" in parents[0].data.tags["dead_workers"]
    assert "study 'sepvit-search': 4 trials" in stdout


# ---------------------------------------------------------------------------------- several objectives
def test_accuracy_against_macs_reports_a_pareto_front(out):
    rc = search.main([*TINY, "--objectives", "top1", "macs", "--n-trials", "3", "--output", str(out)])
    assert rc == 0
    study = _study(out)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["top1", "macs"]
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert trial.values[1] == trial.user_attrs["macs"]  # the analytic count, one image
            assert not trial.intermediate_values  # multi-objective trials are not pruned
    client, _, parents = _runs(out)
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"pareto_set.json", "pareto_front.png"} <= artifacts
    report = summary_text(study)
    assert "Pareto set (top-1 against macs)" in report and "the reference is" in report


def test_latency_is_measured_once_per_architecture(out, monkeypatch):
    from analysis import timing

    calls = []
    original = timing.latency_ms

    def counting(module, in_chans, settings):
        calls.append(settings.batch_size)
        return original(module, in_chans, settings)

    monkeypatch.setattr(timing, "latency_ms", counting)
    space = _yaml(out.parent, "lr: [0.002, 0.003]\n")  # two trials, one architecture
    rc = search.main([*TINY, "--objectives", "top1", "latency", "--space", space, "--sampler", "grid",
                      "--output", str(out)])
    assert rc == 0
    study = _study(out)
    assert len(study.trials) == 2 and calls == [1]  # batch 1, measured once
    assert study.metric_names == ["top1", "latency_ms"]
    latencies = {t.user_attrs["latency_ms"] for t in study.trials}
    assert len(latencies) == 1 and [k for k in study.user_attrs if k.startswith("latency_ms:")]
    assert all(t.values[1] == t.user_attrs["latency_ms"] for t in study.trials)


def test_a_trial_logs_the_analytic_macs_without_tracing_the_model(out, monkeypatch):
    import experiments.runner.run as run

    def traced(*args, **kwargs):
        raise AssertionError("a search trial traced its model (model_cost)")

    monkeypatch.setattr(run, "model_cost", traced)
    assert search.main([*TINY, "--n-trials", "1", "--output", str(out)]) == 0
    trial, = _study(out).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    client, children, _ = _runs(out)
    metrics = client.get_run(children[0].info.run_id).data.metrics
    assert metrics["macs"] == trial.user_attrs["macs"] and metrics["params"] > 0


def test_trials_frame_marks_the_reference_and_reports_group_sizes(continued_study):
    frame = trials_frame(_study(continued_study[0]))
    assert frame.loc[frame["reference"], "number"].tolist() == [0]
    assert {"param group_size.2", "param group_size.3", "param window_size", "param window_token"} <= set(frame)


def test_the_example_space_file_is_a_finite_space_holding_the_reference():
    space = load_space(str(ROOT / "experiments" / "spaces" / "example.yaml"), NANO, TRAIN)
    info = space.check(NANO, TRAIN)
    assert space.finite and info["combinations"] == info["valid"] > 0
    assert space.reference_values(NANO, TRAIN)[0] is not None


def test_a_reference_that_only_failed_is_enqueued_again(out):
    prepared = plan_search(NANO, _tiny_train(out))
    study = search_storage.open_study(prepared)
    study.optimize(lambda trial: 1 / 0, n_trials=1, catch=(ZeroDivisionError,))  # the reference trial fails
    assert study.trials[0].state == optuna.trial.TrialState.FAIL and study.trials[0].user_attrs["reference"]
    study = search_storage.open_study(prepared)
    assert [(t.state.name, t.user_attrs.get("reference")) for t in study.trials] == [("FAIL", True),
                                                                                     ("WAITING", True)]
    search_storage.open_study(prepared)  # waiting: not enqueued twice
    assert len(_study(out).trials) == 2


def test_drawing_the_studys_figures_keeps_the_interactive_mode_a_backend_switched_on(continued_study, tmp_path,
                                                                                     monkeypatch):
    """Jupyter's inline backend configures itself (interactive on) when the session's first figure is drawn; if
    that happens inside the report's rc_context, leaving it must not switch interactive mode off again, or no later
    figure of the notebook shows (notebook 04 in CI)."""
    import matplotlib
    from optuna.visualization import matplotlib as ovm

    from experiments.search_report import figures

    original = ovm.plot_optimization_history

    def first_figure_of_a_session(*args, **kwargs):
        matplotlib.interactive(True)  # what the inline backend does when it is first resolved
        return original(*args, **kwargs)

    monkeypatch.setattr(ovm, "plot_optimization_history", first_figure_of_a_session)
    was = matplotlib.is_interactive()
    matplotlib.interactive(False)
    try:
        written = figures(_study(continued_study[0]), tmp_path)
        assert tmp_path / "optimization_history.png" in written
        assert matplotlib.is_interactive()
    finally:
        matplotlib.interactive(was)


# ---------------------------------------------------------------------------------- lifecycle, names, secrets
def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _no_running_run(folder: Path, experiment: str = search.DEFAULT_EXPERIMENT) -> None:
    _, children, parents = _runs(folder, experiment)
    assert children and parents
    assert [r.info.run_name for r in children + parents if r.info.status == "RUNNING"] == []
    assert [t.number for t in _study(folder).trials if t.state == optuna.trial.TrialState.RUNNING] == []


@pytest.mark.parametrize("experiment", ["../../escaped", ".."])
def test_user_supplied_names_write_nothing_outside_the_output_folder(tmp_path, mlflow_db_template, experiment):
    out = tmp_path / "a" / "b" / "out"
    out.mkdir(parents=True)
    shutil.copy(mlflow_db_template, out / "mlflow.db")
    before = _files(tmp_path)
    rc = search.main([*TINY, "--n-trials", "1", "--experiment", experiment, "--output", str(out)])
    assert rc == 0
    new = _files(tmp_path) - before
    assert new and all(out in path.parents for path in new), sorted(map(str, new - _files(out)))
    assert list((out / search_storage.folder_name(experiment)).glob("sepvit-search/trial-0000/*"))  # the trial's files
    _, children, parents = _runs(out, experiment)  # MLflow keeps the name as given
    assert len(children) == 1 and len(parents) == 1


SECRET = "s3cr3t-pw"
FAKE_URL = f"postgresql://optuna:{SECRET}@db-host/optuna"


@pytest.fixture
def password_storage(out, monkeypatch):
    """`--storage FAKE_URL` as the search sees it everywhere, while the driver underneath is the test's SQLite file
    (a SQLite URL cannot carry a password; this follows the password through every place the search writes)."""
    real = search_storage._driver_url
    monkeypatch.setattr(search_storage, "_driver_url", lambda url: _storage(out) if url == FAKE_URL else real(url))
    return out


def _assert_secret_nowhere(folder: Path, *texts: str) -> None:
    leaks = [str(path) for path in _files(folder) if SECRET.encode() in path.read_bytes()]
    assert leaks == [], leaks
    assert all(SECRET not in text for text in texts)


def test_a_password_in_the_storage_url_reaches_neither_store_nor_messages(password_storage, monkeypatch, capsys):
    out = password_storage
    original = optuna.Trial.report

    def unreachable(trial, value, step):  # the storage fails mid-trial with a message that quotes its URL
        if trial.number == 1:
            raise RuntimeError(f"lost the connection to {FAKE_URL}")
        return original(trial, value, step)

    monkeypatch.setattr(optuna.Trial, "report", unreachable)
    rc = search.main([*TINY, "--n-trials", "2", "--storage", FAKE_URL, "--output", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    masked = FAKE_URL.replace(SECRET, "***")
    _, children, parents = _runs(out)
    assert f"--storage {masked}" in parents[0].data.tags["command"]
    assert parents[0].data.tags["optuna.storage"] == masked
    failed = _study(out).trials[1]
    assert failed.state == optuna.trial.TrialState.FAIL and masked in failed.system_attrs["fail_reason"]
    assert masked in next(c for c in children if c.info.status == "FAILED").data.tags["status_reason"]
    _assert_secret_nowhere(out, captured.out, captured.err)


def test_a_call_that_fails_closes_its_parent_with_the_reason_and_masks_it(password_storage, monkeypatch, capsys):
    import experiments.search_report as search_report

    out = password_storage

    def broken(*args, **kwargs):
        raise RuntimeError(f"report lost {FAKE_URL}")

    monkeypatch.setattr(search_report, "finish_study", broken)
    rc = search.main([*TINY, "--n-trials", "1", "--storage", FAKE_URL, "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == search.EXIT_FAILED
    last = err.strip().splitlines()[-1]
    assert last.startswith("search.py: RuntimeError: report lost") and "search-error.log" in last
    _, _, parents = _runs(out)
    assert parents[0].info.status == "FAILED"
    assert parents[0].data.tags["status_reason"] == f"RuntimeError: report lost {FAKE_URL.replace(SECRET, '***')}"
    _no_running_run(out)
    _assert_secret_nowhere(out, err)
    assert (out / "search-error.log").exists()


STOPS = {"SIGTERM between trials": ("pause-after:trial 0", signal.SIGTERM, "SIGTERM"),
         "SIGTERM in a trial": ("pause:trial 1", signal.SIGTERM, "SIGTERM"),
         "SIGINT between trials": ("pause-after:trial 0", signal.SIGINT, "Ctrl-C (SIGINT)")}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(STOPS))
def test_a_stop_signal_closes_every_run_with_the_reason_and_the_same_command_continues(out, case):
    where, signum, how = STOPS[case]
    argv = [*TINY, "--n-trials", "3", "--output", str(out)]
    proc = _subprocess(argv, fault=where)
    deadline = time.time() + 300
    while not list(out.glob("paused-*")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the pause was never reached"
        time.sleep(0.2)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == (f"search.py: interrupted ({how}); run the same command to continue "
                                               f"study '{search.DEFAULT_STUDY}'")
    assert "Traceback" not in stderr
    _no_running_run(out)
    _, children, parents = _runs(out)
    assert parents[0].info.status == "KILLED" and how in parents[0].data.tags["status_reason"]
    study = _study(out)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE  # the reference
    if where.startswith("pause:"):  # the trial it stopped: FAIL with the reason, in both stores
        stopped = study.trials[1]
        assert stopped.state == optuna.trial.TrialState.FAIL
        assert stopped.system_attrs["fail_reason"] == f"interrupted ({how})"
        child = next(c for c in children if c.data.tags["optuna.trial_number"] == "1")
        assert child.info.status == "KILLED" and child.data.tags["optuna.state"] == "FAIL"
    assert search.main([*TINY, "--n-trials", "1", "--output", str(out)]) == 0
    _no_running_run(out)


@pytest.mark.slow
def test_a_search_killed_during_the_reference_trial_is_repaired_by_the_same_command(out):
    argv = [*TINY, "--n-trials", "2", "--output", str(out)]
    proc = _subprocess(argv, fault="pause:trial 0")
    deadline = time.time() + 300
    while not list(out.glob("paused-*")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "trial 0 never started"
        time.sleep(0.2)
    proc.kill()
    proc.communicate(timeout=60)
    assert _study(out).trials[0].state == optuna.trial.TrialState.RUNNING  # what SIGKILL leaves

    assert search.main([*TINY, "--n-trials", "1", "--output", str(out)]) == 0  # at once: no heartbeat wait
    _no_running_run(out)
    study = _study(out)
    killed, again = study.trials[0], study.trials[1]
    assert killed.state == optuna.trial.TrialState.FAIL and f"pid {proc.pid}" in killed.system_attrs["fail_reason"]
    assert again.user_attrs["reference"] and again.state == optuna.trial.TrialState.COMPLETE
    assert again.params == killed.params
    _, children, parents = _runs(out)
    first = next(p for p in parents if p.data.tags["pid"] == str(proc.pid))
    assert first.info.status == "KILLED" and "died" in first.data.tags["status_reason"]
    child = next(c for c in children if c.data.tags["optuna.trial_number"] == "0")
    assert child.info.status == "FAILED" and f"pid {proc.pid}" in child.data.tags["status_reason"]
    assert "reference (the base configuration, trial 1)" in summary_text(study)


# ---------------------------------------------------------------------------------- --confirm K
def _favour(monkeypatch, reference: bool) -> None:
    """Make the search rank the reference trial (`reference`) or the other trials first: 50 points are added to
    the top-1 a trial reports to Optuna (its MLflow record keeps the measured value). Only the trials' view of the
    runner is patched: the confirmation's runs go through the runner itself, unchanged."""
    import experiments.runner.run as training

    def train_and_evaluate(planned, context):
        result = training.train_and_evaluate(planned, context)
        if result.history and (planned.tags.get("is_reference") == "true") == reference:
            result.history[-1][result.metric] += 50.0
        return result

    monkeypatch.setattr(search_objective, "training", SimpleNamespace(train_and_evaluate=train_and_evaluate))


def _confirmation_calls(folder: Path):
    """(the confirmation parent runs, {parent id: its child runs}) in the search's experiment."""
    client, children, _ = _runs(folder)
    exp = client.get_experiment_by_name(search.DEFAULT_EXPERIMENT)
    parents = [r for r in client.search_runs([exp.experiment_id], max_results=1000)
               if r.data.tags.get("search.confirmation") == "true"]
    return parents, {p.info.run_id: [c for c in children if c.data.tags.get("mlflow.parentRunId") == p.info.run_id]
                     for p in parents}


def _sentence(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("Beyond seed noise?"))


def _ablate_configs(command: str):
    """What `ablate.py` trains for a printed command: (its reference, {label: config}, TrainConfig, args); the
    TrainConfig's image size filled in from the model, as `runner.plan_call` does."""
    import shlex

    from experiments import ablate
    from experiments.base_model import base_config

    words = shlex.split(command)
    assert words[:2] == ["python", "experiments/ablate.py"], command
    args = ablate.build_parser().parse_args(words[2:])
    base = base_config(args)
    train = ablate.train_config(args)
    return base, dict(ablate.plan_configs(args, base)), train.replace(img_size=train.img_size or base.img_size), args


TOKEN_SPACE = "window_token: [learnable, zero]\n"


def test_confirm_trains_the_best_trial_and_the_reference_at_paired_seeds_and_the_report_states_the_verdict(
        out, monkeypatch, capsys):
    from experiments import search_confirm
    from experiments.grids import label_for
    from experiments.stats import compare, verdict_text

    _favour(monkeypatch, reference=False)
    argv = [*TINY, "--space", _yaml(out.parent, TOKEN_SPACE), "--sampler", "grid", "--output", str(out),
            "--parallel", "1"]
    assert search.main([*argv[:-2], "--n-trials", "2"]) == 0  # the trials (--parallel is the confirmation's)
    printed = capsys.readouterr().out
    study = _study(out)
    best, reference = study.trials[1], study.trials[0]
    assert study.best_trial.number == 1 and reference.user_attrs["reference"]
    # without --confirm: unconfirmed, and the ablate.py command that trains exactly the best trial's configuration
    sentence = _sentence(printed)
    assert sentence.startswith("Beyond seed noise? Unconfirmed: trial 1 is +") and "--confirm 3`" in sentence
    command = sentence.split("`")[1]
    ref_cfg, configs, train, args = _ablate_configs(command)
    label = label_for(SepViTConfig.from_dict(best.user_attrs["config"]), ref_cfg)
    assert configs[label].to_dict() == best.user_attrs["config"]
    assert configs["reference"].to_dict() == reference.user_attrs["config"]
    studied = _tiny_train(out).replace(img_size=32)
    assert args.compare and args.seeds == 3 and train == studied.replace(seed=studied.seed + 1)
    alone = _sentence(summary_text(study)).split("`")[1]  # the report from the storage alone: the same command
    assert _ablate_configs(alone)[2] == train.replace(output=str(out.resolve()))
    assert _confirmation_calls(out)[0] == []

    # --n-trials 0 --confirm 2: no trial, the two configurations at fresh seeds 1 and 2 through the runner
    assert search.main([*argv, "--n-trials", "0", "--confirm", "2"]) == 0
    printed = capsys.readouterr().out
    study = _study(out)
    assert len(study.trials) == 2
    parents, children = _confirmation_calls(out)
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["kind"] == "parent"
    assert parent.data.tags["search.study"] == search.DEFAULT_STUDY and parent.data.tags["search.trial"] == "1"
    runs = children[parent.info.run_id]
    # fresh seeds: the trials' seed (0), whose luck selected the best trial, is left out
    assert sorted((r.data.tags["config"], int(r.data.params["train.seed"])) for r in runs) == \
        [(label, 1), (label, 2), ("reference", 1), ("reference", 2)]
    assert all(r.info.status == "FINISHED" for r in runs)
    for r in runs:  # the trials' configurations and training settings
        trial = best if r.data.tags["config"] == label else reference
        assert r.data.params["model.window_token"] == str(trial.params["window_token"])
        assert r.data.params["train.train_size"] == "32" and r.data.params["train.epochs"] == "1"
    top1 = {(r.data.tags["config"], int(r.data.params["train.seed"])): r.data.metrics["final_val_top1"] for r in runs}

    record = study.user_attrs[search_confirm.record_key(1)]
    assert record["status"] == "finished" and record["seeds"] == [1, 2]
    assert record["parent_run_id"] == parent.info.run_id and (Path(record["call_folder"]) / "call.json").is_file()
    d = compare([top1[(label, s)] for s in (1, 2)], [top1[("reference", s)] for s in (1, 2)],
                seeds_a=[1, 2], seeds_b=[1, 2])
    sentence = _sentence(printed)
    assert sentence.startswith("Beyond seed noise? Confirmed at 2 paired seeds (1-2")
    assert f"{d.diff:+.2f} points" in sentence and f"verdict {verdict_text(d.verdict, d.bound, d.seeds_needed)}" in sentence
    assert "Δ top-1 vs reference" in printed  # the runner's own comparison table, as ablate.py prints it
    search_parent = next(p for p in _runs(out)[2] if p.data.tags.get("confirmation.parent_run_id"))
    assert search_parent.data.tags["confirmation.status"] == "finished"
    assert any(s.startswith("Beyond seed noise? Confirmed") for s in search_report_conclusions(study))

    # the same request again: answered from the study, nothing trained
    assert search.main([*argv, "--n-trials", "0", "--confirm", "2"]) == 0
    assert "not trained again" in capsys.readouterr().err
    assert len(_confirmation_calls(out)[0]) == 1
    _no_running_run(out)


def search_report_conclusions(study):
    from experiments.search_report import conclusions

    return conclusions(study)


def test_confirm_confirms_nothing_when_the_best_trial_is_the_papers_configuration(out, monkeypatch, capsys):
    _favour(monkeypatch, reference=True)
    argv = [*TINY, "--space", _yaml(out.parent, TOKEN_SPACE), "--sampler", "grid", "--output", str(out),
            "--n-trials", "2", "--confirm", "2", "--parallel", "1"]
    assert search.main(argv) == 0
    captured = capsys.readouterr()
    assert _study(out).best_trial.number == 0
    assert "the best trial, 0, is the paper's configuration: nothing to confirm" in captured.err
    assert _sentence(captured.out) == ("Beyond seed noise? Nothing to confirm: the most accurate trial, 0, is the "
                                       "paper's configuration.")
    assert _confirmation_calls(out)[0] == []
    _, children, _ = _runs(out)
    assert len(children) == 2  # the two trials, nothing else


SWITCHED = {  # SepViTConfig changes a search can find -> ablate.py expresses each with its switches
    "zero tokens": dict(window_token="zero"),
    "avgpool tokens, no stage-3 groups": dict(window_token="avgpool", group_size=(2, 2, 1, 2)),
    "window 8, no grouping": dict(window_size=8, group_size=1),
    "no gsa": dict(gsa=False),
    "no dssa": dict(dssa=False),
    "no ope, no cpe": dict(ope=False, cpe=False),
    "paper equations": dict(inner_shortcuts=False),
    "swin blocks": dict(block_pattern="swin"),
}


@pytest.mark.parametrize("base_changes", [{}, dict(embed_dims=(24, 48, 96, 192), num_heads=(1, 2, 2, 4),
                                                   drop_path_rate=0.1)], ids=["paper", "changed base"])
def test_the_ablate_command_of_a_confirmation_builds_the_same_configurations_and_training(base_changes):
    from experiments.grids import label_for
    from experiments.search_confirm import ablate_command

    base = SepViTConfig.preset("sepvit_nano_32", **base_changes)
    train = TrainConfig(epochs=2, train_size=64, val_size=32, lr=1e-3, synthetic_cue="ring", clip_grad=None,
                        opt_betas=(0.9, 0.99), sched_on_updates=False, seed=3, img_size=32, output="elsewhere")
    for name, changes in SWITCHED.items():
        cfg = base.replace(**changes)
        command, why = ablate_command(base, cfg, train, 4)
        assert command is not None, (name, why)
        ref, configs, trained, args = _ablate_configs(command)
        assert ref == base and configs == {label_for(cfg, base): cfg, "reference": base}, (name, command)
        assert trained == train and args.seeds == 4 and args.compare, (name, command)
    command, why = ablate_command(base, base.replace(mlp_ratio=2.0), train, 3)
    assert command is None and "mlp_ratio=2.0 is not an ablate.py switch" in why


def test_the_command_of_every_trial_of_a_study_builds_that_trials_configuration(continued_study):
    from experiments.search_confirm import command_for, target

    folder, _, _, _ = continued_study
    study = _study(folder)
    checked = 0
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        t = target(study, trial=trial.number)
        if t.is_reference:
            continue
        command, why = command_for(t, 3)
        _, configs, train, _ = _ablate_configs(command)
        assert trial.user_attrs["config"] in [c.to_dict() for label, c in configs.items() if label != "reference"]
        studied = TrainConfig.from_dict({**study.user_attrs["sepvit.settings"]["train"],
                                         **study.user_attrs["sepvit.paths"]})
        assert train == studied.replace(seed=studied.seed + 1)  # fresh seeds, after the trials' own
        assert train.output == str(folder.resolve())  # the study's own output folder: no call's settings at hand
        checked += 1
    assert checked >= 1
    assert study.user_attrs["sepvit.paths"] == {"output": str(folder.resolve()), "data_dir": None}


def test_the_ablate_command_printed_from_the_study_alone_names_its_data_and_output(tmp_path):
    """The report made from the storage alone (a notebook, another machine) prints the command with the study's
    --output and --data-dir, which the study keeps apart from the settings every call must match."""
    from experiments import search_confirm

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    train = TrainConfig(img_size=32, dataset="cifar10", epochs=2)
    study.set_user_attr("sepvit.settings", {
        "objectives": ["top1"], "space": {"window_token": ["learnable", "zero"]}, "model": NANO.to_dict(),
        "train": {k: v for k, v in train.to_dict().items() if k not in search_storage.MAY_CHANGE}})
    tokens = optuna.distributions.CategoricalDistribution(["learnable", "zero"])
    for token, top1 in (("learnable", 80.0), ("zero", 85.0)):
        study.add_trial(optuna.trial.create_trial(params={"window_token": token}, distributions={"window_token": tokens},
                                                  value=top1, user_attrs={"reference": token == "learnable"}))
    stored = search_storage.study_paths({"output": str(tmp_path / "runs"), "data_dir": str(tmp_path / "cifar")})
    study.set_user_attr("sepvit.paths", stored)
    command = _sentence(search_confirm.confirmation_sentence(study)).split("`")[1]
    _, _, trained, args = _ablate_configs(command)
    assert trained.output == str(tmp_path / "runs") and trained.data_dir == str(tmp_path / "cifar")
    assert trained == train.replace(seed=1, output=stored["output"], data_dir=stored["data_dir"])


@pytest.mark.slow
def _confirm_stopped_at(argv: list[str], out: Path, seeds: int, run: str) -> str:
    """`--n-trials 0 --confirm <seeds>` in a subprocess, stopped by SIGTERM once `run` has started; its stderr."""
    proc = _subprocess([*argv, "--n-trials", "0", "--confirm", str(seeds)], fault=f"pause:{run}")
    deadline = time.time() + 300
    while not list(out.glob("paused-*")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"the confirmation's run {run} never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr, stderr[-3000:]
    return stderr


def test_a_confirmation_stopped_by_sigterm_closes_its_runs_and_the_same_request_resumes_it(out, monkeypatch,
                                                                                            capsys):
    from experiments import search_confirm
    from experiments.search_report import summary_text

    _favour(monkeypatch, reference=False)
    argv = [*TINY, "--space", _yaml(out.parent, TOKEN_SPACE), "--sampler", "grid", "--output", str(out),
            "--parallel", "1"]
    assert search.main([*argv[:-2], "--n-trials", "2"]) == 0  # the trials (--parallel is the confirmation's)
    capsys.readouterr()
    stderr = _confirm_stopped_at(argv, out, 2, "reference seed2")
    assert stderr.strip().splitlines()[-1].startswith(
        f"search.py: interrupted (SIGTERM) while confirming the best trial of study '{search.DEFAULT_STUDY}'")
    _no_running_run(out)
    parents, children = _confirmation_calls(out)
    assert len(parents) == 1 and parents[0].info.status == "KILLED"
    assert "interrupted (SIGTERM)" in parents[0].data.tags["status_reason"]
    states = {c.data.tags["config"] + f" seed{c.data.params['train.seed']}": c.info.status
              for c in children[parents[0].info.run_id]}
    assert states["reference seed2"] == "KILLED" and list(states.values()).count("FINISHED") == 3
    search_parent = next(p for p in _runs(out)[2] if p.data.tags.get("confirmation.parent_run_id"))
    assert search_parent.info.status == "KILLED" and "while confirming" in search_parent.data.tags["status_reason"]
    study = _study(out)
    record = study.user_attrs[search_confirm.record_key(1)]
    assert record["status"] == "interrupted" and record["reason"] == "interrupted (SIGTERM)"
    assert "Beyond seed noise? Unknown: the confirmation of trial 1 at 2 seeds did not finish" in summary_text(study)

    assert search.main([*argv, "--n-trials", "0", "--confirm", "2"]) == 0
    captured = capsys.readouterr()
    assert f"resuming the interrupted call {record['call_folder']}" in captured.err
    trained = [line.split("]")[1].split(":")[0].strip() for line in captured.err.splitlines() if line[:1] == "["]
    assert trained == ["reference seed2"]  # only the unfinished run trains
    parents, children = _confirmation_calls(out)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(c.info.status for c in children[parents[0].info.run_id]) == ["FINISHED"] * 4
    again = _study(out).user_attrs[search_confirm.record_key(1)]
    assert again["status"] == "finished" and again["call_folder"] == record["call_folder"]
    assert _sentence(captured.out).startswith("Beyond seed noise? Confirmed at 2 paired seeds")
    _no_running_run(out)


# ---------------------------------------------------------------------------------- a confirmation killed or raced
@pytest.fixture(scope="module")
def confirmable(tmp_path_factory, mlflow_db_template):
    """A study of two trials whose best, trial 1 (zero window tokens), is not the paper's configuration."""
    folder = tmp_path_factory.mktemp("confirmable") / "out"
    folder.mkdir()
    shutil.copy(mlflow_db_template, folder / "mlflow.db")
    argv = [*TINY, "--space", _yaml(folder.parent, TOKEN_SPACE), "--sampler", "grid"]
    with pytest.MonkeyPatch.context() as patch:
        _favour(patch, reference=False)
        assert search.main([*argv, "--output", str(folder), "--n-trials", "2"]) == 0
    return folder, argv


@pytest.fixture
def confirm_out(tmp_path, confirmable):
    """A copy of the `confirmable` study and its MLflow store, and the argv that continues it there."""
    folder, argv = confirmable
    out = tmp_path / "out"
    out.mkdir()
    for name in ("optuna.db", "mlflow.db"):
        shutil.copy(folder / name, out / name)
    assert _study(out).best_trial.number == 1
    return out, [*argv, "--output", str(out), "--parallel", "1"]


def test_a_confirmation_at_more_seeds_extends_the_stored_one_and_prices_the_second_look(confirm_out, capsys):
    """--confirm 3 after --confirm 2: the same call, its four runs kept, seed 3 of both arms added; the record and
    the report say it was looked at twice and what that costs; --confirm 2 afterwards is answered by the 3 seeds."""
    from experiments import search_confirm
    from experiments.runner.calls import Call
    from experiments.stats import repeated_looks_error

    out, argv = confirm_out
    key = search_confirm.record_key(1)
    assert search.main([*argv, "--n-trials", "0", "--confirm", "2"]) == 0
    first = _study(out).user_attrs[key]
    assert first["status"] == "finished" and "seed_counts" not in first  # looked at once
    parents, children = _confirmation_calls(out)
    kept = {r.info.run_id: r.data.metrics["final_val_top1"] for r in children[parents[0].info.run_id]}
    assert Call.load(Path(first["call_folder"])).confirmation == f"study {search.DEFAULT_STUDY} trial 1"
    capsys.readouterr()

    assert search.main([*argv, "--n-trials", "0", "--confirm", "3"]) == 0
    captured = capsys.readouterr()
    assert f"extending the finished call {first['call_folder']} from 2 to 3 seeds" in captured.err
    record = _study(out).user_attrs[key]
    assert record["status"] == "finished" and record["seeds"] == [1, 2, 3]
    assert record["call_folder"] == first["call_folder"] and record["seed_counts"] == [2, 3]
    parents, children = _confirmation_calls(out)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # one call, one parent
    runs = children[parents[0].info.run_id]
    assert sorted((r.data.tags["config"], int(r.data.params["train.seed"])) for r in runs) == sorted(
        (label, seed) for label in {r["label"] for r in first["runs"]} for seed in (1, 2, 3))
    assert {r.info.run_id: r.data.metrics["final_val_top1"] for r in runs if r.info.run_id in kept} == kept
    assert parents[0].data.tags["resume.seeds"] == "2 -> 3" and parents[0].data.tags["seeds"] == "3"
    sentence = _sentence(captured.out)
    assert sentence.startswith("Beyond seed noise? Confirmed at 3 paired seeds (1-3")
    rate = f"{100 * repeated_looks_error([2, 3]):.1f} %"
    assert "reported at 2 → 3 seeds per configuration (seeds added by a larger `--confirm` of the search)" in sentence
    assert rate in sentence
    fresh = sentence.split("confirm at fresh seeds in a new call (`")[1].split("`")[0]  # the ablate.py command
    _, configs, train, args = _ablate_configs(fresh)
    assert train.seed == 4 and args.seeds == 3 and args.compare  # the seeds after the confirmation's
    assert sorted(c.to_dict()["window_token"] for c in configs.values()) == ["learnable", "zero"]
    assert rate in _sentence(summary_text(_study(out)))  # the report from the storage alone says so too
    assert "a larger `--confirm` of the search" in captured.out.split("Beyond seed noise?")[0]  # the runner's report

    assert search.main([*argv, "--n-trials", "0", "--confirm", "2"]) == 0
    err = capsys.readouterr().err
    assert "confirmed at 3 seeds, 1-3" in err and "which include seeds 1-2: not trained again" in err
    assert _study(out).user_attrs[key] == record and len(_confirmation_calls(out)[0]) == 1
    _no_running_run(out)


def test_an_interrupted_extension_leaves_the_smaller_answer_standing_and_is_finished_not_retrained(confirm_out,
                                                                                                   capsys):
    """--confirm 3 stopped by SIGTERM after --confirm 2 finished: the report says the extension did not finish and
    that the 2-seed answer stands meanwhile; --confirm 2 is refused (its runs are in the unfinished call), and
    --confirm 3 finishes the same call, training only the run the stop left."""
    from experiments import search_confirm

    out, argv = confirm_out
    key = search_confirm.record_key(1)
    assert search.main([*argv, "--n-trials", "0", "--confirm", "2"]) == 0
    first = _study(out).user_attrs[key]
    capsys.readouterr()
    _confirm_stopped_at(argv, out, 3, "reference seed3")
    record = _study(out).user_attrs[key]
    assert record["status"] == "interrupted" and record["seeds"] == [1, 2, 3]
    assert record["call_folder"] == first["call_folder"] and record["earlier"]["seeds"] == [1, 2]
    sentence = _sentence(summary_text(_study(out)))
    assert "Unknown: the confirmation of trial 1 at 3 seeds did not finish" in sentence
    assert "Until it finishes, the answer at 2 seeds stands: Confirmed at 2 paired seeds (1-2" in sentence

    assert search.main([*argv, "--n-trials", "0", "--confirm", "2"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("search.py: error: --confirm 2: the confirmation of trial 1 at 3 seeds")
    assert "is interrupted and holds these seeds' runs: finish it with --confirm 3" in last
    assert _study(out).user_attrs[key] == record  # nothing changed

    assert search.main([*argv, "--n-trials", "0", "--confirm", "3"]) == 0
    captured = capsys.readouterr()
    assert f"resuming the interrupted call {first['call_folder']}" in captured.err
    trained = [line.split("]")[1].split(":")[0].strip() for line in captured.err.splitlines() if line[:1] == "["]
    assert trained == ["reference seed3"]
    done = _study(out).user_attrs[key]
    assert done["status"] == "finished" and done["seed_counts"] == [2, 3] and "earlier" not in done
    assert _sentence(captured.out).startswith("Beyond seed noise? Confirmed at 3 paired seeds (1-3")
    _no_running_run(out)


def test_an_extension_that_its_call_never_saved_is_made_again_not_claimed(confirm_out, monkeypatch, capsys):
    """A process killed between recording a 3-seed extension and saving it in call.json leaves a record that says 3
    seeds over a call of 2: the next --confirm 3 adds the seed then, and the record never claims seeds it lacks."""
    from experiments import search_confirm

    out, argv = confirm_out
    key = search_confirm.record_key(1)
    assert search.main([*argv, "--n-trials", "0", "--confirm", "2"]) == 0
    first = _study(out).user_attrs[key]
    _study(out).set_user_attr(key, {**first, "seeds": [1, 2, 3], "status": "running",
                                    "worker": {"host": search_storage.HOST, "pid": os.getpid()}})
    _dead_after_all(monkeypatch)
    capsys.readouterr()
    assert search.main([*argv, "--n-trials", "0", "--confirm", "3"]) == 0
    err = capsys.readouterr().err
    assert f"resuming the killed call {first['call_folder']}" in err
    record = _study(out).user_attrs[key]
    assert record["status"] == "finished" and record["call_folder"] == first["call_folder"]
    assert sorted((r["label"], r["seed"]) for r in record["runs"]) == sorted(
        (label, seed) for label in {r["label"] for r in first["runs"]} for seed in (1, 2, 3))
    assert record["seed_counts"] == [2, 3]
    _no_running_run(out)


def _as_trained(plan) -> list[SimpleNamespace]:
    """The results a stand-in for `runner.run_call` returns: every planned run FINISHED (at an arbitrary top-1), as
    the confirmation's record requires of a finished call."""
    return [SimpleNamespace(run_name=f"{r.label} seed{r.seed}", train_cfg=r.train, status="FINISHED", top1=50.0)
            for r in plan.runs]


class _Killed(BaseException):
    """In-process stand-in for SIGKILL: neither the runner's nor the search's handlers catch it (they catch
    Exception and the stop signals), so the study and MLflow are left as a process killed outright leaves them."""


def _dead_after_all(monkeypatch) -> None:
    """This process now reads as dead, as the killed process it stands in for would (`dead_here`)."""
    monkeypatch.setattr(search_storage, "_alive", lambda pid: pid != os.getpid())


def test_a_confirmation_killed_outright_leaves_a_running_record_that_the_next_confirm_resumes(confirm_out,
                                                                                              monkeypatch, capsys):
    from experiments import runner, search_confirm
    from experiments.runner import executor

    out, argv = confirm_out
    key = search_confirm.record_key(1)
    seen = {}

    def killed_at_the_first_run(call, *args, **kwargs):
        seen["folder"], seen["record"] = call.folder, _study(out).user_attrs.get(key)
        raise _Killed

    monkeypatch.setattr(executor, "train_in_sequence", killed_at_the_first_run)
    with pytest.raises(_Killed):
        search.main([*argv, "--n-trials", "0", "--confirm", "2"])
    record = seen["record"]  # in the study before the first run trained, naming the call
    assert record is not None and record["status"] == "running" and record["seeds"] == [1, 2]
    assert record["call_folder"] == str(seen["folder"].resolve()) and (seen["folder"] / "call.json").is_file()
    assert record["worker"] == {"host": search_storage.HOST, "pid": os.getpid()}
    assert _study(out).user_attrs[key] == record  # what the kill leaves
    parents, _ = _confirmation_calls(out)
    assert [p.info.status for p in parents] == ["RUNNING"]
    dead_parent = parents[0].info.run_id
    capsys.readouterr()

    _dead_after_all(monkeypatch)
    given = []

    def run_call(plan):  # what the runner's resume does with it: tests/test_runner.py; here, what it is given
        client = _runs(out)[0]
        given.append((plan, client.get_run(dead_parent), _study(out).user_attrs[key]))
        plan.lock.release()
        return runner.Results(0, plan.call.folder, _as_trained(plan), None, plan.call.parent_run_id)

    monkeypatch.setattr(runner, "run_call", run_call)
    assert search.main([*argv, "--n-trials", "0", "--confirm", "2"]) == 0
    err = capsys.readouterr().err
    (plan, parent, again), = given
    assert isinstance(plan, runner.Resumption) and plan.call.folder == seen["folder"]  # the same call, resumed
    assert f"resuming the killed call {record['call_folder']}" in err
    # the dead process's runs were closed with the reason before the resume reopens them
    assert parent.info.status == "KILLED" and "confirmation's process" in parent.data.tags["status_reason"]
    assert f"pid {os.getpid()}" in parent.data.tags["status_reason"] and dead_parent in err
    assert again["status"] == "running" and again["call_folder"] == record["call_folder"]
    assert again["parent_run_id"] == dead_parent and parent.data.tags["pid"] == str(os.getpid())
    _no_running_run(out)


def test_a_confirmation_killed_before_its_parent_opened_is_resumed_under_a_parent_that_says_what_it_is(
        confirm_out, monkeypatch, capsys):
    """Killed after its plan was written and before its MLflow parent existed: the next --confirm resumes the call,
    and the parent it opens then carries the search's tags (close_dead_calls and the reports find it by them);
    `--resume --seeds` knows the call from its plan alone."""
    from experiments import search_confirm
    from experiments.runner import running
    from experiments.runner.calls import Call

    out, argv = confirm_out
    opened = running.open_parent

    def killed_before_the_parent(*args, **kwargs):
        raise _Killed

    monkeypatch.setattr(running, "open_parent", killed_before_the_parent)
    with pytest.raises(_Killed):
        search.main([*argv, "--n-trials", "0", "--confirm", "2"])
    record = _study(out).user_attrs[search_confirm.record_key(1)]
    folder = Path(record["call_folder"])
    assert record["status"] == "running" and Call.load(folder).parent_run_id is None
    assert _confirmation_calls(out)[0] == []  # no parent run yet
    assert Call.load(folder).confirmation == f"study {search.DEFAULT_STUDY} trial 1"

    monkeypatch.setattr(running, "open_parent", opened)
    _dead_after_all(monkeypatch)
    capsys.readouterr()
    assert search.main([*argv, "--n-trials", "0", "--confirm", "2"]) == 0
    assert f"resuming the killed call {folder.resolve()}" in capsys.readouterr().err
    parents, children = _confirmation_calls(out)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    tags = parents[0].data.tags
    assert tags["search.study"] == search.DEFAULT_STUDY and tags["search.trial"] == "1"
    assert tags["pid"] == str(os.getpid()) and len(children[parents[0].info.run_id]) == 4


@pytest.mark.slow
def test_a_confirmation_killed_by_sigkill_is_resumed_and_its_runs_closed(out, monkeypatch, capsys):
    from experiments import search_confirm

    _favour(monkeypatch, reference=False)
    argv = [*TINY, "--space", _yaml(out.parent, TOKEN_SPACE), "--sampler", "grid", "--output", str(out),
            "--parallel", "1"]
    assert search.main([*argv[:-2], "--n-trials", "2"]) == 0
    proc = _subprocess([*argv, "--n-trials", "0", "--confirm", "2"], fault="kill:reference seed1")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, stderr[-3000:]
    record = _study(out).user_attrs[search_confirm.record_key(1)]
    assert record["status"] == "running"
    parents, children = _confirmation_calls(out)
    states = {c.data.tags["config"] + f" seed{c.data.params['train.seed']}": c.info.status
              for c in children[parents[0].info.run_id]}
    assert parents[0].info.status == "RUNNING" and states["reference seed1"] == "RUNNING"
    capsys.readouterr()

    assert search.main([*argv, "--n-trials", "0", "--confirm", "2"]) == 0
    captured = capsys.readouterr()
    assert f"resuming the killed call {record['call_folder']}" in captured.err
    parents, children = _confirmation_calls(out)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    runs = children[parents[0].info.run_id]
    assert sorted(c.info.status for c in runs) == ["FINISHED"] * 4
    killed = next(c for c in runs if c.data.tags["config"] == "reference" and c.data.params["train.seed"] == "1")
    assert "confirmation's process" in killed.data.tags["previous_status_reason"]
    again = _study(out).user_attrs[search_confirm.record_key(1)]
    assert again["status"] == "finished" and again["call_folder"] == record["call_folder"]
    assert _sentence(captured.out).startswith("Beyond seed noise? Confirmed at 2 paired seeds")
    _no_running_run(out)


def _running_elsewhere(**changes) -> dict:
    return {"status": "running", "trial": 1, "seeds": [1, 2], "call_folder": "/on/gpu-node-7/out/sepvit-search/x",
            "worker": {"host": "gpu-node-7", "pid": 4242}, "started": time.time(), "when": "2026-01-01 10:00:00 UTC",
            **changes}


def test_confirm_is_refused_while_another_process_confirms_the_same_study(confirm_out, monkeypatch, capsys):
    from experiments import runner, search_call, search_confirm

    out, argv = confirm_out
    key = search_confirm.record_key(1)
    monkeypatch.setattr(runner, "run_call", lambda plan: pytest.fail("a second confirmation trained"))
    for worker in ({"host": "gpu-node-7", "pid": 4242}, {"host": search_storage.HOST, "pid": os.getppid()}):
        _study(out).set_user_attr(key, _running_elsewhere(worker=worker))  # another machine, a live process here
        for trials in ("0", "1"):  # refused before any trial
            rc = _call([*argv, "--n-trials", trials, "--confirm", "2"])
            err = capsys.readouterr().err.strip()
            assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
            assert f"another confirmation of study '{search.DEFAULT_STUDY}' is in progress" in err, err
            assert f"pid {worker['pid']} on {worker['host']}" in err and "--force-confirm" in err, err
    assert len(_study(out).trials) == 2 and _confirmation_calls(out)[0] == []

    def begun_meanwhile(settings, datasets):  # another machine starts while this call's trials run
        _study(out).set_user_attr(key, _running_elsewhere())
        return []

    _study(out).set_user_attr(key, {**_running_elsewhere(), "status": "interrupted"})
    monkeypatch.setattr(search_call, "run_workers", begun_meanwhile)
    assert _call([*argv, "--n-trials", "1", "--confirm", "2"]) == 2
    assert "search.py: error: another confirmation of study" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["a day-old record", "--force-confirm"])
def test_confirm_goes_on_past_a_stale_running_record_or_when_forced(case, confirm_out, monkeypatch, capsys):
    from experiments import runner, search_confirm

    out, argv = confirm_out
    key = search_confirm.record_key(1)
    old = case == "a day-old record"
    _study(out).set_user_attr(key, _running_elsewhere(started=time.time() - search_storage.CONFIRMATION_RECENT_S - 60
                                                      if old else time.time()))
    planned = []

    def run_call(plan):
        planned.append(plan)
        return runner.Results(0, None, _as_trained(plan), None, None)

    monkeypatch.setattr(runner, "run_call", run_call)
    assert _call([*argv, "--n-trials", "0", "--confirm", "2", *([] if old else ["--force-confirm"])]) == 0
    assert len(planned) == 1 and "another confirmation" not in capsys.readouterr().err
    assert _study(out).user_attrs[key]["worker"] == {"host": search_storage.HOST, "pid": os.getpid()}


def test_a_confirmation_is_never_recorded_as_finished_without_every_seed_it_asked_for(confirm_out, monkeypatch,
                                                                                    capsys):
    """A call that ends with exit code 0 but holds fewer seeds than the request (a plan that lost seeds): the record
    says failed, with the seeds it has, and the search exits 1; no verdict is stored."""
    from experiments import runner, search_confirm

    out, argv = confirm_out

    def run_call(plan):
        return runner.Results(0, None, [r for r in _as_trained(plan) if r.train_cfg.seed == 1], None, None)

    monkeypatch.setattr(runner, "run_call", run_call)
    assert _call([*argv, "--n-trials", "0", "--confirm", "2"]) == 1
    record = _study(out).user_attrs[search_confirm.record_key(1)]
    assert record["status"] == "failed" and "not the [1, 2] asked for" in record["reason"]
    assert "Unknown: the confirmation of trial 1 at 2 seeds did not finish" in _sentence(summary_text(_study(out)))


def test_top1_is_the_first_objective_whatever_order_was_asked(out):
    """The report, the best trial and --confirm read a trial's values[0] as top-1."""
    prepared = plan_search(NANO, _tiny_train(out), objectives=("macs", "top1"))
    assert tuple(prepared.settings.objectives) == ("top1", "macs")


def test_the_median_pruner_waits_for_the_second_half_of_the_budget():
    """At the default budget runs take off by epoch 4 of 9 at a seed-dependent epoch: prune from epoch 5 on."""
    from experiments.search_workers import make_pruner, median_warmup_epochs

    assert [median_warmup_epochs(e) for e in (1, 2, 3, 9, 10)] == [1, 2, 2, 5, 6]
    pruner = make_pruner(SimpleNamespace(train={"epochs": 9}, pruner="median"))
    assert isinstance(pruner, optuna.pruners.MedianPruner) and pruner._n_warmup_steps == 5
