"""`python experiments/trained_erf.py RUN/last.pth ...`: effective receptive fields of a trained model's blocks.

The runner's checkpoints are read here (the experiment side), their dataset's validation images are built here,
and `analysis.receptive_field.model_erf_table` measures each block on its real stage input. `--untrained` measures
the same configurations freshly initialised on the same images, for the before/after comparison.
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

import torch

from analysis.receptive_field import DTYPES, add_common_flags, model_erf_table, render
from sepvit.config import SepViTConfig
from workbench.cli import OneLineParser, fail

from experiments.checkpoint import CheckpointError, load_checkpoint, load_model
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


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="trained_erf.py", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", metavar="PATH", help="runner checkpoints (last.pth or best.pth)")
    p.add_argument("--untrained", action="store_true",
                   help="the same configurations freshly initialised (--seed), on the same images")
    p.add_argument("--dataset", default="synthetic", help="the validation images (the runner's datasets)")
    p.add_argument("--data-dir", help="dataset folder (cifar*/imagefolder)")
    p.add_argument("--inputs", type=int, default=64, help="validation images averaged over")
    p.add_argument("--stages", type=int, nargs="+", metavar="S", help="one-based stages (default all)")
    p.add_argument("--seed", type=int, default=0, help="init seed for --untrained")
    p.add_argument("--with-cpe", action="store_true", help="run CPE between blocks 0 and 1")
    add_common_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.inputs < 1:
        return fail(parser.prog, f"--inputs must be >= 1, got {args.inputs}")
    groups, extra = {}, {}
    try:
        for path in args.checkpoints:
            facts = checkpoint_summary(path, args.untrained, args.seed)
            model = facts["model"]
            images = validation_images(args.dataset, args.inputs, model.config.img_size, data_dir=args.data_dir)
            state = (f"epoch {facts['epoch']}, val top-1 {facts['val_top1']:.1f} %" if facts["val_top1"] is not None
                     else f"untrained (seed {args.seed})")
            title = f"{path}: block_pattern={facts['block_pattern']}, {state}, {args.inputs} {args.dataset} images"
            groups[title] = model_erf_table(model, images, identity=not args.no_identity, metric=args.metric,
                                            dtype=DTYPES[args.dtype], with_cpe=args.with_cpe, stages=args.stages)
            extra[title] = dict(checkpoint=str(path), block_pattern=facts["block_pattern"], epoch=facts["epoch"],
                                val_top1=facts["val_top1"])
    except (CheckpointError, DataError, ValueError, KeyError) as error:
        return fail(parser.prog, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
    print(render(groups, args.format, args.metric, not args.no_identity, extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
