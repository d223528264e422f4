"""The cost columns of a call's table, timed side by side after training (analysis.timing's interleaved harness).

Timing each run while it trains, one after another, measures the load of the moment as much as the model (a
fresh clone once showed the reference 6.6x slower than a configuration with more MACs). Here every
configuration of the call is built once and timed in the same rounds, call order rotated each round, on this
process's threads: batch-1 forward latency and the training step's throughput at the call's batch size, each
as median and inter-quartile range. Untrained weights time the same as trained ones (the kernels do not
depend on the values).
"""
from __future__ import annotations

from typing import Mapping

import torch

from analysis.speed import ModelCandidate, benchmark_models
from analysis.timing import Settings, TrainStep
from sepvit.config import SepViTConfig

from experiments.train_config import TrainConfig

ROUNDS, WARMUP = 15, 3


def interleaved_costs(configs: Mapping[str, SepViTConfig], train: TrainConfig, threads: int | None = None,
                      rounds: int = ROUNDS, warmup: int = WARMUP) -> dict[str, dict[str, float]]:
    """label -> latency_ms (batch 1 forward) and train_img_per_s (one optimisation step of `train`'s settings at
    its batch size), each with its _q1/_q3, timed interleaved across the labels, plus the timing settings (threads,
    rounds)."""
    threads = threads or torch.get_num_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        candidates = []
        for label, cfg in configs.items():
            torch.manual_seed(0)
            module = cfg.build().eval()
            candidates.append(ModelCandidate(label, module, cfg.num_classes, cfg.in_chans,
                                             params=sum(p.numel() for p in module.parameters())))
        size = next(iter(configs.values())).img_size
        common = dict(img_size=size, threads=threads, rounds=rounds, warmup=warmup)
        forward = benchmark_models(candidates, Settings(batch_size=1, **common))
        training = benchmark_models(candidates, Settings(batch_size=train.batch_size, train=True,
                                                          step=TrainStep.of(train), **common))
    finally:
        torch.set_num_threads(previous)
    out = {}
    for fwd, trn in zip(forward, training):
        out[fwd["model"]] = {
            "latency_ms": fwd["ms_per_batch"], "latency_ms_q1": fwd["ms_per_batch_q1"],
            "latency_ms_q3": fwd["ms_per_batch_q3"], "img_per_s": trn["img_per_s"],
            "img_per_s_q1": trn["img_per_s_q1"], "img_per_s_q3": trn["img_per_s_q3"],
            "timing_threads": threads, "timing_rounds": rounds}
    return out
