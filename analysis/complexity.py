"""`python analysis/complexity.py` (`sepvit-complexity`): MACs of SepViT and its peers three ways (the command line).

    sepvit-complexity --models sepvit_tiny swin_tiny_patch4_window7_224 twins_svt_small --img-size 224
    sepvit-complexity --blocks --variant sepvit_tiny --img-size 224 --format csv

The counting lives in library modules: `analysis.analytic_macs` (the paper's formulas, read from our modules),
`analysis.counters` (fvcore, ptflops), `analysis.model_counts` (whole models by name), `analysis.block_counts`
(a SepViT block against the Swin and Twins pairs), `analysis.published` (published figures explained) and
`analysis.time_vs_macs` (does time follow MACs). This module parses, counts through them and prints.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from typing import Any, Iterable, Sequence

if __package__ in (None, ""):  # `python analysis/complexity.py`: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sepvit.config import SepViTConfig
from workbench.cli import OneLineParser, UsageError, fail
from workbench.fields import FieldError, parse_assignments

from analysis.block_counts import block_comparison
from analysis.model_counts import model_table
from analysis.units import TITLES, UNITS

# Notebooks 01 and 05 read these as `cx.*` from here (their stored outputs pin their code; when they are next
# executed, they can import the library modules instead and these imports go).
from analysis.analytic_macs import attention_vs_resolution, pwa_crossovers  # noqa: F401
from analysis.block_counts import pattern_comparison, window_group_sweep  # noqa: F401
from analysis.model_counts import measure_model  # noqa: F401
from analysis.published import (COUNT_CONVENTIONS, published_comparison, published_precision,  # noqa: F401
                                published_sentences)
from analysis.time_vs_macs import (block_time_vs_macs, model_time_vs_macs, op_profile,  # noqa: F401
                                   profile_stage_units, time_sentences, timing_noise)

BLOCK_UNITS, BLOCK_UNIT_TITLES = UNITS, TITLES

CONVENTIONS = """\
All counts are MACs (one multiply-add = 1), batch 1, one forward pass. 1 GMAC = 1e9 MACs (= 2e9 FLOPs).
Columns:
  analytic        the paper's formulas, composed from the units' macs() over the code's real geometry
                  (padding, single windows, window tokens): Linear/conv weights + attention matmuls;
                  no LayerNorm, softmax, GELU, bias or residual adds. Empty for timm models.
  analytic+norms  analytic + LayerNorm at fvcore's 5 MACs per element (+ window-token resizing): fvcore's
                  convention; equals fvcore exactly for our models.
  fvcore          fvcore FlopCountAnalysis with a handle for aten::scaled_dot_product_attention
                  (L*S*E + L*S*Ev per batch-head), so fused attention counts like explicit attention.
  fvcore-norms    fvcore minus its LayerNorm (and resizing) MACs: the paper's convention, measured, for
                  every model.
  norms           the LayerNorm MACs inside fvcore's count.
  attn matmuls    the attention matmul MACs inside fvcore's count (Twins' README leaves them out).
  ptflops         ptflops 0.7.5, backend='aten', on a deep copy with explicit attention and the math SDPA
                  kernel: counts bias adds of Linear/conv, no norms.
Published numbers are not counted alike: Swin's README includes attention matmuls, Twins' leaves them out."""



# ================================================================================== output
def _gmacs(value: int | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value / 1e9:.{digits}f}"


def _mmacs(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.1f}"


def format_model_table(rows: list[dict[str, Any]]) -> str:
    header = ["model", "px", "params (M)", "analytic", "analytic+norms", "fvcore", "norms", "fvcore-norms",
              "attn matmuls", "ptflops"]
    body = [[r["model"], str(r["img_size"]), f"{r['params'] / 1e6:.2f}", _gmacs(r["macs_analytic"]),
             _gmacs(r["macs_analytic_norms"]), _gmacs(r["macs_fvcore"]), _gmacs(r["fvcore_norms"]),
             _gmacs(r["macs_fvcore_no_norms"]), _gmacs(r["fvcore_attention_matmuls"]), _gmacs(r["macs_ptflops"])]
            for r in rows]
    notes = [f"note: {r['model']}: {r['note']}" for r in rows if r.get("note")]
    title = "GMACs (multiply-add = 1, 1e9), batch 1; counters: analytic (paper formulas), fvcore (+SDPA handle), ptflops (aten)"
    return "\n".join([title, _grid(header, body), *notes])


def format_block_table(rows: list[dict[str, Any]]) -> str:
    header = ["stage", "map", "C", "unit", "fvcore", "analytic", "analytic+norms", "/ Swin pair"]
    body = []
    for r in rows:
        for name in BLOCK_UNITS:
            if r[f"{name}_analytic"] is None:
                continue
            ratio = r[f"{name}_analytic"] / r["swin_pair_analytic"]
            body.append([str(r["stage"]), f"{r['height']}x{r['width']}", str(r["dim"]), BLOCK_UNIT_TITLES[name],
                         _mmacs(r[name]), _mmacs(r[f"{name}_analytic"]), _mmacs(r[f"{name}_analytic_norms"]),
                         f"{ratio:.3f}"])
    title = ("MMACs (multiply-add = 1, 1e6) of one block or pair, MLP included, batch 1; fvcore (+SDPA handle) "
             "counts LayerNorm, analytic (paper formulas) does not; ratio = analytic / analytic Swin pair")
    ratios = ["SepViT block / Swin pair (analytic | attention only | fvcore): "
              + "; ".join(f"stage {r['stage']}: {r['ratio_to_swin_pair_analytic']:.3f} | "
                          f"{r['ratio_to_swin_pair_attention_only']:.3f} | "
                          + (f"{r['ratio_to_swin_pair_fvcore']:.3f}" if r["ratio_to_swin_pair_fvcore"] else "-")
                          for r in rows)]
    notes = sorted({f"note: {r['note']}" for r in rows if r.get("note")})
    return "\n".join([title, _grid(header, body, left=(0, 1, 3)), *ratios, *notes])


def _grid(header: list[str], body: list[list[str]], left: Iterable[int] = (0,)) -> str:
    """Plain-text table: columns in `left` left-aligned (names), the others right-aligned (numbers)."""
    left = set(left)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in body)])


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().rstrip("\n")


# ================================================================================== command line
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
            rows = block_comparison(args.variant, args.img_size)
            text = format_block_table(rows)
        else:
            kwargs = _model_kwargs(args.model_kwargs)
            rows = model_table(args.models, args.img_size, with_ptflops=not args.no_ptflops, **kwargs)
            text = format_model_table(rows)
    except UsageError as error:
        return fail(parser.prog, str(error))
    if args.format == "json":
        text = json.dumps(rows, indent=1)
    elif args.format == "csv":
        text = to_csv(rows)
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
