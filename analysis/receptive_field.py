"""`python analysis/receptive_field.py`: the spatial reach of the compared units at init, and the verdict.

    python analysis/receptive_field.py --variant sepvit_tiny --seeds 0 1 2
    python experiments/trained_erf.py RUN*/last.pth ...     # trained models' blocks on their data

What is measured and how: `analysis.erf` (the ERF and the numbers of one map), `analysis.reach` (reach with
intervals, "comparable"), `analysis.erf_tables` (centre-query tables and figures). This module parses, measures
through `analysis.reach.unit_reach_table` and prints.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

if __package__ in (None, ""):  # `python analysis/receptive_field.py`: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sepvit.config import PRESETS
from workbench.cli import OneLineParser, fail

from analysis.erf import DTYPES, INITS
from analysis.reach import add_common_flags, check_common_flags, render, unit_reach_table
from analysis.units import UNITS


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="receptive_field.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="sepvit_tiny", help=f"stage shapes of this preset: {', '.join(PRESETS)}")
    p.add_argument("--img-size", type=int, help="input side (default: the preset's)")
    p.add_argument("--units", nargs="+", metavar="UNIT", help=f"units at init (default all): {', '.join(UNITS)}")
    p.add_argument("--stages", type=int, nargs="+", metavar="S", help="one-based stages (default all)")
    p.add_argument("--inputs", type=int, default=8, help="random input maps averaged over")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="S", help="init seeds (one model each)")
    p.add_argument("--input-seed", type=int, default=0, help="seed of the random inputs and the query positions")
    p.add_argument("--init", choices=INITS, default="authors", help="init of the units")
    add_common_flags(p)
    return p



def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = parser.prog
    if args.inputs < 1:
        return fail(prog, f"--inputs must be >= 1, got {args.inputs}")
    if args.img_size is not None and args.img_size < 1:
        return fail(prog, f"--img-size must be >= 1, got {args.img_size}")
    problem = check_common_flags(args)
    if problem:
        return fail(prog, problem)
    try:
        results = unit_reach_table(args.variant, args.img_size, units=args.units, stages=args.stages,
                                   inputs=args.inputs, per_phase=args.queries_per_phase or None, seeds=args.seeds,
                                   input_seed=args.input_seed, init=args.init, identity=not args.no_identity,
                                   metric=args.metric, dtype=DTYPES[args.dtype])
    except (ValueError, KeyError) as error:
        return fail(prog, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
    title = (f"{args.variant} at {args.img_size or PRESETS[args.variant].get('img_size', 224)} px, init={args.init}, "
             f"init seeds {' '.join(map(str, args.seeds))}, {args.inputs} random inputs")
    print(render({title: results}, args.format, args.metric, not args.no_identity, resamples=args.resamples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
