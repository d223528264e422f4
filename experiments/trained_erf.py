"""`python experiments/trained_erf.py RUN*/last.pth ...`: the spatial reach of a trained model's blocks, over seeds.

Checkpoints of one configuration are the seeds of one model: their numbers are pooled, with intervals over seeds,
images and queries, and every model's top-1 is printed beside them. `--untrained` measures the same
configurations freshly initialised (one model per `--seeds` value) on the same images, for the before/after
comparison. What is measured and how: `experiments.trained_reach` (checkpoints, images, groups) and
`analysis.reach`; this module parses, measures through `checkpoint_reach` and prints. Code and notebooks call
those modules, never this one.
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

if __package__ in (None, ""):  # `python experiments/trained_erf.py`: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from analysis.erf import DTYPES
from analysis.reach import add_common_flags, check_common_flags, render
from workbench.cli import OneLineParser, fail

from experiments.data import DataError
from experiments.runner.checkpoint import CheckpointError
from experiments.trained_reach import checkpoint_reach


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="trained_erf.py", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", metavar="PATH",
                   help="runner checkpoints (last.pth or best.pth); those of one configuration are its seeds")
    p.add_argument("--untrained", action="store_true",
                   help="the same configurations freshly initialised (one per --seeds value), on the same images")
    p.add_argument("--dataset", default="synthetic", help="the validation images (the runner's datasets)")
    p.add_argument("--data-dir", help="dataset folder (cifar*/imagefolder)")
    p.add_argument("--inputs", type=int, default=64, help="validation images averaged over")
    p.add_argument("--stages", type=int, nargs="+", metavar="S", help="one-based stages (default all)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="S", help="init seeds for --untrained")
    p.add_argument("--with-cpe", action="store_true", help="run CPE between blocks 0 and 1")
    add_common_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.inputs < 1:
        return fail(parser.prog, f"--inputs must be >= 1, got {args.inputs}")
    problem = check_common_flags(args)
    if problem:
        return fail(parser.prog, problem)
    try:
        groups, extra = checkpoint_reach(args.checkpoints, untrained=args.untrained, seeds=args.seeds,
                                         dataset=args.dataset, data_dir=args.data_dir, inputs=args.inputs,
                                         per_phase=args.queries_per_phase or None, identity=not args.no_identity,
                                         metric=args.metric, dtype=DTYPES[args.dtype], with_cpe=args.with_cpe,
                                         stages=args.stages)
    except (CheckpointError, DataError, ValueError, KeyError) as error:
        return fail(parser.prog, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
    print(render(groups, args.format, args.metric, not args.no_identity, extra, resamples=args.resamples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
