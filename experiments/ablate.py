"""`python experiments/ablate.py --no-gsa`: train SepViT with components switched off, compare, log to MLflow.

    python experiments/ablate.py --no-dssa --compare --seeds 3          # local-only vs full model, 3 seeds each
    python experiments/ablate.py --grid paper --seeds 2                  # the paper's component chain
    python experiments/ablate.py --grid one-off --epochs 5               # each switch off alone
    torchrun --nproc-per-node 2 experiments/ablate.py --no-gsa          # DistributedDataParallel (gloo on CPU)
    python experiments/ablate.py --resume output/<experiment>/<call>/<run>/last.pth

Switches map one-to-one onto `SepViTConfig` fields; training flags use timm train.py's names and fill a
`TrainConfig`; `experiments.engine.train_and_evaluate` does the training. Every run of one call is a child of
one MLflow parent run. Bad input is refused before any training: one line on stderr, exit code 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from sepvit.config import BLOCK_PATTERNS, PRESETS, WINDOW_TOKENS, SepViTConfig
from workbench.cli import OneLineParser
from workbench.fields import parse_assignments

from experiments.grids import GRIDS, REFERENCE, grid, label_for
from experiments.train_config import TrainConfig

DEFAULT_MODEL = "sepvit_nano_32"
DEFAULT_EXPERIMENT = "sepvit-ablation"
EXIT_BAD_INPUT, EXIT_RUN_FAILED, EXIT_INTERRUPTED = 2, 1, 130


class UsageError(ValueError):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="ablate.py", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    m = p.add_argument_group("model switches (map onto SepViTConfig; defaults = the authors' SepViT)")
    m.add_argument("--model", default=DEFAULT_MODEL, help=f"registered name or preset: {', '.join(PRESETS)}")
    m.add_argument("--model-kwargs", nargs="*", default=[], metavar="K=V",
                   help="any other SepViTConfig field, e.g. embed_dims=(16,32,64,128) (Python literals)")
    m.add_argument("--no-lwt", action="store_true", help="fixed zero window tokens (window_token='zero')")
    m.add_argument("--window-token", choices=WINDOW_TOKENS, help="window summary token")
    m.add_argument("--no-dssa", action="store_true", help="local-only model: window attention in every block, no PWA, no GSA groups (dssa=False)")
    m.add_argument("--no-gsa", action="store_true", help="no grouped blocks (gsa=False)")
    m.add_argument("--group-size", type=int, nargs="+", metavar="N", help="windows per group side (one or per stage)")
    m.add_argument("--block-pattern", choices=BLOCK_PATTERNS, help="block type")
    m.add_argument("--no-ope", action="store_true", help="non-overlapping patch embedding (ope=False)")
    m.add_argument("--no-cpe", action="store_true", help="no conditional position encoding (cpe=False)")
    m.add_argument("--paper-equations", action="store_true", help="no inner DSSA shortcuts (inner_shortcuts=False)")
    m.add_argument("--window-size", type=int, help="window side in tokens")
    m.add_argument("--drop-path", type=float, help="stochastic depth rate (drop_path_rate)")

    t = p.add_argument_group("training (timm train.py names)")
    d = TrainConfig.__dataclass_fields__
    t.add_argument("--dataset", default=d["dataset"].default, help="synthetic, digits, cifar10, cifar100, imagefolder")
    t.add_argument("--data-dir", help="folder holding the dataset (cifar*/imagefolder)")
    t.add_argument("--img-size", type=int, help="input side (None: the model preset's)")
    t.add_argument("-b", "--batch-size", type=int, default=d["batch_size"].default, help="per process")
    t.add_argument("--epochs", type=int, default=d["epochs"].default, help="epochs per run")
    t.add_argument("--lr", type=float, default=d["lr"].default, help="peak AdamW learning rate")
    t.add_argument("--min-lr", type=float, default=d["min_lr"].default, help="cosine floor")
    t.add_argument("--weight-decay", type=float, default=d["weight_decay"].default, help="AdamW (not on norms, biases, window tokens, CPE)")
    t.add_argument("--warmup-epochs", type=int, default=d["warmup_epochs"].default, help="linear warm-up, per step")
    t.add_argument("--smoothing", type=float, default=d["smoothing"].default, help="label smoothing")
    t.add_argument("--mixup", type=float, default=d["mixup"].default, help="Mixup alpha (0: off)")
    t.add_argument("--cutmix", type=float, default=d["cutmix"].default, help="CutMix alpha (0: off)")
    t.add_argument("--clip-grad", type=float, default=d["clip_grad"].default, help="max grad norm (0: off)")
    t.add_argument("--model-ema", action="store_true", help="evaluate an EMA of the weights (timm ModelEmaV3)")
    t.add_argument("--model-ema-decay", type=float, default=d["model_ema_decay"].default, help="EMA decay")
    t.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    t.add_argument("--seed", type=int, default=d["seed"].default, help="first seed (init, order, augmentation)")
    t.add_argument("--workers", type=int, default=d["workers"].default, help="DataLoader workers")
    t.add_argument("--device", default=d["device"].default, help="auto, cpu, cuda, cuda:N")
    t.add_argument("--train-size", type=int, help="cap on training samples")
    t.add_argument("--val-size", type=int, help="cap on validation samples")
    t.add_argument("--output", default=d["output"].default, help="checkpoints, MLflow database and artifacts")
    t.add_argument("--resume", metavar="PATH", help="continue a run from its last.pth (same MLflow run)")

    r = p.add_argument_group("runs and tracking")
    r.add_argument("--seeds", type=int, default=1, help="seeds per configuration (seed, seed+1, ...)")
    r.add_argument("--compare", action="store_true", help="also train the reference with the same seeds and data")
    r.add_argument("--grid", choices=list(GRIDS), help="a predefined set of configurations")
    r.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<output>/mlflow.db)")
    r.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment name")
    return p


# ---------------------------------------------------------------------------------- args -> configs
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
    if args.block_pattern:
        changes["block_pattern"] = args.block_pattern
    if args.no_ope:
        changes["ope"] = False
    if args.no_cpe:
        changes["cpe"] = False
    if args.paper_equations:
        changes["inner_shortcuts"] = False
    if args.window_size is not None:
        changes["window_size"] = args.window_size
    return changes


def base_config(args) -> SepViTConfig:
    """--model + --model-kwargs (+ --drop-path, --img-size): the configuration every switch starts from."""
    if args.model not in PRESETS:
        raise UsageError(f"unknown model {args.model!r}: use one of {', '.join(PRESETS)}")
    try:
        overrides = parse_assignments(SepViTConfig, args.model_kwargs)
    except ValueError as exc:
        raise UsageError(f"--model-kwargs: {exc}") from None
    if args.drop_path is not None:
        overrides["drop_path_rate"] = args.drop_path
    if args.img_size is not None:
        overrides["img_size"] = args.img_size
    return SepViTConfig.preset(args.model, **overrides)


def train_config(args, seed: int | None = None) -> TrainConfig:
    return TrainConfig(
        dataset=args.dataset, data_dir=args.data_dir, img_size=args.img_size, train_size=args.train_size,
        val_size=args.val_size, workers=args.workers, batch_size=args.batch_size, epochs=args.epochs, lr=args.lr,
        min_lr=args.min_lr, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
        smoothing=args.smoothing, mixup=args.mixup, cutmix=args.cutmix,
        clip_grad=args.clip_grad if args.clip_grad and args.clip_grad > 0 else None, model_ema=args.model_ema,
        model_ema_decay=args.model_ema_decay, amp=args.amp, seed=args.seed if seed is None else seed,
        device=args.device, output=args.output,
    )


def plan(args, base: SepViTConfig) -> list[tuple[str, SepViTConfig]]:
    """(label, config) of every configuration this call trains; the reference is labelled "reference"."""
    changes = switch_changes(args)
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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


def _fail(message: str) -> int:
    print(f"ablate.py: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


# ---------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    logging.getLogger("sepvit.engine").setLevel(logging.INFO)
    if args.resume:
        return resume(args)
    from experiments.data import DataError, build_datasets, check_dataset
    from experiments.engine import fit_model_to_data
    from experiments.tracking import TrackingError, check_tracking_uri, default_tracking_uri

    # ---- validate everything before any training (configs raise ValueError with what to change)
    try:
        if args.seeds < 1:
            raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
        base_train = train_config(args)
        check_dataset(args.dataset, args.data_dir)
        base = base_config(args)
        configs = plan(args, base)
        tracking_uri = args.tracking_uri or default_tracking_uri(args.output)
        check_tracking_uri(tracking_uri)
        datasets = build_datasets(args.dataset, args.data_dir, args.img_size or base.img_size, args.train_size,
                                  args.val_size, seed=base_train.data_seed)
        info = datasets[2]
        configs = [(label, fit_model_to_data(cfg, info)) for label, cfg in configs]  # re-validates at data size
        base = fit_model_to_data(base, info)
    except (UsageError, DataError, TrackingError, ValueError) as exc:
        return _fail(str(exc))

    rank, world = _init_distributed()
    if rank != 0:  # only rank 0 reports
        logging.getLogger("sepvit.engine").setLevel(logging.WARNING)
    tracker = parent_id = None
    call = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    parent_name = f"{args.grid or label_for(configs[0][1], base)} {call}"
    if rank == 0:
        from experiments.tracking import Tracker

        tracker = Tracker(tracking_uri, args.experiment, artifact_root=Path(args.output) / "mlartifacts")
        parent_id = tracker.start_run(parent_name, tags={
            "kind": "parent", "command": " ".join(["ablate.py", *(argv if argv is not None else sys.argv[1:])]),
            "grid": args.grid or "", "configs": "; ".join(label for label, _ in configs), "seeds": args.seeds})
        print(f"MLflow: {tracking_uri} experiment {args.experiment!r}, parent run {parent_id}", file=sys.stderr)
    results = run_all(args, configs, base, datasets, tracker, parent_id, Path(args.output) / _slug(args.experiment) /
                      call, world)
    if results is None:  # interrupted: the engine has marked the child; mark the parent
        if tracker is not None:
            tracker.end_run(parent_id, "KILLED", "interrupted (Ctrl-C or SIGTERM)")
        _shutdown_distributed(world)
        return EXIT_INTERRUPTED
    if rank == 0:
        reference = next((label for label, cfg in configs if not cfg.diff(base)), None)
        report_results(results, tracker, parent_id, reference)
    _shutdown_distributed(world)
    return 0 if all(r.status == "FINISHED" for r in results) else EXIT_RUN_FAILED


def run_all(args, configs, base, datasets, tracker, parent_id, call_dir: Path, world: int):
    """Train every (configuration, seed); returns the Results, or None when interrupted."""
    from experiments.engine import RunInterrupted, train_and_evaluate

    results = []
    seeds = [args.seed + i for i in range(args.seeds)]
    for label, cfg in configs:
        diff = cfg.diff(base)
        tags = {"config": label, "is_reference": str(not diff).lower(),
                **{f"ablation.{k}": v for k, v in diff.items()}, "ablation": label}
        for seed in seeds:
            name = f"{label} seed{seed}"
            try:
                result = train_and_evaluate(cfg, train_config(args, seed), tracker, run_name=name,
                                            run_dir=call_dir / _slug(name), parent_run_id=parent_id,
                                            tags={**tags, "seed": seed}, datasets=datasets)
            except (KeyboardInterrupt, RunInterrupted):
                print(f"interrupted during {name!r}; resume it with --resume {call_dir / _slug(name) / 'last.pth'}",
                      file=sys.stderr)
                return None
            results.append(result)
            if tracker is None and world > 1:
                continue  # not rank 0
            status = f"top-1 {result.top1:.2f}" if result.status == "FINISHED" else f"{result.status}: {result.reason}"
            print(f"[{len(results)}/{len(configs) * len(seeds)}] {name}: {status}", file=sys.stderr)
    return results


def report_results(results, tracker, parent_id, reference_label: str | None) -> None:
    """The end-of-call table on stdout, also logged to the parent run (csv + markdown)."""
    from experiments.report import compare_to_reference, format_comparison, format_summary, results_frame, summarize

    frame = results_frame(results, reference_label=reference_label)
    summary = summarize(frame)
    text = format_summary(summary)
    markdown = "## Summary\n\n" + format_summary(summary, markdown=True)
    if frame["is_reference"].any() and (~frame["is_reference"]).any():
        comparison = compare_to_reference(frame)
        text += "\n\n" + format_comparison(comparison)
        markdown += "\n\n## Against the reference\n\n" + format_comparison(comparison, markdown=True)
        markdown += ("\n\nCI: Student t over seeds; Δ: Welch t interval; 'exceeds seed noise' = the two 95 % CIs "
                     "do not overlap.")
        if tracker is not None:
            tracker.log_files(parent_id, [("comparison.csv", comparison.to_csv(index=False))])
    print(text)
    if tracker is not None:
        tracker.log_files(parent_id, [("summary.csv", summary.to_csv(index=False)), ("summary.md", markdown),
                                      ("runs.csv", frame.to_csv(index=False))])
        failed = [r for r in results if r.status != "FINISHED"]
        tracker.end_run(parent_id, "FAILED" if failed else "FINISHED",
                        f"{len(failed)} run(s) failed: " + "; ".join(r.run_name for r in failed) if failed else None)


# ---------------------------------------------------------------------------------- resume
def resume(args) -> int:
    """Continue one run from its last.pth, in the same MLflow run; finish the parent if all its runs are done."""
    from experiments.checkpoint import load_checkpoint
    from experiments.engine import RunInterrupted, train_and_evaluate
    from experiments.tracking import Tracker, TrackingError, check_tracking_uri

    try:
        ckpt = load_checkpoint(args.resume)
        if "optimizer" not in ckpt:
            raise UsageError(f"{args.resume} is not a resumable checkpoint (use a last.pth, not a best.pth)")
        uri = args.tracking_uri or ckpt.get("tracking_uri")
        tracker = None
        if uri:
            check_tracking_uri(uri)
    except (UsageError, TrackingError, FileNotFoundError, ValueError, KeyError) as exc:
        return _fail(str(exc))
    rank, world = _init_distributed()
    if uri and rank == 0:
        tracker = Tracker(uri, ckpt.get("experiment") or args.experiment)
    model_cfg = SepViTConfig.from_dict(ckpt["config"])
    train_cfg = TrainConfig.from_dict(ckpt["train_config"])
    try:
        result = train_and_evaluate(model_cfg, train_cfg, tracker, resume_from=args.resume)
    except (KeyboardInterrupt, RunInterrupted):
        _shutdown_distributed(world)
        return EXIT_INTERRUPTED
    if rank == 0:
        print(f"{result.run_name}: {result.status}, top-1 {result.top1:.2f}")
        parent = ckpt.get("parent_run_id")
        if tracker is not None and parent:
            children = tracker.client.search_runs([tracker.experiment_id],
                                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
            if all(c.info.status in ("FINISHED", "FAILED") for c in children):
                failed = any(c.info.status == "FAILED" for c in children)
                tracker.end_run(parent, "FAILED" if failed else "FINISHED")
    _shutdown_distributed(world)
    return 0 if result.status == "FINISHED" else EXIT_RUN_FAILED


# ---------------------------------------------------------------------------------- distributed
def _init_distributed() -> tuple[int, int]:
    """Under torchrun: join the process group (NCCL on GPU, gloo on CPU). Returns (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def _shutdown_distributed(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
