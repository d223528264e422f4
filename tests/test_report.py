"""Reporting rules on hand-made runs: chance level flagged, pooled duplicates dropped, conclusions computed."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.report import (ReportError, compare_to_reference, conclusions, format_summary, pool, resolution,
                                resolution_sentence, summarize)
from experiments.stats import chance_interval, min_detectable_difference


def _runs(rows):
    base = {"status": "FINISHED", "params": 1, "macs": 1, "latency_ms": 1.0, "img_per_s": 1.0, "best_top1": 0.0,
            "model.gsa": "True", "train.lr": "0.003", "train.seed": "0", "start_time": 0}
    return pd.DataFrame([{**base, **row} for row in rows])


def test_chance_interval_is_the_binomial_interval_of_guessing():
    low, high = chance_interval(10, 1000)
    assert low < 10 < high and high - low == pytest.approx(3.7, abs=0.2)


def test_a_configuration_at_chance_is_flagged_and_not_interpreted():
    runs = _runs([
        {"run_id": "a", "config": "no-ope", "seed": 0, "top1": 10.5, "is_reference": False},
        {"run_id": "b", "config": "no-ope", "seed": 1, "top1": 9.9, "is_reference": False},
        {"run_id": "c", "config": "reference", "seed": 0, "top1": 60.0, "is_reference": True},
        {"run_id": "d", "config": "reference", "seed": 1, "top1": 66.0, "is_reference": True},
    ])
    summary = summarize(runs, num_classes=10, val_size=1000)
    assert summary.set_index("config")["at_chance"].to_dict() == {"no-ope": True, "reference": False}
    assert "no-ope (chance!)" in format_summary(summary, num_classes=10, val_size=1000)
    sentence, = conclusions(summary, compare_to_reference(runs))
    assert "not interpretable" in sentence and "no-ope" in sentence


def test_conclusion_sentence_states_the_measured_difference():
    runs = _runs([{"run_id": str(i), "config": c, "seed": i % 3, "top1": v, "is_reference": c == "reference"}
                  for i, (c, v) in enumerate([("no-dssa", 44.3), ("no-dssa", 36.8), ("no-dssa", 33.2),
                                              ("reference", 65.5), ("reference", 59.4), ("reference", 62.8)])])
    summary = summarize(runs, num_classes=10, val_size=1000)
    comparison = compare_to_reference(runs)
    sentence, = conclusions(summary, comparison)
    row = comparison.iloc[0]
    assert sentence.startswith("`no-dssa` loses 24.5 points against the reference")
    assert f"paired 95 % CI [{row['paired_low']:+.1f}, {row['paired_high']:+.1f}] over 3 shared seeds" in sentence
    assert f"Welch 95 % CI [{row['welch_low']:+.1f}, {row['welch_high']:+.1f}]" in sentence
    assert "separated: the two 95 % CIs do not overlap" in sentence and "3 vs 3 seeds" in sentence


@pytest.mark.parametrize("no_dssa, verdict, phrase", [
    ((45.8, 43.8, 32.6), "paired", "resolved by the paired interval"),  # the stored main call, seeds 0-2
    ((70.0, 61.0, 52.0), "unresolved", "allows differences up to 15.4 points, wider than the ±2-point"),
    ((71.0, 72.5, 52.4), "equivalent", "equivalent: no difference larger than 0.7 points"),
])
def test_conclusion_names_the_rule_that_decides(no_dssa, verdict, phrase):
    values = [("no-dssa", v) for v in no_dssa] + [("reference", v) for v in (71.2, 72.9, 52.1)]
    runs = _runs([{"run_id": str(i), "config": c, "seed": i % 3, "top1": v, "is_reference": c == "reference"}
                  for i, (c, v) in enumerate(values)])
    comparison = compare_to_reference(runs)
    assert comparison["verdict"].iloc[0] == verdict and comparison["cis_overlap"].iloc[0]
    sentence, = conclusions(summarize(runs, num_classes=10, val_size=1000), comparison)
    assert phrase in sentence and "separated" not in sentence


def test_unshared_seeds_fall_back_to_welch():
    values = [("x", s, v) for s, v in ((3, 50.0), (4, 51.0), (5, 50.5))] + \
             [("reference", s, v) for s, v in ((0, 60.0), (1, 62.0), (2, 59.0))]
    runs = _runs([{"run_id": f"{c}{s}", "config": c, "seed": s, "top1": v, "is_reference": c == "reference"}
                  for c, s, v in values])
    row = compare_to_reference(runs).iloc[0]
    assert row["paired_seeds"] == 0 and row["verdict"] == "separated"


def test_resolution_is_computed_from_the_calls_own_runs():
    values = {"reference": (60.0, 62.0, 61.0), "x": (58.0, 61.0, 58.5)}
    runs = _runs([{"run_id": f"{c}{s}", "config": c, "seed": s, "top1": v, "is_reference": c == "reference"}
                  for c, vs in values.items() for s, v in enumerate(vs)])
    res = resolution(runs)
    pooled = ((np.var(values["reference"], ddof=1) + np.var(values["x"], ddof=1)) / 2) ** 0.5
    diffs = np.subtract(values["x"], values["reference"])
    assert res["seeds"] == 3 and res["seed_sd"] == pytest.approx(pooled)
    assert res["diff_sd"] == pytest.approx(np.std(diffs, ddof=1))
    assert res["mdd"] == pytest.approx(min_detectable_difference(pooled, 3))
    assert res["mdd_paired"] == pytest.approx(min_detectable_difference(np.std(diffs, ddof=1), 3, paired=True))
    sentence = resolution_sentence(res)
    assert sentence.startswith(f"With 3 seeds per configuration this call resolves differences ≥ {res['mdd']:.1f}")
    one_seed = resolution(runs[runs["seed"] == 0])
    assert "resolves nothing" in resolution_sentence(one_seed)


def test_pooling_drops_repeated_seeds_keeping_the_newest():
    runs = _runs([
        {"run_id": "old", "config": "ref", "seed": 0, "top1": 50.0, "is_reference": True, "start_time": 1},
        {"run_id": "new", "config": "ref", "seed": 0, "top1": 50.0, "is_reference": True, "start_time": 2},
        {"run_id": "s1", "config": "ref", "seed": 1, "top1": 52.0, "is_reference": True, "start_time": 2,
         "train.seed": "1"},
    ])
    pooled = pool(runs)
    assert sorted(pooled["run_id"]) == ["new", "s1"]
    assert summarize(pooled)["seeds"].iloc[0] == 2


def test_pooling_refuses_one_label_for_two_configurations():
    runs = _runs([{"run_id": "a", "config": "x", "seed": 0, "top1": 1.0, "is_reference": False},
                  {"run_id": "b", "config": "x", "seed": 0, "top1": 1.0, "is_reference": False, "model.gsa": "False"}])
    with pytest.raises(ReportError, match="model.gsa"):
        pool(runs)


def _logged_run(run_id, start_time, params, dataset="synthetic"):
    from types import SimpleNamespace
    data = SimpleNamespace(metrics={"val_top1": 90.0}, tags={"config": "ref", "is_reference": "true"},
                           params={"train.seed": "0", "train.dataset": dataset, "model.gsa": "True", **params})
    info = SimpleNamespace(run_id=run_id, run_name="ref seed0", status="FINISHED", start_time=start_time)
    return SimpleNamespace(data=data, info=info)


def test_a_run_logged_before_a_training_field_existed_pools_with_a_newer_run_that_trained_alike():
    from experiments.report import _row
    old = _row(_logged_run("old", 1, {}))  # logged before synthetic_cue and final_val_size existed
    alike = _row(_logged_run("new", 2, {"train.synthetic_cue": "ring", "train.final_val_size": "0"}))
    pooled = pool(pd.DataFrame([old, alike]))
    assert list(pooled["run_id"]) == ["new"]  # one training configuration and seed: the newest run counts
    scored_otherwise = _row(_logged_run("new", 2, {"train.synthetic_cue": "ring", "train.final_val_size": "None"}))
    with pytest.raises(ReportError, match="train.final_val_size"):
        pool(pd.DataFrame([old, scored_otherwise]))
    other_cue = _row(_logged_run("new", 2, {"train.synthetic_cue": "frame", "train.final_val_size": "0"}))
    with pytest.raises(ReportError, match="train.synthetic_cue"):
        pool(pd.DataFrame([old, other_cue]))


def test_two_spellings_of_one_scoring_and_fields_a_dataset_never_used_do_not_split_a_pool():
    from experiments.report import _row
    # digits: read from files, never final-scored; synthetic_cue does not apply to it
    old = _row(_logged_run("old", 1, {}, dataset="digits"))
    new = _row(_logged_run("new", 2, {"train.synthetic_cue": "frame", "train.final_val_size": "None"},
                           dataset="digits"))
    assert list(pool(pd.DataFrame([old, new]))["run_id"]) == ["new"]
    # the generated default: unset means the 10000 images that an explicit 10000 names
    unset = _row(_logged_run("unset", 1, {"train.synthetic_cue": "frame", "train.final_val_size": "None"}))
    explicit = _row(_logged_run("explicit", 2, {"train.synthetic_cue": "frame", "train.final_val_size": "10000"}))
    assert unset["train.final_val_size"] == explicit["train.final_val_size"] == "10000"
    assert list(pool(pd.DataFrame([unset, explicit]))["run_id"]) == ["explicit"]
