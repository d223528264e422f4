"""`python experiments/rescore.py CALL --val-size 20000`: a finished call scored again on more validation images.

    python experiments/rescore.py output/sepvit-ablation/<call> --val-size 20000

Every run of a call is scored on the same validation images (1000 for the generated datasets), so their draw is one
error in every mean difference of the call that no interval over seeds contains. This scores each finished run's
final weights on N images of the same generated dataset (the first 1000 are the runs' own, checked against what
each run recorded), prints the call's report on them and every comparison on both sizes side by side, and writes
`rescore-val<N>.json` into the call folder (notebook 03 shows it). It trains nothing and changes no MLflow run.
The computation is `experiments.rescoring`; bad input is one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from experiments.data import DataError
from experiments.rescoring import DEFAULT_VAL_SIZE, record_path, rescore
from experiments.runner.calls import CALL_FILE, Call, CallError, write_json
from experiments.runner.checkpoint import CheckpointError
from workbench.cli import OneLineParser, UsageError, run_command

PROG = "rescore.py"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("call", metavar="CALL", help="the call's folder (as ablate.py printed it) or a file inside it")
    p.add_argument("--val-size", type=int, default=DEFAULT_VAL_SIZE,
                   help="validation images to score every run on (more than the call's own)")
    return p


def call_folder(path: Path) -> Path:
    """The call folder that `path` is or lies in (a run folder, a last.pth)."""
    for candidate in (path, *path.parents[:3]):
        if (candidate / CALL_FILE).is_file():
            return candidate
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder: pass the call folder that ablate.py printed")
    raise UsageError(f"{path} is not inside a runner call folder (no {CALL_FILE} in it or above it): pass the call "
                     "folder that ablate.py printed")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()

    def plan(args, argv):
        if args.val_size < 1:
            raise UsageError(f"--val-size {args.val_size}: give a positive number of images")
        folder = call_folder(Path(args.call).expanduser())
        Call.load(folder)  # a damaged or copied plan is refused here, before any scoring
        return folder, args.val_size

    def run(planned) -> int:
        folder, val_size = planned
        try:
            text, record = rescore(folder, val_size)
        except (CallError, CheckpointError, DataError, UsageError) as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
        print(text)
        path = record_path(folder, val_size)
        write_json(path, record)
        print(f"\nWritten: {path}")
        return 0

    return run_command(parser, argv, plan, run)


if __name__ == "__main__":
    sys.exit(main())
