"""`python -m experiments.zoo`: which zoo models a lookup would train (exit 1 when some are missing), or --train them.

    python -m experiments.zoo --lookup '{"sepvit": [0, 1, 2]}'       # a notebook's ZOO_LOOKUP: what is missing
    python -m experiments.zoo sepvit swin --seeds 0 1 2 --train      # train what is missing, now

The library is `experiments.zoo` (this package's __init__); `python -m workbench.notebooks --check` runs this
command to learn whether a notebook's lookup would retrain.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from workbench.cli import OneLineParser, fail

from experiments.zoo import PROG, ZOO, Lookup, default_output, lookup_plan, trained_seeds


def describe_missing(pairs: Sequence[tuple[str, int]]) -> str:
    """'sepvit seeds 1, 2; swin seed 0'."""
    by_name: dict[str, list[int]] = {}
    for name, seed in pairs:
        by_name.setdefault(name, []).append(seed)
    return "; ".join(f"{name} seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
                     for name, seeds in by_name.items())


def build_parser():
    p = OneLineParser(prog=PROG, description="Which zoo models a lookup would train (exit 1 when some are missing), "
                                             "or --train them.")
    p.add_argument("names", nargs="*", metavar="NAME", help=f"zoo models: {', '.join(map(repr, ZOO))}")
    p.add_argument("--seeds", type=int, nargs="+", metavar="S", help="training seeds of every NAME (default 0)")
    p.add_argument("--lookup", metavar="JSON", help='name -> seeds, e.g. \'{"sepvit": [0, 1, 2]}\' (a ZOO_LOOKUP)')
    p.add_argument("--output", help="the store's folder (default: the repository's output/)")
    p.add_argument("--smoke", action="store_true", help="the smoke budget (CI's tiny models)")
    p.add_argument("--train", action="store_true", help="train the missing models now")
    p.add_argument("--parallel", default="auto", metavar="N|auto", help="runs trained side by side (--train)")
    return p


def _plan_from_args(args) -> dict[str, tuple[int, ...]]:
    if bool(args.lookup) == bool(args.names):
        raise ValueError("give zoo model names or --lookup JSON (one of them)")
    if not args.lookup:
        return lookup_plan(args.names, args.seeds)
    if args.seeds:
        raise ValueError("--seeds applies to NAMEs: with --lookup, give each name's seeds in the JSON")
    try:
        plan = json.loads(args.lookup)
    except json.JSONDecodeError as error:
        raise ValueError(f"--lookup is not JSON ({error.msg}): give an object such as '{{\"sepvit\": [0, 1]}}'") from None
    if not isinstance(plan, dict) or not all(isinstance(v, list) for v in plan.values()):
        raise ValueError("--lookup must be a JSON object of name -> list of seeds, e.g. '{\"sepvit\": [0, 1]}'")
    return lookup_plan(plan)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = _plan_from_args(args)
        output = Path(args.output) if args.output else default_output(args.smoke)
        if args.parallel != "auto" and not (args.parallel.isdigit() and int(args.parallel) >= 1):
            raise ValueError(f"--parallel must be a positive integer or auto, got {args.parallel!r}")
        parallel = args.parallel if args.parallel == "auto" else int(args.parallel)
        if args.train:
            for name, runs in trained_seeds(plan, output=output, smoke=args.smoke, parallel=parallel).items():
                for m in runs:
                    print(f"{name} seed {m.seed}: top-1 {m.top1:.2f} %, run {m.run_id} "
                          f"({'trained now' if m.trained_here else 'found'})")
            return 0
        absent = Lookup(plan, output, args.smoke).missing()
    except ValueError as error:  # UsageError and DataError are ValueErrors
        return fail(PROG, str(error))
    total = sum(len(seeds) for seeds in plan.values())
    budget = "smoke" if args.smoke else "default"
    if not absent:
        print(f"all {total} zoo model(s) of the lookup are in {output} (the {budget} budget)")
        return 0
    print(f"would train {len(absent)} of {total} zoo model(s) at the {budget} budget, not in {output}: "
          f"{describe_missing(absent)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
