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
from experiments.stats import VERDICT_RULES
from experiments.stats import image_noise
from runner_support import ROOT, TINY_ARGS

RESCORE = [sys.executable, str(ROOT / "experiments" / "rescore.py")]


# ------------------------------------------------------------------------------ the image noise
def test_the_per_seed_image_noise_is_the_standard_error_of_a_seeds_per_image_difference():
    rng = np.random.default_rng(0)
    a, b = rng.random(500) < 0.9, rng.random(500) < 0.8
    per_image = a.astype(float) - b.astype(float)
    noise = image_noise(a, b)
    assert noise.per_seed == pytest.approx(100 * per_image.std(ddof=1) / math.sqrt(500))
    assert math.isnan(noise.shared) and (noise.images, noise.seeds) == (500, 1)  # one seed cannot split it
    assert image_noise(a, a).per_seed == 0.0  # the same predictions: no image can tell them apart


def test_the_per_seed_image_noise_predicts_how_a_seeds_difference_moves_between_draws_of_images():
    # the known answer: draw many disjoint validation sets from one population and watch one seed's difference move
    rng = np.random.default_rng(1)
    population, n = 200_000, 1000
    hard = rng.random(population)
    a, b = rng.random(population) > hard * 0.12, rng.random(population) > hard * 0.16
    draws = [(a[i:i + n].mean() - b[i:i + n].mean()) * 100 for i in range(0, population, n)]
    predicted = np.mean([image_noise(a[i:i + n], b[i:i + n]).per_seed for i in range(0, population, n)])
    assert np.std(draws, ddof=1) == pytest.approx(predicted, rel=0.12)


def _planted(lean: float, seeds: int, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of two models over `seeds` runs on n images; on half the images (fixed, shared by every seed) `a`
    is right `lean` more often than on average, on the other half `lean` less: an image effect of sd `lean`."""
    tilt = np.where(np.arange(n) % 2 == 0, lean, -lean)
    return rng.random((seeds, n)) < 0.6 + tilt, rng.random((seeds, n)) < 0.6


@pytest.mark.parametrize("seeds", [3, 30])
def test_the_shared_image_noise_finds_a_planted_image_effect_whatever_the_seeds(seeds):
    rng = np.random.default_rng(seeds)
    n = 4000
    a, b = _planted(0.3, seeds, n, rng)
    truth = 100 * 0.3 / math.sqrt(n)  # sd of the image effect over sqrt(n): 0.47 points
    assert image_noise(a, b).shared == pytest.approx(truth, rel=0.15)
    # the naive error of the seed-averaged difference mixes in seed-by-image noise, which more seeds shrink
    naive = 100 * (a.astype(float) - b).mean(axis=0).std(ddof=1) / math.sqrt(n)
    assert naive > image_noise(a, b).shared


def test_without_an_image_effect_the_shared_noise_is_near_zero():
    a, b = _planted(0.0, 5, 4000, np.random.default_rng(7))
    noise = image_noise(a, b)
    assert noise.shared < 0.2 * noise.per_seed


def test_the_image_noise_refuses_arrays_of_different_shapes():
    with pytest.raises(ValueError, match="equal shape"):
        image_noise(np.ones((2, 5)), np.ones((2, 4)))


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
    assert "no-gsa" in done.stdout and "on 96" in done.stdout and "± per seed" in done.stdout
    (row,) = record["comparison"]
    assert row["config"] == "no-gsa" and row["verdict_96"] in VERDICT_RULES
    # the image noise pairs each no-gsa seed with the reference's same seed, on all 96 images
    _, val, _ = build_datasets("synthetic", img_size=32, train_size=32, val_size=96, seed=0)
    correct = {}
    for run in call.runs:
        with torch.inference_mode():
            predicted = load_model(finished_call / run.folder / "last.pth")(val.images).argmax(-1)
        correct[run.label, run.seed] = (predicted == torch.as_tensor(val.labels)).numpy()
    expected = image_noise([correct["no-gsa", s] for s in (0, 1)], [correct["reference", s] for s in (0, 1)])
    assert row["noise_per_seed_96"] == pytest.approx(expected.per_seed)
    assert row["noise_shared_96"] == pytest.approx(expected.shared, nan_ok=True)


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
    from experiments.rescoring import check_request
    from workbench.cli import UsageError

    run = Call.load(finished_call).runs[0]
    run.train = run.train.replace(dataset="digits")
    with pytest.raises(UsageError, match="no more validation images"):
        check_request([run], 5000)


def test_rescore_refuses_a_run_whose_final_weights_are_gone(finished_call, tmp_path):
    import shutil

    copy = tmp_path / "sepvit-ablation" / finished_call.name
    shutil.copytree(finished_call, copy, ignore=shutil.ignore_patterns("rescore-*.json"))
    last = Call.load(copy).runs[-1]
    (copy / last.folder / "last.pth").unlink()
    done = rescore(str(copy), "--val-size", "96")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("rescore.py: error: ") and "final weights are gone" in last_line


def test_rescore_scores_the_ema_when_the_run_reported_the_ema(tmp_path):
    # the reproduction check passes only if the weights scored are the ones the run reported with: the EMA's
    assert ablate.main([*TINY_ARGS, "--model-ema", "--output", str(tmp_path)]) == 0
    (folder,) = (tmp_path / "sepvit-ablation").iterdir()
    done = rescore(str(folder), "--val-size", "64")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads((folder / "rescore-val64.json").read_text())["runs"]
    assert row["top1_32"] == pytest.approx(row["recorded_top1"])


def test_the_record_reads_back_with_both_sizes_side_by_side_and_names_changed_verdicts(finished_call):
    from experiments.rescoring import changed_verdicts, format_record, load_record

    if load_record(finished_call, 96) is None:
        assert rescore(str(finished_call), "--val-size", "96").returncode == 0
    record = load_record(finished_call, 96)
    text = format_record(record)
    assert "on the runs' own 32 images and on 96" in text and "no-gsa" in text
    (row,) = record["comparison"]
    same = {**row, "verdict_32": "equivalent", "verdict_text_32": "equivalent (±1.9)",
            "verdict_96": "equivalent", "verdict_text_96": "equivalent (±1.8)"}
    assert changed_verdicts({**record, "comparison": [same]}) == []  # a narrower bound is not another verdict
    other = {**same, "verdict_96": "separated", "verdict_text_96": "separated"}
    assert changed_verdicts({**record, "comparison": [other]}) == ["no-gsa"]
    assert load_record(finished_call, 97) is None  # never made at that size


def test_list_calls_names_each_call_folder(finished_call):
    from experiments.report import list_calls
    from workbench.tracking import default_tracking_uri

    (call,) = list_calls(default_tracking_uri(finished_call.parents[1]), "sepvit-ablation").to_dict("records")
    assert finished_call == finished_call.parents[1] / call["call_folder"]


def test_rescore_refuses_a_damaged_result_in_one_line(finished_call, tmp_path):
    import shutil

    copy = tmp_path / "sepvit-ablation" / finished_call.name
    shutil.copytree(finished_call, copy, ignore=shutil.ignore_patterns("rescore-*.json"))
    (copy / Call.load(copy).runs[0].folder / "result.json").write_text("{not json")
    done = rescore(str(copy), "--val-size", "96")
    assert done.returncode == 2 and "result.json is damaged" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
