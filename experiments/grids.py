"""The runner's named switches and grids, in one place.

`SWITCHES` maps each command-line ablation switch to the `SepViTConfig` fields it changes. A grid is a list of
(label, changes) applied to a base configuration (the chosen `--model` and `--model-kwargs`); the reference is
the base itself (every switch at its default = the authors' SepViT).
"""
from __future__ import annotations

from typing import Any

from sepvit.config import SepViTConfig

REFERENCE = "reference"

# switch label -> SepViTConfig changes (labels match the CLI flags without the dashes)
SWITCHES: dict[str, dict[str, Any]] = {
    "no-dssa": {"dssa": False},
    "no-gsa": {"gsa": False},
    "no-lwt": {"window_token": "zero"},
    "avgpool-token": {"window_token": "avgpool"},
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

# The full model and each switch turned off alone.
ONE_OFF: list[tuple[str, dict[str, Any]]] = [(REFERENCE, {})] + [(name, dict(c)) for name, c in SWITCHES.items()]

GRIDS: dict[str, list[tuple[str, dict[str, Any]]]] = {"paper": PAPER_CHAIN, "one-off": ONE_OFF}


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
