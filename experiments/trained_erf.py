"""`python experiments/trained_erf.py RUN*/last.pth ...`: the spatial reach of a trained model's blocks, over seeds.

The runner's checkpoints are read here (the experiment side), their dataset's validation images are built here,
and `analysis.reach.model_reach_table` measures each block on its real stage input. Checkpoints of one
configuration (what the model computes: execution details such as fused attention aside) are the seeds of one
model: their numbers are pooled, with intervals over seeds, images and queries, and every model's top-1 is printed
beside them, so that models are compared at the accuracy they reached. `--untrained` measures the same
configurations freshly initialised (one model per `--seeds` value) on the same images, for the before/after
comparison.
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

import torch

from analysis.erf import DTYPES
from analysis.reach import add_common_flags, check_common_flags, computed_by, model_reach_table, render
from sepvit.config import SepViTConfig
from workbench.cli import OneLineParser, fail

from experiments.runner.checkpoint import CheckpointError, load_checkpoint, load_model
from experiments.data import DataError, build_datasets


def validation_images(dataset: str = "synthetic", count: int = 64, img_size: int | None = None,
                      seed: int = 0, data_dir: str | None = None) -> torch.Tensor:
    """The first `count` validation images of a workbench dataset, normalised as in training."""
    _, val, _ = build_datasets(dataset, data_dir, img_size=img_size, val_size=count, seed=seed)
    return torch.stack([val[i][0] for i in range(min(count, len(val)))])


def checkpoint_summary(path: str, untrained: bool = False, seed: int = 0) -> dict[str, Any]:
    """The model of a runner checkpoint and its facts: pattern, epoch, val top-1 (of that epoch, and best).
    untrained: the same configuration freshly initialised (`torch.manual_seed(seed)`), for comparison."""
    ckpt = load_checkpoint(path)
    if untrained:
        torch.manual_seed(seed)
        model = SepViTConfig.from_dict(ckpt["config"]).build().eval()
        return dict(model=model, path=str(path), block_pattern=model.config.block_pattern, epoch=0,
                    val_top1=None, best_val_top1=None, train_config=ckpt.get("train_config") or {})
    model = load_model(path)
    history = ckpt.get("history") or [ckpt.get("metrics") or {}]
    best = ckpt.get("best") or {}
    return dict(model=model, path=str(path), block_pattern=model.config.block_pattern, epoch=ckpt.get("epoch"),
                val_top1=history[-1].get("val_top1"), best_val_top1=best.get("top1", history[-1].get("val_top1")),
                train_config=ckpt.get("train_config") or {})


def group_by_configuration(summaries: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Checkpoint summaries grouped by what their model computes (`computed_by`), in first-seen order:
    each group holds the seeds of one model."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for facts in summaries:
        groups.setdefault(repr(sorted(computed_by(facts["model"].config).items())), []).append(facts)
    return list(groups.values())


def group_title(seeds: Sequence[dict[str, Any]], inputs: int, dataset: str) -> str:
    """"PATTERN (n seeds: a.pth, b.pth): val top-1 x / y %, epoch e, N DATASET images"."""
    first = seeds[0]
    paths = ", ".join(f["path"] for f in seeds)
    if first["val_top1"] is None:
        state = "untrained"
    else:
        top1 = " / ".join(f"{f['val_top1']:.1f}" for f in seeds)
        state = f"val top-1 {top1} % (mean {sum(f['val_top1'] for f in seeds) / len(seeds):.1f}), " \
                f"epoch {'/'.join(str(f['epoch']) for f in seeds)}"
    return f"{first['block_pattern']} ({len(seeds)} seed(s): {paths}): {state}, {inputs} {dataset} images"


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
    groups, extra = {}, {}
    try:
        summaries = [checkpoint_summary(path) for path in args.checkpoints]
        for seeds in group_by_configuration(summaries):
            if args.untrained:
                seeds = [checkpoint_summary(seeds[0]["path"], True, seed) for seed in args.seeds]
            config = seeds[0]["model"].config
            images = validation_images(args.dataset, args.inputs, config.img_size, data_dir=args.data_dir)
            title = group_title(seeds, len(images), args.dataset)
            groups[title] = model_reach_table([f["model"] for f in seeds], images,
                                              per_phase=args.queries_per_phase or None,
                                              identity=not args.no_identity, metric=args.metric,
                                              dtype=DTYPES[args.dtype], with_cpe=args.with_cpe, stages=args.stages,
                                              label=config.block_pattern)
            top1 = [f["val_top1"] for f in seeds]
            extra[title] = dict(checkpoints=[f["path"] for f in seeds], block_pattern=config.block_pattern,
                                epochs=[f["epoch"] for f in seeds], val_top1=top1,
                                mean_val_top1=None if None in top1 else sum(top1) / len(top1))
    except (CheckpointError, DataError, ValueError, KeyError) as error:
        return fail(parser.prog, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
    print(render(groups, args.format, args.metric, not args.no_identity, extra, resamples=args.resamples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
