"""`python analysis/benchmark.py`: latency and throughput, measured side by side (the command line).

    python analysis/benchmark.py --blocks --variant sepvit_tiny --img-size 224           # per stage, forward
    python analysis/benchmark.py --blocks --variant sepvit_tiny --img-size 224 --train   # forward + backward
    python analysis/benchmark.py --models sepvit_tiny swin_tiny_patch4_window7_224 twins_svt_small -b 8 --threads 2
    python analysis/benchmark.py --models sepvit_nano_32 sepvit_nano_32:block_pattern=swin --train -b 64 --img-size 32

What is timed and how MACs are counted: `analysis.speed`; how it is timed (interleaved rounds, medians [IQR],
same-round ratios, hooks refused): `analysis.timing`; the results as MLflow runs: `analysis.speed_tracking`. This
module parses, runs, prints and logs through them; code and notebooks call those modules, never this one.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

if __package__ in (None, ""):  # `python analysis/benchmark.py`: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from workbench.cli import OneLineParser, UsageError, fail
from workbench.tracking import TrackingError, check_tracking_uri, default_tracking_uri

from analysis import speed, timing
from analysis.speed import benchmark_blocks, benchmark_models, build_candidate, render
from analysis.speed_tracking import log_to_mlflow
from analysis.timing import DTYPES, Settings, TrainStep
from analysis.units import UNITS
from experiments.train_config import TrainConfig  # a script may use any layer: `--train` times the runner's step

PROG = "sepvit-benchmark"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="\n".join([__doc__, speed.__doc__, timing.__doc__]),
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="Models: NAME or NAME:field=value[:field=value...] (SepViTConfig fields, typed as "
                                  "everywhere in the workbench; sepvit_* models only), e.g. "
                                  "sepvit_tiny:block_pattern=swin sepvit_tiny:gsa=false:window_token=zero. "
                                  "--model-kwargs applies its fields to every sepvit_* model.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--models", nargs="+", metavar="MODEL", help="whole models (timm names or sepvit_* presets)")
    what.add_argument("--blocks", action="store_true", help="per-stage units of --variant (SepViT block vs timm pairs)")
    parser.add_argument("--variant", default="sepvit_tiny", help="preset whose stages --blocks uses (sepvit_tiny)")
    parser.add_argument("--units", nargs="+", choices=UNITS, default=None, metavar="UNIT",
                        help=f"--blocks units to time (default all: {', '.join(UNITS)})")
    parser.add_argument("--stages", nargs="+", type=int, default=None, metavar="N", help="--blocks stages (1-based)")
    parser.add_argument("--reference", default=None,
                        help="what ratios divide by: a unit (default swin_pair) or a model (default the first)")
    parser.add_argument("--model-kwargs", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="SepViTConfig fields for every sepvit_* model in --models")
    parser.add_argument("--img-size", type=int, default=224, metavar="PX", help="square input side (224)")
    parser.add_argument("-b", "--batch-size", type=int, default=8, help="images per call (8)")
    parser.add_argument("--train", action="store_true",
                        help="blocks: forward + backward; models: the runner's step with its default settings (TrainConfig: "
                             "label-smoothed loss, backward, clipping, AdamW)")
    attention = parser.add_mutually_exclusive_group()
    attention.add_argument("--fused", dest="attention", action="store_const", const="fused",
                           help="fused attention (F.scaled_dot_product_attention) in every module that has the switch")
    attention.add_argument("--explicit", dest="attention", action="store_const", const="explicit",
                           help="explicit softmax attention in every module that has the switch")
    parser.add_argument("--compile", action="store_true", help="torch.compile every timed module (compiled in warm-up)")
    parser.add_argument("--channels-last", action="store_true", help="models and inputs in channels_last memory format")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="autocast dtype (float32: none)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=20, help="timed interleaved rounds (20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (3)")
    parser.add_argument("--no-macs", action="store_true", help="models: skip the fvcore MAC count")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument("--mlflow", action="store_true", help="log the results to MLflow")
    parser.add_argument("--tracking-uri", default=None, help="MLflow URI (default sqlite:///<abs --output>/mlflow.db)")
    parser.add_argument("--output", default="output", help="folder of the default MLflow store (output)")
    parser.add_argument("--experiment", default="sepvit-benchmark", help="MLflow experiment (sepvit-benchmark)")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    for flag in ("batch_size", "img_size", "rounds"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be a positive integer, got {getattr(args, flag)}")
    if args.warmup < 0:
        raise UsageError(f"--warmup must be 0 or more, got {args.warmup}")
    if args.compile and args.warmup < 1:
        raise UsageError("--compile needs --warmup 1 or more: compilation happens on the first call")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be a positive integer, got {args.threads}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UsageError(f"--device {args.device!r} is not a device: use cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: no CUDA device here; use --device cpu")
    if args.blocks and args.channels_last:
        raise UsageError("--channels-last applies to --models (block units already take channels-last maps)")
    if args.blocks and (args.model_kwargs or args.no_macs):
        raise UsageError("--model-kwargs and --no-macs apply to --models only")
    if args.models and (args.units or args.stages):
        raise UsageError("--units and --stages apply to --blocks only")
    return Settings(batch_size=args.batch_size, img_size=args.img_size, train=args.train, device=args.device,
                    threads=args.threads or torch.get_num_threads(), dtype=args.dtype, attention=args.attention,
                    compile=args.compile, channels_last=args.channels_last, rounds=args.rounds, warmup=args.warmup,
                    step=TrainStep.of(TrainConfig()) if args.train else None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = list(sys.argv if argv is None else [PROG, *argv])
    log = (lambda message: print(f"[{PROG}] {message}", file=sys.stderr, flush=True))
    try:
        settings = settings_from_args(args)
        tracking_uri = None
        if args.mlflow:
            tracking_uri = args.tracking_uri or default_tracking_uri(args.output)
            try:
                check_tracking_uri(tracking_uri)
            except TrackingError as error:
                raise UsageError(str(error)) from None
        torch.set_num_threads(settings.threads)
        if args.blocks:
            kind = "blocks"
            rows = benchmark_blocks(args.variant, settings, args.units or UNITS, args.stages,
                                    args.reference or "swin_pair", log=log)
        else:
            kind = "models"
            candidates = [build_candidate(spec, settings.img_size, args.model_kwargs, count_macs=not args.no_macs,
                                          log=log) for spec in args.models]
            rows = benchmark_models(candidates, settings, args.reference, log=log)
    except UsageError as error:
        return fail(PROG, str(error))
    table = render(rows, kind, "table")
    print(render(rows, kind, args.format), flush=True)
    if tracking_uri:
        run_id = log_to_mlflow(rows, kind, tracking_uri, args.experiment, command, table)
        log(f"MLflow: {tracking_uri}, experiment {args.experiment!r}, run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
