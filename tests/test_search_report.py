"""experiments/search_report.py on synthetic studies whose answer is known: importances in the study's own direction
(the same numbers in the printed report, importances.json and the figure)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from experiments import search_report
from experiments.search_report import importances

N_TRIALS = 40


def known_study(directions: list[str], objectives: list[str]) -> optuna.Study:
    """`a` decides which trials are best for top1 (whatever its direction), `c` only which are worst, `b` is noise
    for top1 (and decides the second objective, minimised, where there is one). A ranking made for the opposite
    direction puts `c` first."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(directions=directions, sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_user_attr("sepvit.settings", {"objectives": objectives})
    sign = 1.0 if directions[0] == "maximize" else -1.0

    def objective(trial):
        a, b, c = (trial.suggest_float(name, 0.0, 1.0) for name in "abc")
        top1 = sign * (a ** 8 - c ** 8)
        return top1 if len(directions) == 1 else (top1, b)

    study.optimize(objective, n_trials=N_TRIALS)
    return study


class RecordingTracker:
    """What finish_study logs to the parent run, read while its temporary files still exist."""

    def __init__(self):
        self.artifacts: dict[str, bytes] = {}
        self.metrics: dict[str, float] = {}

    def log_metrics(self, run_id, metrics, step):
        self.metrics.update(metrics)

    def log_artifact(self, run_id, path, artifact_path=None):
        self.artifacts[Path(path).name] = Path(path).read_bytes()


def _report_importances(text: str) -> dict[str, dict[str, float]]:
    found = {}
    for name, ranking in re.findall(r"^importance for (\S+) \([^)]*\): (.+)$", text, flags=re.M):
        found[name] = {k: float(v) for k, v in (item.rsplit(" ", 1) for item in ranking.split(", "))}
    return found


CASES = {
    "maximize": (["maximize"], ["top1"], {"top1": "a"}),
    "minimize": (["minimize"], ["top1"], {"top1": "a"}),
    "pareto": (["maximize", "minimize"], ["top1", "macs"], {"top1": "a", "macs": "b"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_importances_rank_for_the_studys_direction_and_report_json_and_figure_agree(case, monkeypatch):
    directions, objectives, first = CASES[case]
    study = known_study(directions, objectives)
    found = importances(study)
    for name, parameter in first.items():
        ranking = list(found[name])
        assert ranking[0] == parameter, (name, found[name])
        assert found[name][parameter] > 0.5, found[name]
    assert list(found["top1"]).index("b") > 0  # noise for top1 never ranks first

    drawn: dict[str, dict[str, float]] = {}
    original = search_report._save_plot

    def read_the_figure(plot, path):
        if path.name == "param_importances.png":
            figure = plot()
            for ax in figure.axes:
                name = ax.get_title().split(" ")[0]
                labels = [t.get_text() for t in ax.get_yticklabels()]
                drawn[name] = {label: bar.get_width() for label, bar in zip(labels, ax.patches)}
        return original(plot, path)

    monkeypatch.setattr(search_report, "_save_plot", read_the_figure)
    tracker = RecordingTracker()
    text = search_report.finish_study(study, SimpleNamespace(objectives=objectives), tracker, "parent", 0.0)

    stored = json.loads(tracker.artifacts["importances.json"])
    assert "param_importances.png" in tracker.artifacts
    printed = _report_importances(text)
    assert set(printed) == set(stored) - {"_why"} == set(drawn) == set(objectives)
    for name in objectives:
        assert list(printed[name]) == list(stored[name]) == list(found[name])  # the same order everywhere
        assert printed[name] == pytest.approx({k: round(v, 2) for k, v in stored[name].items()}, abs=1e-9)
        assert drawn[name] == pytest.approx(stored[name])
    direction_word = {"maximize": "maximised", "minimize": "minimised"}[directions[0]]
    assert f"importance for top1 ({direction_word}" in text


# ---------------------------------------------------------------------------------- chance level
def fixed_study(top1: list[float], data: dict | None) -> optuna.Study:
    """One COMPLETE trial per value of `top1`, in order (parameter `x` is the trial's index)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("sepvit.settings", {"objectives": ["top1"]})
    if data is not None:
        study.set_user_attr("sepvit.data", data)
    study.optimize(lambda trial: top1[trial.suggest_int("x", 0, len(top1) - 1)], n_trials=0)
    for index in range(len(top1)):
        study.enqueue_trial({"x": index})
    study.optimize(lambda trial: top1[trial.suggest_int("x", 0, len(top1) - 1)], n_trials=len(top1))
    return study


def test_trials_at_chance_level_are_flagged_in_the_frame_report_metrics_and_conclusions():
    # 10 classes on 100 images: guessing reaches up to 16 % (upper end of the 95 % binomial interval)
    study = fixed_study([12.0, 16.0, 40.0, 75.0], {"num_classes": 10, "val_size": 100})
    assert search_report.chance_level(study) == (16.0, 10, 100)
    frame = search_report.trials_frame(study)
    assert frame["at_chance"].tolist() == [True, True, False, False]

    text = search_report.summary_text(study)
    warning = next(line for line in text.splitlines() if line.startswith("(chance!)"))
    assert "2 of 4 COMPLETE trials at chance level (trials 0, 1)" in warning and "16.0 %" in warning
    table = {int(line.split()[0]): line for line in text.splitlines() if re.match(r"^\s*\d+\s+\d", line)}
    assert sorted(table) == [0, 1, 2, 3]
    assert sorted(n for n, line in table.items() if "(chance!)" in line) == [0, 1]
    best = next(line for line in text.splitlines() if line.startswith("  trial 3:"))
    assert "(chance!)" not in best

    tracker = RecordingTracker()
    search_report.finish_study(study, SimpleNamespace(objectives=["top1"]), tracker, "parent", 0.0)
    assert tracker.metrics["at_chance"] == 2
    assert json.loads(tracker.artifacts["best_trial.json"])[0]["at_chance"] is False
    assert any("at chance level (trials 0, 1)" in s for s in search_report.conclusions(study))


def test_a_study_entirely_at_chance_says_so_and_one_without_class_counts_flags_nothing():
    everything = fixed_study([9.0, 11.0], {"num_classes": 10, "val_size": 100})
    assert "(chance!) every COMPLETE trial at chance level (trials 0, 1)" in search_report.summary_text(everything)

    unknown = fixed_study([9.0, 11.0], None)
    assert search_report.chance_level(unknown) is None
    assert search_report.trials_frame(unknown)["at_chance"].isna().all()
    assert "chance" not in search_report.summary_text(unknown)


def test_the_noise_sentence_uses_the_calibrated_seed_sd_when_given():
    study = optuna.create_study(direction="maximize")
    for value in (50.0, 55.0, 80.0):
        study.enqueue_trial({"x": value})
    study.optimize(lambda t: t.suggest_float("x", 0, 100), n_trials=3)
    calibrated = " ".join(search_report.conclusions(study, seed_sd=5.0))
    assert "seed sd 5.0 points" in calibrated and f"±{1.96 * 2 ** 0.5 * 5:.1f} points" in calibrated
    plain = " ".join(search_report.conclusions(study))
    assert "seed sd" not in plain


# ---------------------------------------------------------------------------------- beyond seed noise?
def test_with_several_objectives_the_confirmation_targets_the_most_accurate_trial_of_the_pareto_set():
    from experiments.search_confirm import best_trial

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(directions=["maximize", "minimize"])
    points = [(50.0, 10.0), (60.0, 20.0), (40.0, 5.0), (55.0, 30.0)]  # the last is dominated by the second
    for index in range(len(points)):
        study.enqueue_trial({"x": index})
    study.optimize(lambda t: points[t.suggest_int("x", 0, len(points) - 1)], n_trials=len(points))
    assert sorted(t.number for t in study.best_trials) == [0, 1, 2]
    assert best_trial(study).number == 1


def token_study(top1: list[float]) -> optuna.Study:
    """A study as the search stores it (settings included): trial 0 the paper's configuration, then zero tokens."""
    from experiments.train_config import TrainConfig
    from sepvit.config import SepViTConfig

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("sepvit.settings", {
        "objectives": ["top1"], "space": {"window_token": ["learnable", "zero"]},
        "model": SepViTConfig.preset("sepvit_nano_32").to_dict(), "train": TrainConfig(img_size=32).to_dict()})
    study.set_user_attr("sepvit.data", {"num_classes": 10, "val_size": 1000})
    for index, token in enumerate(["learnable", "zero"][:len(top1)]):
        study.enqueue_trial({"window_token": token}, user_attrs={"reference": index == 0})
    study.optimize(lambda t: top1[["learnable", "zero"].index(t.suggest_categorical("window_token",
                                                                                    ["learnable", "zero"]))],
                   n_trials=len(top1))
    return study


CONFIRMED = {  # per-seed top-1 of (zero tokens, the paper's configuration) at seeds 0-2
    "a clear gain": ([90.0, 91.0, 92.5], [85.0, 86.5, 87.0]),
    "a clear loss": ([80.0, 81.0, 82.5], [85.0, 86.5, 87.0]),
    "within the margin": ([86.0, 86.2, 86.9], [86.1, 86.0, 86.8]),
    "seed noise": ([60.0, 90.0, 75.0], [80.0, 70.0, 88.0]),
}


@pytest.mark.parametrize("case", list(CONFIRMED))
def test_the_report_says_whether_the_best_trial_is_beyond_seed_noise_from_the_stored_confirmation(case):
    from experiments import search_confirm
    from experiments.stats import compare, verdict_text

    study = token_study([85.0, 90.0])
    assert "Beyond seed noise? Unconfirmed: trial 1 is +5.00 points" in search_report.summary_text(study)
    best, ref = CONFIRMED[case]
    seeds = [1, 2, 3]  # fresh seeds, after the trials' own (0)
    study.set_user_attr(search_confirm.record_key(1), {
        "status": "finished", "trial": 1, "label": "no-lwt", "reference_label": "reference", "seeds": seeds,
        "call_folder": "/somewhere", "runs": [{"label": label, "seed": s, "status": "FINISHED", "top1": v}
                                              for label, values in (("no-lwt", best), ("reference", ref))
                                              for s, v in zip(seeds, values)]})
    d = compare(best, ref, seeds_a=seeds, seeds_b=seeds)
    sentence = search_confirm.confirmation_sentence(study)
    assert sentence.startswith("Beyond seed noise? Confirmed at 3 paired seeds (1-3")
    assert f"{d.diff:+.2f} points, paired 95 % CI [{d.paired[1]:+.2f}, {d.paired[2]:+.2f}]" in sentence
    assert f"verdict {verdict_text(d.verdict, d.bound, d.seeds_needed)}:" in sentence
    expected = {"separated": "yes: the gain is beyond seed noise" if d.diff > 0 else "worse than the paper's",
                "paired": "yes: the gain is beyond seed noise" if d.diff > 0 else "worse than the paper's",
                "equivalent": "no: the two are equivalent", "unresolved": "not resolved"}[d.verdict]
    assert expected in sentence
    if d.verdict == "unresolved" and d.seeds_needed:
        assert f"--confirm {d.seeds_needed}" in sentence
    assert sentence in search_report.summary_text(study) and sentence in search_report.conclusions(study)
    assert {"a clear gain": "yes", "a clear loss": "worse", "within the margin": "equivalent",
            "seed noise": "not resolved"}[case] in sentence  # each case reaches the answer it was built for


def test_a_study_made_elsewhere_or_without_a_gain_gets_no_command():
    from experiments import search_confirm

    assert search_confirm.confirmation_sentence(fixed_study([10.0, 20.0], None)) is None  # no settings: no claim
    assert search_confirm.confirmation_sentence(token_study([90.0, 85.0])) == (
        "Beyond seed noise? Nothing to confirm: the most accurate trial, 0, is the paper's configuration.")


def test_a_confirmation_stored_at_other_seeds_than_the_fresh_ones_is_refused_with_the_command_that_redoes_it():
    """E.g. one made when --confirm reused the trials' own seed (0), whose luck selected the best trial."""
    from experiments import search_confirm

    study = token_study([85.0, 90.0])
    seeds = [0, 1, 2]
    study.set_user_attr(search_confirm.record_key(1), {
        "status": "finished", "trial": 1, "label": "no-lwt", "reference_label": "reference", "seeds": seeds,
        "call_folder": "/somewhere", "runs": [{"label": label, "seed": s, "status": "FINISHED", "top1": v}
                                              for label, values in (("no-lwt", [90.0, 91.0, 92.5]),
                                                                    ("reference", [85.0, 86.5, 87.0]))
                                              for s, v in zip(seeds, values)]})
    sentence = search_confirm.confirmation_sentence(study)
    assert sentence.startswith("Beyond seed noise? Unconfirmed: the stored confirmation of trial 1 was made at other "
                               "seeds (0-2) than the fresh seeds a confirmation uses (1-3"), sentence
    assert "Confirmed" not in sentence and "verdict" not in sentence
    assert "`--n-trials 0 --confirm 3`" in sentence
    command = sentence.split("`")[3]  # the ablate.py command: the same runs at the fresh seeds
    assert command.startswith("python experiments/ablate.py --window-token zero") and "--seed 1 " in command
    assert command.endswith("--compare --seeds 3")
    assert sentence in search_report.summary_text(study) and sentence in search_report.conclusions(study)
