"""Paper vs here: each comparison the paper reports (`grids.PAPER_STEPS`), measured on this call's runs.

For every step whose two configurations the call trained: our top-1 difference with its paired and Welch
intervals and the verdict of `stats.VERDICT_RULES`, beside the paper's ImageNet-1k difference, and whether the
direction agrees. A direction is "ours" only when the verdict resolved it (separated, paired or welch); otherwise the
row says "not resolved" rather than reading a sign off noise.
"""
from __future__ import annotations

import math

import pandas as pd

from .grids import PAPER_STEPS
from .stats import compare, verdict_text

RESOLVED = ("separated", "paired", "welch")


def paper_comparison(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per paper step present in `runs` (report.results_frame / load_runs columns)."""
    done = runs[runs["status"] == "FINISHED"]
    rows = []
    for step in PAPER_STEPS:
        a, b = done[done["config"] == step.label], done[done["config"] == step.against]
        if a.empty or b.empty:
            continue
        d = compare(a["top1"].astype(float).tolist(), b["top1"].astype(float).tolist(),
                    seeds_a=a["seed"].tolist(), seeds_b=b["seed"].tolist())
        if d.verdict in RESOLVED:
            here = 1 if d.diff > 0 else -1
            agrees = "yes" if here == step.direction else "no"
        else:
            agrees = {"equivalent": f"equivalent here (no difference > {d.bound:.1f})",
                      "unresolved": f"not resolved (±{d.bound:.1f})"}.get(d.verdict, "not resolved")
        paired = d.paired or (math.nan, math.nan, math.nan)
        rows.append({"comparison": f"{step.label} vs {step.against}", "diff": d.diff, "paired_low": paired[1],
                     "paired_high": paired[2], "welch_low": d.low, "welch_high": d.high, "verdict": d.verdict,
                     "verdict_text": verdict_text(d.verdict, d.bound, d.seeds_needed),
                     "seeds": min(len(a), len(b)), "paper_delta": step.paper_delta,
                     "paper_direction": "+" if step.direction > 0 else "-", "agrees": agrees,
                     "paper_source": step.source})
    return pd.DataFrame(rows)


def format_paper_comparison(table: pd.DataFrame, markdown: bool = False) -> str:
    from .report import _table

    header = ["comparison (a vs b)", "Δ top-1 here", "paired 95% CI", "verdict", "paper Δ (ImageNet)", "direction agrees"]
    lines = []
    for _, r in table.iterrows():
        paired = "n/a" if math.isnan(r["paired_low"]) else f"[{r['paired_low']:+.2f}, {r['paired_high']:+.2f}]"
        paper = f"{r['paper_delta']:+.1f}" if r["paper_delta"] is not None and not pd.isna(r["paper_delta"]) \
            else f"{r['paper_direction']} (figure lost)"
        lines.append([r["comparison"], f"{r['diff']:+.2f}", paired, r["verdict_text"], paper, r["agrees"]])
    return _table(header, lines, markdown)
