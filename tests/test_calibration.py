"""Calibration (experiments/calibration.py): the seed noise, the null change and what k seeds resolve, computed
from runs; the worker layout of --parallel auto; and a real --calibrate call."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from experiments.runner.running import worker_layout
from experiments.calibration import NULL_LABEL, calibrate, format_calibration, null_change, takeoff_epoch
from experiments.stats import min_detectable_difference
from runner_support import TINY_ARGS, mlflow_db_template, output_dir, run_to_end  # noqa: F401

REF = [61.0, 64.5, 62.0, 66.0, 63.5]
NULL = [61.5, 63.0, 63.0, 66.5, 62.0]


def frame(ref=REF, null=NULL) -> pd.DataFrame:
    rows = [{"run_id": f"{label}{seed}", "config": label, "seed": seed, "status": "FINISHED", "top1": value}
            for label, values in (("reference", ref), (NULL_LABEL, null)) for seed, value in enumerate(values)]
    return pd.DataFrame(rows)


def smooth_curves(df: pd.DataFrame, epochs: int = 6) -> dict[str, list[float]]:
    """Curves that rise early and settle on the run's final top-1."""
    return {r.run_id: [10 + (r.top1 - 10) * min(1.0, e / 2) for e in range(1, epochs + 1)] for r in df.itertuples()}


def test_takeoff_is_the_first_epoch_half_way_from_chance_to_the_final_value():
    assert takeoff_epoch([12, 20, 50, 70, 70], chance=10) == 3  # half way: 40
    assert takeoff_epoch([45, 60, 70], chance=10) == 1
    assert takeoff_epoch([10, 9, 10], chance=10) is None  # never above chance
    assert takeoff_epoch([10, 11, 12, 13, 70], chance=10) == 5


def test_calibration_figures_match_numpy_and_scipy():
    df = frame()
    cal = calibrate(df, smooth_curves(df), "reference", num_classes=10)
    assert cal["seeds"] == 5 and cal["seed_sd"] == pytest.approx(np.std(REF, ddof=1))
    assert cal["mean"] == pytest.approx(np.mean(REF))
    diffs = np.subtract(NULL, REF)
    assert cal["null_paired_sd"] == pytest.approx(np.std(diffs, ddof=1))
    test = st.ttest_rel(NULL, REF)
    low, high = test.confidence_interval(0.95)
    assert (cal["null_paired_low"], cal["null_paired_high"]) == (pytest.approx(low), pytest.approx(high))
    row = next(m for m in cal["mdd"] if m["seeds"] == 3)
    assert row["unpaired"] == pytest.approx(min_detectable_difference(np.std(REF, ddof=1), 3))
    assert row["paired_floor"] == pytest.approx(min_detectable_difference(np.std(diffs, ddof=1), 3, paired=True))
    assert [m["seeds"] for m in cal["mdd"]] == list(range(2, 11))
    assert all(a["unpaired"] > b["unpaired"] for a, b in zip(cal["mdd"], cal["mdd"][1:]))  # more seeds, finer
    assert cal["meets_target"] and cal["late_runs"] == []
    text = format_calibration(cal)
    assert "target ≤ 2: met" in text and "includes 0, as it must" in text and "every run covered half" in text


def test_calibration_flags_noise_above_target_and_late_takeoff():
    ref = [40.0, 75.0, 58.0]
    df = frame(ref=ref, null=[70.0, 52.0, 61.0])
    curves = smooth_curves(df)
    curves["reference0"] = [10, 10, 11, 10, 12, 40.0]  # takes off in its last epoch
    cal = calibrate(df, curves, "reference", num_classes=10)
    assert not cal["meets_target"] and cal["late_runs"] == ["reference seed0"]
    text = format_calibration(cal, markdown=True)
    assert "NOT met" in text and "reference seed0" in text and "| 3 |" in text


def test_null_change_flips_only_the_attention_kernel():
    from sepvit.config import SepViTConfig

    cfg = SepViTConfig.preset("sepvit_nano_32")
    assert null_change(cfg).diff(cfg) == {"fused_attn": not cfg.fused_attn}


@pytest.mark.parametrize("parallel, to_train, threads, device, world, expected", [
    ("auto", 6, 2, "cpu", 1, (2, 1)),  # the default on 2 cores: two one-thread runs at a time
    ("auto", 1, 2, "cpu", 1, (1, 2)),  # a single run keeps every thread
    ("auto", 6, 1, "cpu", 1, (1, 1)),  # one thread: one after another
    ("auto", 6, 8, "cuda", 1, (1, 8)),  # one GPU: one after another
    ("auto", 6, 2, "cpu", 2, (1, 2)),  # under torchrun
    (4, 2, 8, "cpu", 1, (2, 4)),  # never more processes than runs
    (1, 6, 2, "cpu", 1, (1, 2)),
])
def test_worker_layout(parallel, to_train, threads, device, world, expected):
    assert worker_layout(parallel, to_train, threads, device, world) == expected


def test_calibrate_call_reports_and_stores_the_calibration(output_dir):  # noqa: F811
    done = run_to_end(["--calibrate", "--seeds", "2", *TINY_ARGS, "--output", str(output_dir)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Calibration of `reference`: 2 seeds" in done.stdout and "Null change" in done.stdout
    assert "interleaved rounds" in done.stdout  # the cost columns come from the side-by-side timing
    in_call = list((output_dir / "sepvit-ablation").rglob("calibration.json"))
    logged = list((output_dir / "mlartifacts").rglob("calibration.json"))  # the parent run's artifact
    assert len(in_call) == 1 and len(logged) == 1 and in_call[0].read_text() == logged[0].read_text()
    cal = json.loads(in_call[0].read_text())
    assert cal["reference"] == "reference" and cal["seeds"] == 2 and len(cal["runs"]) == 4
    assert not math.isnan(cal["seed_sd"])


def test_calibrate_refuses_compare_and_grid(output_dir):  # noqa: F811
    done = run_to_end(["--calibrate", "--compare", "--no-gsa", *TINY_ARGS, "--output", str(output_dir)])
    assert done.returncode == 2 and "--calibrate" in done.stderr and "Traceback" not in done.stderr
