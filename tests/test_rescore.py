"""experiments/rescore.py: a finished call scored again on more generated validation images, and the error that
the choice of images adds to a mean difference (`stats.validation_sampling_sd`)."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from experiments import ablate
from experiments.data import build_datasets
from experiments.runner.calls import Call
from experiments.runner.checkpoint import load_model
from experiments.runner.engine import evaluate
from experiments.stats import validation_sampling_sd
from runner_support import ROOT, TINY_ARGS

RESCORE = [sys.executable, str(ROOT / "experiments" / "rescore.py")]


# ------------------------------------------------------------------------------ the image-choice error
def test_the_image_error_of_one_seed_is_the_standard_error_of_the_per_image_difference():
    rng = np.random.default_rng(0)
    a, b = rng.random(500) < 0.9, rng.random(500) < 0.8
    per_image = a.astype(float) - b.astype(float)
    assert validation_sampling_sd(a, b) == pytest.approx(100 * per_image.std() / math.sqrt(500))
    assert validation_sampling_sd(a, a) == 0.0  # the same predictions: no image can tell them apart


def test_the_image_error_of_several_seeds_averages_the_seeds_per_image_first():
    # two seeds that err on opposite images cancel image by image: the call's mean difference does not depend
    # on which images were drawn, although each seed's difference does
    a = np.array([[1, 0, 1, 0], [0, 1, 0, 1]], dtype=bool)
    b = np.array([[0, 1, 0, 1], [1, 0, 1, 0]], dtype=bool)
    assert validation_sampling_sd(a, b) == 0.0
    assert validation_sampling_sd(a[0], b[0]) == pytest.approx(50.0)  # one seed: per-image ±1, sd 1, over sqrt(4)


def test_the_image_error_predicts_how_the_mean_difference_moves_between_draws_of_images():
    # the known answer: draw many disjoint validation sets from one population of images and watch the call's
    # mean difference move; its sd is what the formula says from a single draw
    rng = np.random.default_rng(1)
    seeds, population, n = 3, 200_000, 1000
    hard = rng.random(population)  # images differ in difficulty, shared by every seed
    a = rng.random((seeds, population)) > hard * 0.12
    b = rng.random((seeds, population)) > hard * 0.16
    draws = [(a[:, i:i + n].mean() - b[:, i:i + n].mean()) * 100 for i in range(0, population, n)]
    predicted = np.mean([validation_sampling_sd(a[:, i:i + n], b[:, i:i + n]) for i in range(0, population, n)])
    assert np.std(draws, ddof=1) == pytest.approx(predicted, rel=0.12)


def test_the_image_error_refuses_arrays_of_different_shapes():
    with pytest.raises(ValueError, match="equal shape"):
        validation_sampling_sd(np.ones((2, 5)), np.ones((2, 4)))


# ------------------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def finished_call(tmp_path_factory):
    """A finished tiny call on the generated default dataset: no-gsa against the reference, 2 seeds, 32 images."""
    out = tmp_path_factory.mktemp("rescore")
    assert ablate.main([*TINY_ARGS, "--no-gsa", "--compare", "--seeds", "2", "--output", str(out)]) == 0
    (folder,) = (out / "sepvit-ablation").iterdir()
    return folder


def rescore(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RESCORE, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_rescore_scores_each_run_on_more_images_and_reproduces_its_own_first(finished_call):
    done = rescore(str(finished_call), "--val-size", "96")
    assert done.returncode == 0, done.stderr
    record = json.loads((finished_call / "rescore-val96.json").read_text())
    call = Call.load(finished_call)
    assert record["stored_val_size"] == 32 and len(record["runs"]) == 4
    for row in record["runs"]:
        run = next(r for r in call.runs if r.folder == row["folder"])
        assert row["top1_32"] == pytest.approx(row["recorded_top1"])  # its own images are the first 32
        # independently: the runner's evaluation of the same weights on 96 images of the same dataset
        _, val, _ = build_datasets("synthetic", img_size=32, train_size=32, val_size=96, seed=run.train.data_seed)
        loader = torch.utils.data.DataLoader(val, batch_size=32)
        model = load_model(finished_call / run.folder / "last.pth")
        assert row["top1_96"] == pytest.approx(evaluate(model, loader, torch.device("cpu"), False, 1)["val_top1"])
    assert "no-gsa" in done.stdout and "on 96" in done.stdout and "± images" in done.stdout
    (row,) = record["comparison"]
    assert row["config"] == "no-gsa" and row["image_error_96"] >= 0


@pytest.mark.parametrize("args, message", [
    (["--val-size", "32"], "already scored on 32 images"),
    (["--val-size", "0"], "positive number"),
])
def test_rescore_refuses_a_size_that_adds_no_images(finished_call, args, message):
    done = rescore(str(finished_call), *args)
    assert done.returncode == 2 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_rescore_refuses_a_folder_that_is_no_call(tmp_path):
    done = rescore(str(tmp_path), "--val-size", "96")
    assert done.returncode == 2 and "call.json" in done.stderr and "Traceback" not in done.stderr


def test_rescore_refuses_weights_that_do_not_reproduce_the_recorded_top1(finished_call, tmp_path):
    import shutil

    copy = tmp_path / "sepvit-ablation" / finished_call.name
    shutil.copytree(finished_call, copy, ignore=shutil.ignore_patterns("rescore-*.json"))
    run = Call.load(copy).runs[0]
    result_path = copy / run.folder / "result.json"
    result = json.loads(result_path.read_text())
    result["history"][-1]["val_top1"] += 10.0  # what the run recorded is no longer what its weights score
    result_path.write_text(json.dumps(result))
    done = rescore(str(copy), "--val-size", "96")
    assert done.returncode == 2 and "not the run's" in done.stderr and "Traceback" not in done.stderr
    assert not (copy / "rescore-val96.json").exists()


def test_rescore_refuses_a_dataset_read_from_files(finished_call):
    from experiments.rescoring import validation_tensors
    from workbench.cli import UsageError

    run = Call.load(finished_call).runs[0]
    run.train = run.train.replace(dataset="digits")
    with pytest.raises(UsageError, match="no more validation images"):
        validation_tensors(run, 5000)


def test_the_record_reads_back_with_both_sizes_side_by_side_and_names_changed_verdicts(finished_call):
    from experiments.rescoring import changed_verdicts, format_record, load_record

    if load_record(finished_call, 96) is None:
        assert rescore(str(finished_call), "--val-size", "96").returncode == 0
    record = load_record(finished_call, 96)
    text = format_record(record)
    assert "on the runs' own 32 images and on 96" in text and "no-gsa" in text
    (row,) = record["comparison"]
    assert changed_verdicts(record) == ([] if row["verdict_32"] == row["verdict_96"] else ["no-gsa"])
    assert changed_verdicts({**record, "comparison": [{**row, "verdict_96": "separated", "verdict_32": "paired"}]}) \
        == ["no-gsa"]
    assert load_record(finished_call, 97) is None  # never made at that size


def test_list_calls_names_each_call_folder(finished_call):
    from experiments.report import list_calls
    from workbench.tracking import default_tracking_uri

    (call,) = list_calls(default_tracking_uri(finished_call.parents[1]), "sepvit-ablation").to_dict("records")
    assert finished_call == finished_call.parents[1] / call["call_folder"]
