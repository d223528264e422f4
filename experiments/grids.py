"""The runner's named switches and grids, in one place.

`SWITCHES` maps each command-line ablation switch to the `SepViTConfig` fields it changes. A grid is a list of
(label, changes) applied to a base configuration (the chosen `--model` and `--model-kwargs`); the reference is
the base itself (every switch at its default = the authors' SepViT).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sepvit.config import SepViTConfig

REFERENCE = "reference"

# switch label -> SepViTConfig changes (labels match the CLI flags without the dashes)
SWITCHES: dict[str, dict[str, Any]] = {
    "no-dssa": {"dssa": False},
    "no-gsa": {"gsa": False},
    "no-lwt": {"window_token": "zero"},
    "avgpool-token": {"window_token": "avgpool"},
    "dwconv-token": {"window_token": "dwconv"},
    "no-ope": {"ope": False},
    "no-cpe": {"cpe": False},
    "paper-equations": {"inner_shortcuts": False},
}

# The paper's component chain (Swin-T + CPE -> SepViT), each step adding one component.
PAPER_CHAIN: list[tuple[str, dict[str, Any]]] = [
    ("swin+cpe baseline", {"block_pattern": "swin", "gsa": False, "ope": False}),
    ("dssa (zero tokens, no ope, no gsa)", {"window_token": "zero", "ope": False, "gsa": False}),
    ("+ ope", {"window_token": "zero", "gsa": False}),
    ("+ gsa", {"window_token": "zero"}),
    ("+ learnable window tokens", {}),  # = the reference
]

# The paper's window-summary comparison: the learnable token against average pooling and a depthwise convolution
# (kernel = stride = window), and fixed zeros.
WINDOW_SUMMARY: list[tuple[str, dict[str, Any]]] = [
    ("avgpool-token", {"window_token": "avgpool"}),
    ("dwconv-token", {"window_token": "dwconv"}),
]


@dataclass(frozen=True)
class PaperStep:
    """One comparison the paper reports: `label` against `against`, the paper's ImageNet-1k top-1 difference (points;
    None where only its direction was recovered) and the direction it found (+1: `label` better)."""

    label: str
    against: str
    paper_delta: float | None
    direction: int
    source: str


# ../shared/notes/sepvit-reference.md, "Ablation chain" (SepViT-T, ImageNet-1k) and the window-token section.
PAPER_STEPS: list[PaperStep] = [
    PaperStep("dssa (zero tokens, no ope, no gsa)", "swin+cpe baseline", 0.5, +1, "ablation chain: DSSA +0.5"),
    PaperStep("+ ope", "dssa (zero tokens, no ope, no gsa)", None, +1, "ablation chain: + OPE reaches 82.0"),
    PaperStep("+ gsa", "+ ope", 0.3, +1, "ablation chain: 82.0 -> 82.3"),
    PaperStep("+ learnable window tokens", "+ gsa", 0.2, +1, "ablation chain: 82.3 -> 82.5"),
    PaperStep("+ learnable window tokens", "avgpool-token", None, +1, "window summary: the token won (figures lost)"),
    PaperStep("+ learnable window tokens", "dwconv-token", None, +1, "window summary: the token won (figures lost)"),
]

# SepViT's three sources of absolute position (OPE's and CPE's zero padding, the learnable window tokens), each
# removed alone, the tokens kept alone, and none: the grid of the position probe (`--dataset top-half`,
# experiments.synthetic), on which a model without any source cannot tell the image's halves apart. "tokens only"
# against "no position source" is the window-summary question: the learnable token is the one kind that carries place.
POSITION_SOURCES: list[tuple[str, dict[str, Any]]] = [
    (REFERENCE, {}),
    ("no-ope", {"ope": False}),
    ("no-cpe", {"cpe": False}),
    ("no-lwt", {"window_token": "zero"}),
    ("tokens only (no-ope, no-cpe)", {"ope": False, "cpe": False}),
    ("no position source", {"ope": False, "cpe": False, "window_token": "zero"}),
]

# SepViT's block against the peers' block patterns inside the same backbone (stem, stages, widths, CPE, head): the
# value switch `--block-pattern`; labels as `label_for` names each pattern's own `--compare` call.
BLOCK_PATTERNS: list[tuple[str, dict[str, Any]]] = [(REFERENCE, {})] + [
    (f"block_pattern={pattern}", {"block_pattern": pattern}) for pattern in ("swin", "twins", "msa")]

# The full model and each switch turned off alone.
ONE_OFF: list[tuple[str, dict[str, Any]]] = [(REFERENCE, {})] + [(name, dict(c)) for name, c in SWITCHES.items()]

GRIDS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "paper": PAPER_CHAIN + WINDOW_SUMMARY,  # both of the paper's tables, side by side (PAPER_STEPS)
    "paper-chain": PAPER_CHAIN,
    "one-off": ONE_OFF,
    "position": POSITION_SOURCES,
    "patterns": BLOCK_PATTERNS,
}


def grid(name: str, base: SepViTConfig) -> list[tuple[str, SepViTConfig]]:
    """(label, config) for each entry of a grid, built on `base` (raises ValueError when one does not fit)."""
    if name not in GRIDS:
        raise ValueError(f"unknown grid {name!r}: use one of {', '.join(GRIDS)}")
    out = []
    for label, changes in GRIDS[name]:
        try:
            out.append((label, base.replace(**changes)))
        except ValueError as exc:
            raise ValueError(f"grid {name!r}, configuration {label!r}: {exc}") from None
    return out


def label_for(cfg: SepViTConfig, base: SepViTConfig) -> str:
    """A short name for a configuration: its changes against the base, or "reference"."""
    changes = cfg.diff(base)
    for name, switch in SWITCHES.items():
        if changes == switch:
            return name
    return ", ".join(f"{k}={v}" for k, v in changes.items()) or REFERENCE
