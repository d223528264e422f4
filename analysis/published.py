"""Published MAC counts beside ours: which counting convention each published figure is (reference data only);
published ImageNet-1k top-1 and the paper's training setting, for the notebooks' paper-vs-here tables.

Params in M, MACs in G (multiply-add = 1, 1e9) at 224x224, as their sources give them. A figure "matches" a
convention when our count in that convention rounds to it at the precision it is published with.
"""
from __future__ import annotations

import decimal
from typing import Any, Sequence

# Published numbers at 224x224 (params in M, MACs in G) as their sources give them: the SepViT reference table
# (official code + fvcore, explicit attention), Swin's README (attention matmuls included) and Twins' README
# (attention matmuls left out). Reference data for comparison only, never used as a result.
PUBLISHED = {
    "sepvit_lite": dict(params_m=3.66, gmacs=0.57, source="SepViT paper / official code"),
    "sepvit_tiny": dict(params_m=31.18, gmacs=4.53, source="SepViT paper / official code"),
    "sepvit_small": dict(params_m=46.57, gmacs=7.48, source="SepViT paper / official code"),
    "sepvit_base": dict(params_m=82.38, gmacs=13.08, source="SepViT paper / official code"),
    "swin_tiny_patch4_window7_224": dict(params_m=28.3, gmacs=4.5, source="Swin README (with attention matmuls)"),
    "swin_small_patch4_window7_224": dict(params_m=49.6, gmacs=8.7, source="Swin README (with attention matmuls)"),
    "swin_base_patch4_window7_224": dict(params_m=87.8, gmacs=15.4, source="Swin README (with attention matmuls)"),
    "twins_svt_small": dict(params_m=24.0, gmacs=2.8, source="Twins README (attention matmuls left out)"),
    "twins_svt_base": dict(params_m=56.0, gmacs=8.3, source="Twins README (attention matmuls left out)"),
    "twins_svt_large": dict(params_m=99.2, gmacs=14.8, source="Twins README (attention matmuls left out)"),
}
# The same models as other papers quote them (params_m None: not recorded here). A reader meets both numbers.
PUBLISHED_ELSEWHERE = [
    dict(model="twins_svt_small", params_m=None, gmacs=2.9, source="SepViT paper's comparison table"),
]

# Published ImageNet-1k top-1 (percent, 224 px) of whole models, as the SepViT paper gives them
# (../shared/notes/sepvit-reference.md: the variants table and Figure 1, read off a plot, hence approximate).
PUBLISHED_TOP1 = {
    "sepvit_tiny": dict(top1=82.7, source="SepViT paper v4, variants table"),
    "swin_tiny_patch4_window7_224": dict(top1=81.3, source="SepViT paper, Figure 1 (approximate)"),
    "twins_svt_small": dict(top1=81.7, source="SepViT paper, Figure 1 (approximate)"),
}
# The setting the paper's top-1 figures come from (the official ImageNet-1k recipe).
PAPER_SETTING = dict(model="SepViT-T (31.2 M parameters)", dataset="ImageNet-1k", classes=1000, img_size=224,
                     epochs=300)

# How a whole-model count can be read off one measured row of `model_table` (GMACs = MACs / 1e9). Consecutive
# conventions differ by one term: norms (fvcore's LayerNorm), then the attention matmuls (q k^T and attn v);
# ptflops replaces the norms by bias adds.
COUNT_CONVENTIONS = {
    "fvcore": "fvcore (weights + attention matmuls + norms)",
    "paper": "paper convention (weights + attention matmuls)",
    "no_attention_matmuls": "without attention matmuls (weights only)",
    "ptflops": "ptflops (weights + bias adds)",
}


def convention_counts(row: dict[str, Any]) -> dict[str, int | None]:
    """The MACs of one `measure_model` row in every convention of COUNT_CONVENTIONS (None: not counted)."""
    no_norms = row["macs_fvcore_no_norms"]
    return dict(fvcore=row["macs_fvcore"], paper=no_norms,
                no_attention_matmuls=no_norms - row["fvcore_attention_matmuls"], ptflops=row.get("macs_ptflops"))


def published_precision(value: float) -> int:
    """Decimals a published figure is given to (2.9 -> 1, 4.53 -> 2, 15 -> 0)."""
    return max(0, -decimal.Decimal(str(value)).normalize().as_tuple().exponent)


def rounds_to(count_g: float, published: float) -> bool:
    """Whether a count (in G) rounds to the published figure at the precision it is published with."""
    half_step = 0.5 * 10 ** -published_precision(published)
    return abs(count_g - published) <= half_step + 1e-12


def published_comparison(rows: Sequence[dict[str, Any]], own: dict[str, dict[str, Any]] | None = None,
                         elsewhere: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every published figure of the measured models (`rows` from `model_table`) beside the counts in each
    convention: which conventions round to it (`matches`), which is closest, and the two terms that separate
    the conventions (norms, attention matmuls), in GMACs. Defaults: PUBLISHED and PUBLISHED_ELSEWHERE."""
    own = PUBLISHED if own is None else own
    elsewhere = PUBLISHED_ELSEWHERE if elsewhere is None else elsewhere
    out = []
    for row in rows:
        name = row["model"]
        sources = ([dict(model=name, **own[name])] if name in own else []) + [e for e in elsewhere if e["model"] == name]
        counts = {key: (None if value is None else value / 1e9) for key, value in convention_counts(row).items()}
        for source in sources:
            published = source["gmacs"]
            known = {key: value for key, value in counts.items() if value is not None}
            out.append(dict(
                model=name, source=source["source"], published_gmacs=published, published_params_m=source["params_m"],
                params_m=row["params"] / 1e6, **{f"{key}_gmacs": value for key, value in counts.items()},
                matches=[key for key, value in known.items() if rounds_to(value, published)],
                closest=min(known, key=lambda key: abs(known[key] - published)),
                norms_gmacs=row["fvcore_norms"] / 1e9, attention_matmuls_gmacs=row["fvcore_attention_matmuls"] / 1e9,
            ))
    return out


def published_sentences(comparison: Sequence[dict[str, Any]]) -> list[str]:
    """One sentence per published figure, from the numbers of `published_comparison`: which convention it
    matches and how large the terms that separate the conventions are."""
    lines = []
    for c in comparison:
        counts = ", ".join(f"{key} {c[f'{key}_gmacs']:.3f}" for key in COUNT_CONVENTIONS if c[f"{key}_gmacs"] is not None)
        if c["matches"]:
            verdict = "is what " + ", ".join(COUNT_CONVENTIONS[k] for k in c["matches"]) + " round to"
        else:
            verdict = f"matches no convention at its precision (closest: {COUNT_CONVENTIONS[c['closest']]})"
        lines.append(f"{c['model']}: {c['published_gmacs']:g} G ({c['source']}) {verdict}; counted here (G): {counts}; "
                     f"the attention matmuls are {c['attention_matmuls_gmacs']:.3f} G, the norms {c['norms_gmacs']:.3f} G.")
    return lines


