"""`python experiments/search.py --n-trials 8`: an Optuna search over SepViT's group sizes (and any other switch).

    python experiments/search.py --n-trials 8 --confirm 3                  # group sizes, window size, window token;
                                                                           # then the best trial against the paper's
                                                                           # configuration at 3 paired seeds
    python experiments/search.py --n-trials 8                              # again: 8 more trials in the same study
    python experiments/search.py --n-trials 0 --confirm 3                  # confirm the study's best trial only
    python experiments/search.py --space training --n-trials 30 --processes 2
    python experiments/search.py --objectives top1 macs --n-trials 20      # accuracy against MACs: a Pareto front
    python experiments/search.py --space my_space.yaml --sampler grid
    python experiments/search.py --storage postgresql://user:pw@db-host/optuna --study-name gs --n-trials 10

Each trial trains one configuration through the runner's API (`experiments.runner.train_and_evaluate`), at the
runner's default budget unless --epochs/--train-size/--val-size say otherwise, and reports its validation top-1
after every epoch, so the pruner can stop a poor trial early. The paper's configuration (the
base model: `--model` and `--model-kwargs`) is enqueued as the first trial of a new study, and every report says how
far the best trial is from it. Studies live in an Optuna storage (default: `<output>/optuna.db`, SQLite, which
several processes share on one machine; PostgreSQL across machines); the same command with the same
`--study-name` adds trials to the study. MLflow: one parent run per call, one child run per trial (also pruned
and failed ones), tagged with the trial number and state. Bad input is refused before any trial: one line on
stderr, exit code 2.

A trial is one run with one seed, so the best trial's distance to the paper's configuration is partly seed noise.
`--confirm K` then trains the best trial's configuration and the paper's at K paired seeds as one runner call (what
`ablate.py --compare --seeds K` runs; experiments.search_confirm), stores the answer in the study, and the report
says in one sentence whether the gain is beyond seed noise; without it the report says the gain is unconfirmed and
prints the ablate.py command that confirms it.

Whatever ends a call (an error, Ctrl-C, SIGTERM, SIGHUP) closes its parent run and the trial in progress with the
reason (Optuna's `fail_reason` too); the same command continues the study. A call killed outright (SIGKILL, out of
memory) is repaired by the next call on the same machine: its trials FAIL, its parent is KILLED and a lost reference
trial is enqueued again; a confirmation's runs are KILLED too, and the next `--confirm` resumes its call (the study
records it as `running` before it trains). While the study records another process's confirmation as running
(another machine on the same PostgreSQL study), `--confirm` is refused (exit code 2; `--force-confirm` overrides). Passwords in URLs are masked in messages and in everything MLflow keeps; user-supplied
names become folders only through the runner's slug, inside --output.

This module is the command line (parse, plan, run); the call as objects is `experiments.search_call` (plan_search,
run_search), the trial `experiments.search_objective`, the workers `experiments.search_workers`, the study's
storage and records `experiments.search_storage`, the space `experiments.search_space`, the report
`experiments.search_report`, the confirmation `experiments.search_confirm`.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Sequence

if __package__ in (None, ""):  # `python experiments/search.py`: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import optuna

from sepvit.config import PRESETS
from workbench.cli import (OneLineParser, UsageError, add_config_flag, add_dataclass_flags, add_model_flags,
                           add_tracking_flags, dataclass_from_args, run_command)
from workbench.tracking import mask_secrets

from experiments.base_model import DEFAULT_MODEL, base_config
from experiments.runner.plan import parallel_count
from experiments.search_call import (DEFAULT_EXPERIMENT, DEFAULT_STUDY, EXIT_FAILED, PROG,  # noqa: F401  (tests)
                                     plan_search, run_search)
from experiments.search_storage import OBJECTIVES, Prepared
from experiments.search_workers import PRUNERS, SAMPLERS
from experiments.train_config import TrainConfig

# No budget of its own: a trial trains at TrainConfig's defaults, the runner's calibrated benchmark (9 epochs of the
# dataset's default 4000/1000 images, at which the reference learns the built-in task on every seed). The smaller
# budget the search had before (3 epochs of 2000/500 images) left the reference at chance, so a study ranked noise.


# ---------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_flag(p)
    s = p.add_argument_group("search")
    s.add_argument("--space", default="default",
                   help="default (group size per grouped stage, window size, window token), training (default + lr, "
                        "weight decay, drop path) or a YAML file (see experiments/spaces/example.yaml)")
    s.add_argument("--objectives", nargs="+", default=["top1"], choices=list(OBJECTIVES), metavar="OBJECTIVE",
                   help="top1 (maximised); add macs and/or latency (minimised) for a Pareto front")
    s.add_argument("--n-trials", type=int, default=8,
                   help="trials this call adds (shared by its workers); 0 with --confirm: confirm the study's best "
                        "trial without new trials")
    s.add_argument("--timeout", type=float, help="seconds after which this call starts no new trial")
    s.add_argument("--study-name", default=DEFAULT_STUDY, help="Optuna study: the same name continues the study")
    s.add_argument("--storage", help="Optuna storage URL: sqlite:///ABS/PATH.db or postgresql://user:pw@host/db "
                                     "(default: sqlite:///<output>/optuna.db)")
    s.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                   help="tpe (multivariate TPE), grid (every valid combination once), random")
    s.add_argument("--pruner", choices=PRUNERS,
                   help="stop poor trials on their per-epoch validation top-1 (default: median; none with several "
                        "objectives, which Optuna cannot prune)")
    s.add_argument("--processes", dest="search_workers", type=int, default=1, metavar="N",
                   help="processes sharing the study, each taking trials in turn (Optuna's parallel workers; "
                        "-j/--workers is the DataLoader's, as in timm and ablate.py)")
    s.add_argument("--heartbeat", type=int, default=20,
                   help="seconds between a running trial's heartbeats; a trial silent for 3 heartbeats (its worker "
                        "died) is marked FAIL")
    c = p.add_argument_group("confirmation (is the best trial beyond seed noise?)")
    c.add_argument("--confirm", type=int, default=0, metavar="K",
                   help="after the trials, train the best trial's configuration and the paper's (the base) at K paired "
                        "fresh seeds (--seed+1 .. --seed+K: not the trials' own, whose luck selected the best) with "
                        "the trials' data and training settings, as one runner call (= ablate.py --compare --seeds "
                        "K), and report whether the difference is beyond seed noise; "
                        "K >= 2, 2K runs (3: 6 runs, as `ablate.py --no-gsa --compare --seeds 3`, measured at 12.7 "
                        "minutes on 2 cores of an Intel Xeon in docs/results.md, 7.6 on an AMD EPYC in "
                        "docs/benchmark-log.md); a K above an "
                        "earlier confirmation's extends its call (its runs kept; the report prices the second look); "
                        "with several objectives, the most accurate trial of the Pareto set, on top-1. 0: off")
    c.add_argument("--parallel", type=parallel_count, metavar="N|auto",
                   help="the confirmation's runs trained at once, as ablate.py's --parallel: auto is one "
                        "single-thread process per CPU thread, as many as there are runs (default: auto; only with "
                        "--confirm)")
    c.add_argument("--force-confirm", action="store_true",
                   help="confirm even while the study records another process's confirmation as running (refused "
                        "otherwise, as several machines on one storage would each confirm): for a process that is "
                        "gone, on a machine that cannot be checked; only with --confirm")
    m = p.add_argument_group("model (the base configuration: the paper's defaults unless changed here)")
    add_model_flags(m, PRESETS, DEFAULT_MODEL, "embed_dims=16,32,64,128")
    t = p.add_argument_group("training of every trial (TrainConfig fields, the runner's names)")
    add_dataclass_flags(t, TrainConfig, help_for={
        "seed": "training seed of every trial (the runner's --seed) and the sampler's seed; trials share it, so they "
                "differ only in their parameters",
        "epochs": "epochs per trial: the pruner's resource. Default: the runner's budget (with --train-size and "
                  "--val-size unset: the dataset's 4000/1000 images), about 2.5-3 minutes per trial on a 2-core CPU "
                  "(an estimate from the runner's runs, not timed for the search)",
        "workers": "DataLoader worker processes per trial (as in timm and ablate.py)"})
    add_tracking_flags(p.add_argument_group("tracking"), DEFAULT_EXPERIMENT)
    return p


def command_line(argv: Sequence[str]) -> str:
    """The call's command as the parent run records it, credentials masked in each argument."""
    return " ".join([PROG, *(mask_secrets(a) for a in argv)])


def prepare(args, argv: Sequence[str] = ()) -> Prepared:
    """The search call the flags ask for, checked (`plan_search`): a bad request raises a one-line error."""
    if args.parallel is not None and not args.confirm:
        raise UsageError("--parallel sets how many of the confirmation's runs train at once: use it with --confirm K "
                         "(the trials' processes are --processes)")
    base = base_config(args)
    return plan_search(base, dataclass_from_args(TrainConfig, args), space=args.space, objectives=args.objectives,
                       n_trials=args.n_trials, timeout=args.timeout, study_name=args.study_name,
                       storage=args.storage, sampler=args.sampler, pruner=args.pruner, workers=args.search_workers,
                       heartbeat=args.heartbeat, experiment=args.experiment, tracking_uri=args.tracking_uri,
                       command=command_line(argv), confirm=args.confirm,
                       parallel="auto" if args.parallel is None else args.parallel, force_confirm=args.force_confirm)


def main(argv: Sequence[str] | None = None) -> int:
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial's outcome is one line of ours
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return run_command(build_parser(), argv, prepare, run_search)


if __name__ == "__main__":
    sys.exit(main())
