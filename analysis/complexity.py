"""`python analysis/complexity.py` (`sepvit-complexity`): MACs of SepViT and its peers three ways (the command line).

    sepvit-complexity --models sepvit_tiny swin_tiny_patch4_window7_224 twins_svt_small --img-size 224
    sepvit-complexity --blocks --variant sepvit_tiny --img-size 224 --format csv

The counting lives in library modules: `analysis.analytic_macs` (the paper's formulas, read from our modules),
`analysis.counters` (fvcore, ptflops), `analysis.model_counts` (whole models by name), `analysis.block_counts`
(a SepViT block against the Swin and Twins pairs), `analysis.published` (published figures explained) and
`analysis.time_vs_macs` (does time follow MACs); the tables as text in `analysis.complexity_tables`. This module
parses, counts through them and prints; code and notebooks call those modules, never this one.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

if __package__ in (None, ""):  # `python analysis/complexity.py`: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sepvit.config import SepViTConfig
from workbench.cli import OneLineParser, UsageError, fail
from workbench.fields import FieldError, parse_assignments

from analysis.block_counts import block_comparison
from analysis.complexity_tables import CONVENTIONS, render
from analysis.model_counts import model_table


def _model_kwargs(items: Sequence[str]) -> dict[str, Any]:
    """--model-kwargs: typed SepViTConfig fields (the workbench's one override parser)."""
    try:
        return parse_assignments(SepViTConfig, items)
    except FieldError as error:
        raise UsageError(f"--model-kwargs {error}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="sepvit-complexity",
        description="MACs of SepViT and its peers three ways: the paper's formulas, fvcore and ptflops.",
        epilog=CONVENTIONS + """

Examples:
  sepvit-complexity --models sepvit_tiny swin_tiny_patch4_window7_224 twins_svt_small --img-size 224
  sepvit-complexity --models sepvit_tiny --model-kwargs block_pattern=swin --format json
  sepvit-complexity --blocks --variant sepvit_tiny --img-size 224 --format csv
Models: the workbench presets (sepvit_lite/tiny/small/base/micro_32/micro_64) and any timm model name;
timm models whose size is fixed at creation (Swin) are created for --img-size.""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--models", nargs="+", metavar="NAME", help="whole models to count")
    mode.add_argument("--blocks", action="store_true",
                      help="per-stage block comparison of --variant: SepViT block vs Swin pair, Twins pair, MSA block")
    parser.add_argument("--variant", default="sepvit_tiny", help="workbench preset for --blocks (default sepvit_tiny)")
    parser.add_argument("--img-size", type=int, default=None, metavar="PX",
                        help="square input side in pixels (default: each model's own size)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    parser.add_argument("--model-kwargs", nargs="*", default=[], metavar="KEY=VALUE",
                        help="SepViTConfig fields for the workbench models (e.g. block_pattern=swin gsa=false)")
    parser.add_argument("--no-ptflops", action="store_true", help="skip the ptflops count (faster)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.img_size is not None and args.img_size < 1:
            raise UsageError(f"--img-size must be a positive number of pixels, got {args.img_size}")
        if args.blocks:
            if args.model_kwargs:
                raise UsageError("--model-kwargs applies to --models only")
            kind, rows = "blocks", block_comparison(args.variant, args.img_size)
        else:
            kwargs = _model_kwargs(args.model_kwargs)
            kind, rows = "models", model_table(args.models, args.img_size, with_ptflops=not args.no_ptflops, **kwargs)
    except UsageError as error:
        return fail(parser.prog, str(error))
    try:
        print(render(rows, kind, args.format), flush=True)
    except BrokenPipeError:  # `... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
