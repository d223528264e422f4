"""Calibration: how precise the instrument is, measured rather than assumed.

`python experiments/ablate.py --calibrate --seeds N` trains one configuration (the reference, or the one the
switches describe) at N seeds, and beside it a *null change*: the same configuration with `fused_attn` flipped,
which computes the same function (outputs equal within 1e-5) by another kernel. From those 2N runs:

- seed standard deviation: how far the configuration's top-1 moves from seed to seed;
- the null change's paired difference: its mean should be 0; the standard deviation of its per-seed
  differences is the floor of any paired comparison's noise (the chaos of training amplifying a 1e-6
  perturbation), reached only when a real change interacts with the seed no more than a null one does;
- the minimum detectable difference (two-sided 5 % test, power 0.8) for k = 2..10 seeds per arm, unpaired
  (from the seed sd) and paired (from the null change's sd);
- take-off: the epoch at which each run's learning curve first covers half the way from chance to its final
  top-1; a run whose take-off comes in the second half of the budget, or that still gains more than
  `CLIMBING_POINTS` in its last epoch, is flagged: its final number depends on when it happened to take off.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .stats import mean_ci, min_detectable_difference, paired_diff

NULL_LABEL = "null-change"
SEED_COUNTS = tuple(range(2, 11))
CLIMBING_POINTS = 2.0  # a last-epoch gain above this: the run had not settled
TARGET_SEED_SD = 2.0  # the precision the default benchmark is meant to reach (issue 19)


def null_change(cfg):
    """The configuration computing the same function by another attention kernel (fused <-> explicit)."""
    return cfg.replace(fused_attn=not cfg.fused_attn)


def takeoff_epoch(curve: Sequence[float], chance: float) -> int | None:
    """First epoch (1-based) whose top-1 covers half the way from chance to the curve's final value; None when
    the run ends at or below chance (it never took off)."""
    final = curve[-1] if len(curve) else math.nan
    if not final > chance:
        return None
    half_way = chance + 0.5 * (final - chance)
    return next(i for i, value in enumerate(curve, 1) if value >= half_way)


def calibrate(runs: pd.DataFrame, curves: dict[str, list[float]], reference: str, num_classes: int,
              null_label: str = NULL_LABEL) -> dict[str, Any]:
    """The calibration record of a --calibrate call.

    runs: `report.results_frame` rows (config, seed, status, top1, run_id); curves: run_id -> per-epoch top-1.
    """
    chance = 100.0 / num_classes
    done = runs[runs["status"] == "FINISHED"]
    ref = done[done["config"] == reference].set_index("seed")["top1"].astype(float).sort_index()
    null = done[done["config"] == null_label].set_index("seed")["top1"].astype(float).sort_index()
    seeds = sorted(set(ref.index) & set(null.index))
    seed_sd = float(ref.std(ddof=1)) if len(ref) >= 2 else math.nan
    mean, half = mean_ci(ref.to_numpy()) if len(ref) >= 2 else (float(ref.mean()) if len(ref) else math.nan, math.nan)
    diffs = (null.loc[seeds] - ref.loc[seeds]).to_numpy()
    null_mean, null_low, null_high = paired_diff(null.loc[seeds], ref.loc[seeds]) if len(seeds) >= 2 else (
        math.nan, math.nan, math.nan)
    null_sd = float(np.std(diffs, ddof=1)) if len(diffs) >= 2 else math.nan
    runs_out = []
    epochs = 0
    for _, row in done.iterrows():
        curve = curves.get(row["run_id"], [])
        epochs = max(epochs, len(curve))
        take_off = takeoff_epoch(curve, chance) if curve else None
        last_gain = curve[-1] - curve[-2] if len(curve) >= 2 else math.nan
        runs_out.append({"config": row["config"], "seed": int(row["seed"]), "top1": float(row["top1"]),
                         "takeoff_epoch": take_off, "last_epoch_gain": last_gain, "epochs": len(curve)})
    late = [r for r in runs_out
            if r["takeoff_epoch"] is None or r["takeoff_epoch"] > r["epochs"] / 2 or r["last_epoch_gain"] > CLIMBING_POINTS]
    return {
        "reference": reference, "null_change": "fused_attn flipped: the same function through another kernel",
        "seeds": len(ref), "mean": float(mean), "ci_half_width": float(half), "seed_sd": seed_sd,
        "target_seed_sd": TARGET_SEED_SD, "meets_target": bool(seed_sd <= TARGET_SEED_SD) if not math.isnan(seed_sd) else None,
        "null_paired_mean": float(null_mean), "null_paired_low": float(null_low), "null_paired_high": float(null_high),
        "null_paired_sd": null_sd, "chance": chance, "epochs": epochs,
        "mdd": [{"seeds": k, "unpaired": min_detectable_difference(seed_sd, k),
                 "paired_floor": min_detectable_difference(null_sd, k, paired=True)} for k in SEED_COUNTS],
        "runs": runs_out, "late_runs": [f"{r['config']} seed{r['seed']}" for r in late],
    }


def format_calibration(cal: dict[str, Any], markdown: bool = False) -> str:
    """The calibration as text: the figures, the MDD table, the take-off check, each in a computed sentence."""
    lines = [f"Calibration of `{cal['reference']}`: {cal['seeds']} seeds, top-1 {cal['mean']:.2f} ± "
             f"{cal['ci_half_width']:.2f} (95 % CI half-width); seed standard deviation {cal['seed_sd']:.2f} points "
             f"(target ≤ {cal['target_seed_sd']:.0f}: {'met' if cal['meets_target'] else 'NOT met'})."]
    if not math.isnan(cal["null_paired_sd"]):
        includes = cal["null_paired_low"] <= 0 <= cal["null_paired_high"]
        lines.append(f"Null change ({cal['null_change']}): paired difference {cal['null_paired_mean']:+.2f} "
                     f"[{cal['null_paired_low']:+.2f}, {cal['null_paired_high']:+.2f}] "
                     f"({'includes 0, as it must' if includes else 'EXCLUDES 0: the instrument is biased'}); "
                     f"sd of per-seed differences {cal['null_paired_sd']:.2f} points, the floor of paired noise.")
    header = ["seeds per arm", "resolves unpaired (points)", "resolves paired, at the floor (points)"]
    rows = [[str(m["seeds"]), _num(m["unpaired"]), _num(m["paired_floor"])] for m in cal["mdd"]]
    if markdown:
        table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |"
                                                                                 for r in rows]
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        table = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
        table += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.append("\n".join(table))
    takeoffs = [r["takeoff_epoch"] for r in cal["runs"] if r["takeoff_epoch"] is not None]
    if cal["late_runs"]:
        lines.append(f"Take-off: {len(cal['late_runs'])} of {len(cal['runs'])} runs took off late (second half of "
                     f"the budget), never, or still gained > {CLIMBING_POINTS:g} points in their last epoch: "
                     f"{', '.join(cal['late_runs'])}; their final numbers depend on when they took off.")
    else:
        lines.append(f"Take-off: every run covered half its way from chance by epoch {max(takeoffs)} of "
                     f"{cal['epochs']} and gained ≤ {CLIMBING_POINTS:g} points in its last epoch.")
    lines.append("Minimum detectable difference: two-sided 5 % t test, power 0.8 (noncentral t).")
    return "\n\n".join(lines)


def _num(value: float) -> str:
    return "-" if value is None or math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.1f}")
