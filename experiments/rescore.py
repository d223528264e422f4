"""`python experiments/rescore.py CALL --val-size 20000`: a finished call scored again on more validation images.

    python experiments/rescore.py output/sepvit-ablation/<call> --val-size 20000

Every run of a call is scored on the same validation images (1000 for the generated datasets); the draw of those
images adds noise to every seed's difference. This scores each finished run's final weights on N images of the same
generated dataset (the first 1000 are the runs' own, checked against what each run recorded), prints the call's
report on them and every comparison on both sizes side by side with the image noise, and writes
`rescore-val<N>.json` into the call folder (notebook 03 shows it). It trains nothing and changes no MLflow run.
The computation is `experiments.rescoring`; bad input is one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from experiments.data import DataError
from experiments.rescoring import DEFAULT_VAL_SIZE, rescore, write_record
from experiments.runner.calls import Call, CallError, find_call_folder
from experiments.runner.checkpoint import CheckpointError
from workbench.cli import OneLineParser, UsageError, fail, run_command

PROG = "rescore.py"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("call", metavar="CALL",
                   help="the call's folder (as ablate.py printed it), a file inside it, or its parent run id")
    p.add_argument("--val-size", type=int, default=DEFAULT_VAL_SIZE,
                   help="validation images to score every run on (more than the call's own)")
    p.add_argument("--output", default="output", help="the runner's output folder (to find a call by parent run id)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()

    def plan(args, argv):
        if args.val_size < 1:
            raise UsageError(f"--val-size {args.val_size}: give a positive number of images")
        folder = find_call_folder(args.call, args.output, None, named_by="CALL")
        Call.load(folder)  # a damaged or copied plan is refused here, before any scoring
        return folder, args.val_size

    def run(planned) -> int:
        folder, val_size = planned
        try:
            text, record = rescore(folder, val_size)
            print(text)
            path = write_record(folder, record)
        except (CallError, CheckpointError, DataError, UsageError) as exc:
            return fail(PROG, str(exc))
        except OSError as exc:
            return fail(PROG, f"{folder}: the rescore could not be written ({exc.strerror or exc}): free space or "
                              "make the call folder writable, then run it again")
        print(f"\nWritten: {path}")
        return 0

    return run_command(parser, argv, plan, run)


if __name__ == "__main__":
    sys.exit(main())
