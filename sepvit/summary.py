"""`python -m sepvit [MODEL] [field=value ...]`: what a configuration builds, stage by stage.

Prints the window schedule (windows, groups, global blocks), parameters and the block types, so that the
effect of a switch is visible before anything is trained: `python -m sepvit sepvit_tiny gsa=False`.
"""
from __future__ import annotations

import sys
from typing import Sequence

from workbench.cli import fail
from workbench.fields import parse_assignments

from .config import PRESETS, SepViTConfig


def describe(cfg: SepViTConfig) -> str:
    """The stage-by-stage block specs of `cfg` (what `make_block` builds) and its parameter count."""
    lines = [f"block_pattern={cfg.block_pattern} img_size={cfg.img_size} window_size={cfg.window_size} "
             f"window_token={cfg.window_token} dssa={cfg.dssa} gsa={cfg.gsa} ope={cfg.ope} cpe={cfg.cpe}"]
    lines.append(f"{'stage':<6}{'map':>8}{'dim':>6}{'heads':>6}  blocks (window side -> windows per map)")
    for stage in cfg.stage_specs():
        side, heads = stage.map_size, cfg.num_heads[stage.index]
        blocks = ", ".join(block.label for block in stage.blocks)
        lines.append(f"{stage.index + 1:<6}{f'{side}x{side}':>8}{stage.dim:>6}{heads:>6}  {blocks}")
    model = cfg.build()
    params = sum(p.numel() for p in model.parameters())
    tokens = sum(p.numel() for n, p in model.named_parameters() if ".window_token." in n)
    lines.append(f"params: {params:,} ({params / 1e6:.2f} M), of which window tokens {tokens:,}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip() + f"\n\nmodels: {', '.join(PRESETS)}")
        return 0
    name = args.pop(0) if args and "=" not in args[0] else "sepvit_micro_32"
    try:
        cfg = SepViTConfig.preset(name, **parse_assignments(SepViTConfig, args))
    except ValueError as err:
        return fail("sepvit", str(err))
    print(f"{name}\n{describe(cfg)}")
    return 0
