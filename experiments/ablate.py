"""`python experiments/ablate.py --no-gsa`: train SepViT with components switched off, compare, log to MLflow.

    python experiments/ablate.py --no-dssa --compare --seeds 3          # local-only vs full model, 3 seeds each
    python experiments/ablate.py --grid paper --seeds 2                  # the paper's component chain
    python experiments/ablate.py --grid one-off --epochs 5               # each switch off alone
    torchrun --nproc-per-node 2 experiments/ablate.py --no-gsa          # DistributedDataParallel (gloo on CPU)
    python experiments/ablate.py --resume output/<experiment>/<call>     # finish an interrupted call
    python experiments/ablate.py --resume output/<experiment>/<call> --seeds 6   # add seeds 3-5 to a 3-seed call

Switches map one-to-one onto `SepViTConfig` fields; the training flags are generated from `TrainConfig`'s fields
(timm train.py names). A call plans every (configuration, seed) run in `<call>/call.json` before training, and
`--resume` finishes what is unfinished (see experiments/runner/calls.py). Every run of a call is a child of one
MLflow parent run. Bad input is refused before any MLflow run is opened: one line on stderr, exit code 2.

This module is the command line of `experiments.runner` (parse, plan, run, print); the runner is its Python API.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Sequence

from sepvit.config import BLOCK_PATTERNS, PRESETS, WINDOW_TOKENS, SepViTConfig
from workbench.cli import (OneLineParser, UsageError, add_config_flag, add_dataclass_flags, add_model_flags,
                           add_tracking_flags, dataclass_from_args, given_flags, run_command)
from workbench.tracking import mask_secrets

from experiments import runner
from experiments.base_model import DEFAULT_MODEL, base_config
from experiments.calibration import NULL_LABEL, null_change
from experiments.grids import GRIDS, REFERENCE, grid, label_for
from experiments.runner.lifecycle import EXIT_INTERRUPTED, EXIT_RUN_FAILED, PROG  # noqa: F401  (tests read them)
from experiments.runner.plan import parallel_count
from experiments.train_config import TrainConfig

# Flags that only locate the call on --resume.
RESUME_LOCATORS = ("resume", "output", "tracking_uri", "parallel")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_flag(p)
    m = p.add_argument_group("model switches (map onto SepViTConfig; defaults = the authors' SepViT)")
    add_model_flags(m, PRESETS, DEFAULT_MODEL, "gsa=false embed_dims=16,32,64,128")
    m.add_argument("--no-lwt", action="store_true", help="fixed zero window tokens (window_token='zero')")
    m.add_argument("--window-token", choices=WINDOW_TOKENS, help="window summary token")
    m.add_argument("--no-dssa", action="store_true",
                   help="local-only model: window attention in every block, no PWA, no GSA groups (dssa=False)")
    m.add_argument("--no-gsa", action="store_true", help="no grouped blocks (gsa=False)")
    m.add_argument("--group-size", type=int, nargs="+", metavar="N", help="windows per group side (one or per stage)")
    m.add_argument("--block-pattern", choices=BLOCK_PATTERNS, help="block type")
    m.add_argument("--no-ope", action="store_true", help="non-overlapping patch embedding (ope=False)")
    m.add_argument("--no-cpe", action="store_true", help="no conditional position encoding (cpe=False)")
    m.add_argument("--paper-equations", action="store_true", help="no inner DSSA shortcuts (inner_shortcuts=False)")
    m.add_argument("--window-size", type=int, help="window side in tokens")
    t = p.add_argument_group("training (TrainConfig fields, timm train.py names)")
    add_dataclass_flags(t, TrainConfig)
    r = p.add_argument_group("runs and tracking")
    r.add_argument("--seeds", type=int, default=1, help="seeds per configuration (seed, seed+1, ...); with --resume: "
                                                         "add seeds to the call up to this many per configuration")
    r.add_argument("--compare", action="store_true", help="also train the reference with the same seeds and data")
    r.add_argument("--grid", choices=list(GRIDS), help="a predefined set of configurations")
    add_tracking_flags(r, runner.DEFAULT_EXPERIMENT)
    r.add_argument("--calibrate", action="store_true",
                   help="measure the instrument: the configuration (default the reference) and a null change "
                        "(fused_attn flipped: same function, another kernel) at --seeds seeds; reports the seed sd, "
                        "the null change's paired difference and the minimum detectable difference for 2-10 seeds")
    r.add_argument("--parallel", type=parallel_count, default="auto", metavar="N|auto",
                   help="train N runs of the call at once, in N processes sharing this process's CPU threads (a "
                        "run's numbers equal a sequential run with that many threads). auto (default): one process "
                        "per thread, as many as there are runs to train, one thread each (sequential on a GPU, "
                        "under torchrun, or with one thread)")
    r.add_argument("--resume", metavar="CALL",
                   help="finish an interrupted call, or extend one (--epochs, --seeds): its folder, a last.pth "
                        "inside it, or its parent run id")
    return p


# ---------------------------------------------------------------------------------- flags -> objects
def switch_changes(args) -> dict:
    """The SepViTConfig fields set by the ablation switches (refusing contradictory combinations)."""
    changes: dict = {}
    if args.no_lwt:
        if args.window_token not in (None, "zero"):
            raise UsageError(f"--no-lwt means --window-token zero, but --window-token {args.window_token} was given: "
                             "use one of them")
        changes["window_token"] = "zero"
    elif args.window_token:
        changes["window_token"] = args.window_token
    if args.no_dssa:
        if "window_token" in changes:
            raise UsageError("--no-dssa removes window tokens, so --no-lwt/--window-token contradict it: drop one")
        if args.group_size:
            raise UsageError("--group-size has no effect with --no-dssa (GSA groups are DSSA blocks): drop one of them")
        changes["dssa"] = False
    if args.no_gsa:
        if args.group_size:
            raise UsageError("--group-size has no effect with --no-gsa: drop one of them")
        changes["gsa"] = False
    if args.group_size:
        changes["group_size"] = args.group_size[0] if len(args.group_size) == 1 else tuple(args.group_size)
    for flag, name, value in (("block_pattern", "block_pattern", args.block_pattern), ("no_ope", "ope", False),
                              ("no_cpe", "cpe", False), ("paper_equations", "inner_shortcuts", False),
                              ("window_size", "window_size", args.window_size)):
        given = getattr(args, flag)
        if given is not None and given is not False:  # `not in (None, False)` would read --window-size 0 as unset
            changes[name] = value
    return changes


def plan_configs(args, base: SepViTConfig) -> list[tuple[str, SepViTConfig]]:
    """(label, config) of every configuration this call trains; the reference is labelled "reference"."""
    changes = switch_changes(args)
    if args.calibrate:
        if args.grid or args.compare:
            raise UsageError("--calibrate trains its own pair (the configuration and its null change): drop "
                             f"{'--grid' if args.grid else '--compare'}")
        cfg = base.replace(**changes)
        return [(REFERENCE if not changes else label_for(cfg, base), cfg), (NULL_LABEL, null_change(cfg))]
    if args.grid:
        if changes:
            raise UsageError(f"--grid {args.grid} trains its own configurations: drop the switches "
                             f"({', '.join(changes)}) or put shared settings in --model-kwargs")
        return grid(args.grid, base)
    cfg = base.replace(**changes)
    configs = [(label_for(cfg, base), cfg)]
    if args.compare and changes:
        configs.append((REFERENCE, base))
    return configs


def command_line(argv: Sequence[str]) -> str:
    """The call's command as call.json and the parent's `command` tag keep it: passwords in URLs masked."""
    return " ".join([PROG, *(mask_secrets(a) for a in argv)])


def train_config(args) -> TrainConfig:
    """The TrainConfig of the command line (its flags are the dataclass's fields)."""
    return dataclass_from_args(TrainConfig, args)


def plan_from_args(args, argv: Sequence[str]) -> runner.Plan:
    """The call the command line asks for, checked (runner.plan_call): a bad request raises a one-line error."""
    base = base_config(args)
    configs = plan_configs(args, base)
    return runner.plan_call(dict(configs), train_config(args), seeds=args.seeds, base=base,
                            reference=configs[0][0] if args.calibrate else None, experiment=args.experiment,
                            tracking_uri=args.tracking_uri, parallel=args.parallel, calibrate=args.calibrate,
                            name="calibrate" if args.calibrate else args.grid, command=command_line(argv))


def resume_from_args(args, given: set[str]) -> runner.Resumption:
    """--resume CALL: the call, checked, with the flags given beside it as the changes asked for (runner
    .plan_resume refuses those a resume cannot make, naming the flag); --seeds N adds seeds to it."""
    folder = runner.find_call_folder(args.resume, args.output, args.tracking_uri)
    asked = {name: getattr(args, name) for name in given - set(RESUME_LOCATORS) - {"seeds"}}
    return runner.plan_resume(folder, changes=asked, tracking_uri=args.tracking_uri, parallel=args.parallel,
                              seeds=args.seeds if "seeds" in given else None)


def more_seeds_hint(results: runner.Results) -> str | None:
    """The command that adds the seeds an unresolved comparison asks for to this call, its runs kept (a call that
    finished every run; with failed runs, plain --resume comes first)."""
    needed = [int(r["seeds_needed"]) for r in results.rows if r.get("verdict") == "unresolved"
              and not math.isnan(r["seeds_needed"]) and r["seeds_needed"] > r["seeds"]]  # NaN: more than the limit
    if not needed or results.folder is None or not results.finished:
        return None
    return (f"More seeds, keeping this call's runs: python experiments/ablate.py --resume {results.folder} --seeds "
            f"{max(needed)} (seeds chosen after this look: the report then says what looking twice costs).")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()

    def plan(args, argv):
        return resume_from_args(args, given_flags(parser, argv)) if args.resume else plan_from_args(args, argv)

    def run(plan: runner.Plan) -> int:
        results = runner.run_call(plan)
        if results.report is not None:
            print(results.report)
            hint = more_seeds_hint(results)
            if hint:
                print("\n" + hint)
        return results.exit_code

    return run_command(parser, argv, plan, run)


if __name__ == "__main__":
    sys.exit(main())
