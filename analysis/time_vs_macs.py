"""Does time follow MACs? Timed rows against their MAC counts, and where not, the profiler's account of why.

Inputs are the rows of `analysis.speed.benchmark_blocks` / `benchmark_models`; `op_profile` splits a call's CPU
time into the operators a MAC counter counts and the rest (norms, softmax, GELU, copies, padding, rolls, adds),
and `time_sentences` states the conclusion computed from both (notebook 05).

Two rules for "time follows MACs" (`tolerance`): a fixed factor (time ratio within 1 + tolerance of the MAC ratio),
or, with tolerance None, the measured spread: the MAC ratio lies inside the 95 % interval of the candidate's median
time ratio over its rounds (`median_interval`: distribution-free, from order statistics, so one slow round cannot
widen it much). The second sets the tolerance from each candidate's own noise: a candidate is said to depart from
its MACs only where the rounds show it, and the interval's width says how closely that was checked.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Callable, Sequence

import torch
from torch.profiler import ProfilerActivity, profile

from workbench.quiet import native_stderr_silenced

from analysis.block_counts import block_comparison
from analysis.model_counts import build_config
from analysis.units import TITLES, UNITS, stage_units

# Operators whose work a MAC counter counts (fvcore's and ptflops' matmul/conv handles, and SDPA with our handle);
# every other operator (norms, softmax outside SDPA, GELU, copies, padding, rolls, adds) costs time and no MACs.
MAC_OPERATORS = frozenset({"mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul", "linear", "einsum", "conv2d",
                           "convolution", "_convolution", "mkldnn_convolution", "scaled_dot_product_attention"})


def counted_by_macs(operator: str) -> bool:
    """Whether a profiler operator name (e.g. 'aten::addmm') is work that the MAC counts count."""
    name = operator.split("::")[-1]
    return name in MAC_OPERATORS or name.startswith(("_scaled_dot_product", "_mkl_linear"))


def follows_macs(time_ratio: float, macs_ratio: float, tolerance: float = 0.2) -> bool:
    """Time follows MACs when the time ratio to a reference is within a factor (1 + tolerance) of the MAC ratio."""
    excess = time_ratio / macs_ratio
    return 1 / (1 + tolerance) <= excess <= 1 + tolerance


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(low, high, coverage): the distribution-free interval of the median from order statistics, the shortest
    symmetric pair of ranks (k, n + 1 - k) whose coverage 1 - 2 P(Binomial(n, 1/2) < k) is at least `level`; with
    too few values for that level, the range (min, max) and its own, lower, coverage."""
    data = sorted(values)
    n = len(data)
    if n == 0:
        raise ValueError("no values: the median has no interval")
    below = 0.0  # P(Binomial(n, 1/2) < k), k = 1, 2, ...
    best = (1, 1 - 2 * 0.5 ** n)
    for k in range(1, n // 2 + 1):
        below += math.comb(n, k - 1) * 0.5 ** n
        coverage = 1 - 2 * below
        if coverage < level:
            break
        best = (k, coverage)
    k, coverage = best
    return data[k - 1], data[n - k], coverage


def spread_test(rounds: Sequence[float] | None, time_ratio: float | None, macs_ratio: float | None,
                level: float = 0.95) -> dict[str, Any]:
    """The measured-spread rule for one candidate: the interval of its median time ratio over `rounds`
    (`median_interval`), whether the MAC ratio lies inside it, and the tolerance that amounts to (the interval's
    larger relative distance from the median). All None without rounds."""
    if not rounds or time_ratio is None or not macs_ratio:
        return dict(time_ratio_low=None, time_ratio_high=None, coverage=None, rounds=len(rounds or []),
                    inside=None, spread_tolerance=None)
    low, high, coverage = median_interval(rounds, level)
    return dict(time_ratio_low=low, time_ratio_high=high, coverage=coverage, rounds=len(rounds),
                inside=bool(low <= macs_ratio <= high),
                spread_tolerance=max(high / time_ratio - 1, 1 - low / time_ratio) if time_ratio else None)


def _follows(time_ratio, macs_ratio, tolerance: float | None, test: dict[str, Any]) -> tuple[bool | None, float | None]:
    """(follows, the tolerance it was judged with) under the fixed factor or, tolerance None, the spread rule."""
    if time_ratio is None or not macs_ratio:
        return None, tolerance
    if tolerance is None:
        return test["inside"], test["spread_tolerance"]
    return follows_macs(time_ratio, macs_ratio, tolerance), tolerance


def block_time_vs_macs(rows: Sequence[dict[str, Any]], tolerance: float | None = 0.2,
                       level: float = 0.95) -> list[dict[str, Any]]:
    """One row per stage and timed unit of `analysis.speed.benchmark_blocks` rows: median time [IQR], analytic
    MACs per image, time and MAC ratios to the run's reference, achieved GMAC/s, and whether time follows MACs
    (`tolerance`: a fixed factor, or None for the measured spread; module docstring), with the interval of the
    median time ratio over the rounds where the rows carry them."""
    out = []
    for row in rows:
        batch, reference = row["batch_size"], row["reference"]
        for name in UNITS:
            ms, macs = row.get(f"{name}_ms"), row.get(f"{name}_macs")
            if ms is None or macs is None:
                continue
            time_ratio, macs_ratio = row[f"{name}_time_ratio"], row[f"{name}_macs_ratio"]
            test = spread_test(row.get(f"{name}_time_ratio_rounds"), time_ratio, macs_ratio, level)
            follows, judged_with = _follows(time_ratio, macs_ratio, tolerance, test)
            out.append(dict(
                group=f"stage {row['stage']}", stage=row["stage"], name=name, title=TITLES[name], reference=reference,
                ms=ms, ms_q1=row[f"{name}_ms_q1"], ms_q3=row[f"{name}_ms_q3"], macs=macs,
                gmacs_per_s=macs * batch / (ms / 1000) / 1e9,
                time_ratio=time_ratio, time_ratio_q1=row[f"{name}_time_ratio_q1"],
                time_ratio_q3=row[f"{name}_time_ratio_q3"], macs_ratio=macs_ratio,
                time_per_mac=None if time_ratio is None or not macs_ratio else time_ratio / macs_ratio,
                follows=follows, tolerance=judged_with, **test,
            ))
    return out


def model_time_vs_macs(rows: Sequence[dict[str, Any]], tolerance: float | None = 0.2,
                       level: float = 0.95) -> list[dict[str, Any]]:
    """One row per model of `analysis.speed.benchmark_models` rows (MACs counted): median time per batch
    [IQR], MACs per image, time and MAC ratios to the run's reference model, GMAC/s, and whether time follows
    (as `block_time_vs_macs`)."""
    by_name = {r["model"]: r for r in rows}
    out = []
    for r in rows:
        reference = by_name[r["reference"]]
        if r["macs"] is None or reference["macs"] is None:
            raise ValueError(f"{r['model']}: no MAC count (benchmark the models with count_macs=True)")
        macs_ratio = r["macs"] / reference["macs"]
        test = spread_test(r.get("time_ratio_rounds"), r["time_ratio"], macs_ratio, level)
        follows, judged_with = _follows(r["time_ratio"], macs_ratio, tolerance, test)
        out.append(dict(
            group="models", stage=None, name=r["model"], title=r["model"], reference=r["reference"],
            ms=r["ms_per_batch"], ms_q1=r["ms_per_batch_q1"], ms_q3=r["ms_per_batch_q3"], macs=r["macs"],
            gmacs_per_s=r["macs"] * r["batch_size"] / (r["ms_per_batch"] / 1000) / 1e9,
            time_ratio=r["time_ratio"], time_ratio_q1=1 / r["speed_ratio_q3"], time_ratio_q3=1 / r["speed_ratio_q1"],
            macs_ratio=macs_ratio, time_per_mac=r["time_ratio"] / macs_ratio,
            follows=follows, tolerance=judged_with, **test,
        ))
    return out


def unit_vs_unit(rows: Sequence[dict[str, Any]], a: str, b: str, level: float = 0.95) -> list[dict[str, Any]]:
    """Per stage of `benchmark_blocks` rows where both units were timed: unit `a`'s time over unit `b`'s, round by
    round (both against the same round's reference, so the reference cancels), its median with the interval of
    `median_interval`, and the analytic MAC ratio a / b. E.g. our Swin-pattern pair against timm's, or the SepViT
    block against our own Swin-pattern pair (the same code base on both sides)."""
    out = []
    for row in rows:
        ra, rb = row.get(f"{a}_time_ratio_rounds"), row.get(f"{b}_time_ratio_rounds")
        if not ra or not rb or row.get(f"{a}_macs") is None or row.get(f"{b}_macs") is None:
            continue
        ratios = [x / y for x, y in zip(ra, rb)]
        low, high, coverage = median_interval(ratios, level)
        out.append(dict(stage=row["stage"], a=a, b=b, time_ratio=statistics.median(ratios), low=low, high=high,
                        coverage=coverage, rounds=len(ratios), macs_ratio=row[f"{a}_macs"] / row[f"{b}_macs"]))
    return out


def timing_noise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How noisy a run was: the inter-quartile range of each timed candidate relative to its median
    (rows from `block_time_vs_macs` or `model_time_vs_macs`)."""
    spreads = sorted(((r["ms_q3"] - r["ms_q1"]) / r["ms"], f"{r['group']} {r['name']}") for r in rows)
    if not spreads:
        raise ValueError("no timed rows")
    tolerances = sorted(r["spread_tolerance"] for r in rows
                        if r.get("spread_tolerance") is not None and r["name"] != r.get("reference"))
    return dict(median_relative_iqr=spreads[len(spreads) // 2][0], max_relative_iqr=spreads[-1][0],
                noisiest=spreads[-1][1], candidates=len(spreads),
                median_spread_tolerance=tolerances[len(tolerances) // 2] if tolerances else None,
                max_spread_tolerance=tolerances[-1] if tolerances else None)


def op_profile(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1, top: int = 3,
               macs: int | None = None) -> dict[str, Any]:
    """Where the time of `fn()` goes on the CPU, by torch.profiler: self CPU time of every operator, per call,
    split into operators a MAC count counts (`counted_by_macs`) and the rest; the `top` slowest of the rest.
    `macs`: the MACs one call does (all images), for the rate the MAC operators reach (`mac_gmacs_per_s`).
    Profiled calls carry the profiler's overhead: read shares and rates side by side, not as absolute times."""
    for _ in range(warmup):
        fn()
    with native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            fn()
    per_op: dict[str, float] = {}
    for event in prof.key_averages():
        if event.key.startswith("ProfilerStep"):
            continue
        per_op[event.key] = per_op.get(event.key, 0.0) + event.self_cpu_time_total / 1000 / repeats
    mac_ms = sum(ms for op, ms in per_op.items() if counted_by_macs(op))
    total_ms = sum(per_op.values())
    others = sorted(((op, ms) for op, ms in per_op.items() if not counted_by_macs(op)), key=lambda item: -item[1])
    return dict(total_ms=total_ms, mac_ms=mac_ms, other_ms=total_ms - mac_ms,
                mac_share=mac_ms / total_ms if total_ms else 0.0, top_other=others[:top],
                mac_gmacs_per_s=macs / (mac_ms / 1000) / 1e9 if macs is not None and mac_ms else None)


def profile_stage_units(variant: str = "sepvit_tiny", img_size: int | None = None, batch_size: int = 8, *,
                        units: Sequence[str] | None = None, stages: Sequence[int] | None = None,
                        repeats: int = 3) -> list[dict[str, Any]]:
    """`op_profile` of every unit of `analysis.units.stage_units` (forward, eval, inference mode) at each stage's
    shape of `variant`, as `analysis.speed.benchmark_blocks` times them (seed 0, a random batch), with the
    unit's analytic MACs and the rate its MAC operators reach (GMAC/s, under the profiler)."""
    cfg, _ = build_config(variant, img_size)
    chosen = list(UNITS) if units is None else list(units)
    rows = []
    for shape in block_comparison(variant, img_size, measure=False):
        stage, h, w, dim = shape["stage"], shape["height"], shape["width"], shape["dim"]
        if stages is not None and stage not in stages:
            continue
        torch.manual_seed(0)
        built = stage_units(cfg, stage - 1, h, w)
        x = torch.randn(batch_size, h, w, dim)
        for name in chosen:
            module, macs = built.get(name), shape.get(f"{name}_analytic")
            if module is None:
                continue
            module.eval()

            def forward(module=module, x=x):
                with torch.inference_mode():
                    module(x)

            found = op_profile(forward, repeats=repeats, macs=macs * batch_size)
            rows.append(dict(group=f"stage {stage}", stage=stage, name=name, title=TITLES[name], macs=macs,
                             batch_size=batch_size, **found))
    return rows


def time_sentences(rows: Sequence[dict[str, Any]], profiles: dict[tuple[str, str], dict[str, Any]] | None = None,
                   tolerance: float | None = 0.2) -> list[str]:
    """Does time follow MACs, and where not, why: one sentence per timed candidate other than the reference, from
    `block_time_vs_macs` / `model_time_vs_macs` rows and, where given, `op_profile` results keyed by (group, name)
    (e.g. from `profile_stage_units`).

    Where time does not follow MACs, the profiles split the gap: against the reference's profile scaled by the MAC
    ratio, how many ms more (or fewer) the candidate spends in MAC operators (they run at another rate) and in the
    operators no MAC count sees (norms, softmax, GELU, copies, padding, rolls, adds); the larger part in the
    direction of the gap is named. Where the profiled pass does not show the gap itself (beyond the tolerance, in
    the same direction), no reason is named and the sentence says so. tolerance None: the rows were judged by
    their measured spread (`spread_test`); each sentence gives its interval, and the profiled pass is read with
    the candidate's own tolerance."""
    profiles = profiles or {}
    lines = []
    for r in rows:
        if r["name"] == r["reference"] or r["time_ratio"] is None or not r["macs_ratio"]:
            continue
        label = f"{r['group']}, {r['title']}" if r["group"] != "models" else r["title"]
        head = f"{label}: time {r['time_ratio']:.2f}x the reference's ({r['reference']}), MACs {r['macs_ratio']:.2f}x: "
        own = r.get("tolerance") if tolerance is None else tolerance
        if r["follows"] is None or own is None:
            lines.append(head + "no rounds to judge by.")
            continue
        if tolerance is None:
            spread = (f"the {100 * r['coverage']:.0f} % interval [{r['time_ratio_low']:.2f}, {r['time_ratio_high']:.2f}] "
                      f"of the time ratio over {r['rounds']} rounds")
            if r["follows"]:
                lines.append(head + f"time follows MACs (the MAC ratio lies inside {spread}).")
                continue
            head += f"the MAC ratio lies outside {spread}; "
        elif r["follows"]:
            lines.append(head + f"time follows MACs (within {100 * tolerance:.0f} %).")
            continue
        slower = r["time_per_mac"] > 1
        head += f"{r['time_per_mac']:.2f}x the time its MACs predict ({'slower' if slower else 'faster'})"
        mine, ref = profiles.get((r["group"], r["name"])), profiles.get((r["group"], r["reference"]))
        if not (mine and ref):
            lines.append(head + ".")
            continue
        profiled = mine["total_ms"] / ref["total_ms"] / r["macs_ratio"]
        if follows_macs(profiled, 1.0, own) or (profiled > 1) != slower:
            lines.append(head + f"; the profiled pass does not reproduce the gap (there it takes {profiled:.2f}x the "
                                "time its MACs predict): no reason is named.")
            continue
        mac_part = mine["mac_ms"] - r["macs_ratio"] * ref["mac_ms"]
        other_part = mine["other_ms"] - r["macs_ratio"] * ref["other_ms"]
        rate = (f", at {mine['mac_gmacs_per_s']:.0f} vs {ref['mac_gmacs_per_s']:.0f} GMAC/s"
                if mine.get("mac_gmacs_per_s") and ref.get("mac_gmacs_per_s") else "")
        top = ", ".join(f"{op} {ms:.1f} ms" for op, ms in mine["top_other"])
        sign = 1 if slower else -1
        mostly = "its MAC operators" if sign * mac_part >= sign * other_part else "the operators outside the MAC count"
        lines.append(head + f". Profiled, against the reference scaled by MACs: MAC operators {mac_part:+.1f} ms{rate}; "
                            f"other operators {other_part:+.1f} ms ({100 * (1 - mine['mac_share']):.0f} % of its operator "
                            f"time vs {100 * (1 - ref['mac_share']):.0f} %; largest: {top}): mostly {mostly}.")
    return lines


