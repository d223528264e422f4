"""The spatial reach of trained models' blocks: runner checkpoints, grouped by configuration, on their data's images.

The runner's checkpoints are read here (the experiment side), their dataset's validation images are built here,
and `analysis.reach.model_reach_table` measures each block on its real stage input. Checkpoints of one
configuration (what the model computes: execution details such as fused attention aside) are the seeds of one
model: their numbers are pooled, with intervals over seeds, images and queries, beside every model's top-1, so
that models are compared at the accuracy they reached. `untrained=True` measures the same configurations freshly
initialised (one model per seed) on the same images, for the before/after comparison.
`python experiments/trained_erf.py` is the command line over `checkpoint_reach`.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from analysis.reach import ReachResult, computed_by, model_reach_table
from sepvit.config import SepViTConfig

from experiments.data import build_datasets
from experiments.runner.checkpoint import load_checkpoint, load_model
from experiments.train_config import TrainConfig


def validation_images(dataset: str = "synthetic", count: int = 64, img_size: int | None = None,
                      seed: int = 0, data_dir: str | None = None, synthetic_cue: str | None = None) -> torch.Tensor:
    """The first `count` validation images of a workbench dataset, normalised as in training (synthetic_cue: the
    built-in task's cue the models were trained with; None: the default)."""
    cue = {} if synthetic_cue is None else {"synthetic_cue": synthetic_cue}
    _, val, _ = build_datasets(dataset, data_dir, img_size=img_size, val_size=count, seed=seed, **cue)
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


def checkpoint_reach(paths: Sequence[str], *, untrained: bool = False, seeds: Sequence[int] = (0,),
                     dataset: str = "synthetic", data_dir: str | None = None, inputs: int = 64,
                     **measure: Any) -> tuple[dict[str, list[ReachResult]], dict[str, dict[str, Any]]]:
    """The reach of the checkpoints' blocks, one group per configuration (its checkpoints are its seeds; with
    `untrained`, fresh models of that configuration, one per `seeds` value), each on the first `inputs`
    validation images of `dataset`. `measure`: `model_reach_table`'s keywords (per_phase, identity, metric,
    dtype, with_cpe, stages). Returns {group title: results} and {group title: its checkpoints, epochs and
    val top-1}, the two mappings `analysis.reach.render` takes.
    Raises CheckpointError, DataError, ValueError or KeyError on a bad checkpoint, dataset or stage."""
    groups, facts = {}, {}
    for group in group_by_configuration([checkpoint_summary(path) for path in paths]):
        if untrained:
            group = [checkpoint_summary(group[0]["path"], True, seed) for seed in seeds]
        config = group[0]["model"].config
        trained_on = group[0]["train_config"]
        cue = None  # the built-in task's images with the cue the checkpoint learnt (one saved before cues: ring)
        if dataset == "synthetic" and trained_on.get("dataset", "synthetic") == "synthetic":
            cue = trained_on.get("synthetic_cue", TrainConfig.before_logged()["synthetic_cue"])
        images = validation_images(dataset, inputs, config.img_size, data_dir=data_dir, synthetic_cue=cue)
        title = group_title(group, len(images), dataset)
        groups[title] = model_reach_table([f["model"] for f in group], images, label=config.block_pattern,
                                          **measure)
        top1 = [f["val_top1"] for f in group]
        facts[title] = dict(checkpoints=[f["path"] for f in group], block_pattern=config.block_pattern,
                            epochs=[f["epoch"] for f in group], val_top1=top1,
                            mean_val_top1=None if None in top1 else sum(top1) / len(top1))
    return groups, facts
