"""Side-by-side forward throughput of several models, measured interleaved in one run.

    python analysis/benchmark.py --models sepvit_tiny swin_tiny_patch4_window7_224 --img-size 224 -b 8

Each round times one batch of every model in turn (order rotated every round), so that machine noise
hits all models alike; the report gives the median and inter-quartile range of images/s over the rounds,
and each model's median ratio to the first model computed round by round. Timing follows timm's
benchmark.py: warm-up, `torch.inference_mode()`, CUDA synchronisation.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
from torch import nn


@dataclass
class ThroughputResult:
    model: str
    img_size: int
    batch_size: int
    device: str
    threads: int
    rounds: int
    median_img_s: float
    q1_img_s: float
    q3_img_s: float
    median_ms_per_batch: float
    ratio_to_first: float


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else (values[0],) * 3
    return q1, q2, q3


def _time_once(model: nn.Module, batch: torch.Tensor) -> float:
    if batch.is_cuda:
        torch.cuda.synchronize(batch.device)
    start = time.perf_counter()
    model(batch)
    if batch.is_cuda:
        torch.cuda.synchronize(batch.device)
    return time.perf_counter() - start


def compare_throughput(
    models: dict[str, nn.Module],
    img_size: int,
    batch_size: int = 8,
    rounds: int = 20,
    warmup: int = 3,
    device: str = "cpu",
    threads: int | None = None,
    timer: Callable[[nn.Module, torch.Tensor], float] = _time_once,
) -> list[ThroughputResult]:
    """Interleaved throughput of `models` (name -> module) on random input; the first is the baseline."""
    if threads is not None:
        torch.set_num_threads(threads)
    batch = torch.randn(batch_size, 3, img_size, img_size, device=device)
    names = list(models)
    for model in models.values():
        model.eval().to(device)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for _ in range(warmup):
            for name in names:
                timer(models[name], batch)
        for r in range(rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                seconds[name].append(timer(models[name], batch))
    results = []
    base = seconds[names[0]]
    for name in names:
        img_s = [batch_size / s for s in seconds[name]]
        q1, median, q3 = _quartiles(img_s)
        ratios = [b / s for b, s in zip(base, seconds[name])]  # >1: faster than the baseline
        results.append(ThroughputResult(
            model=name, img_size=img_size, batch_size=batch_size, device=device,
            threads=torch.get_num_threads(), rounds=rounds, median_img_s=median, q1_img_s=q1, q3_img_s=q3,
            median_ms_per_batch=1000 * statistics.median(seconds[name]), ratio_to_first=statistics.median(ratios),
        ))
    return results


def format_table(results: list[ThroughputResult]) -> str:
    first = results[0]
    lines = [
        f"forward throughput, batch {first.batch_size}, {first.img_size}x{first.img_size}, {first.device}, "
        f"{first.threads} threads, {first.rounds} interleaved rounds (median [IQR])",
        f"{'model':<36} {'img/s':>8} {'IQR':>17} {'ms/batch':>9} {'x vs ' + first.model[:14]:>20}",
    ]
    for r in results:
        lines.append(f"{r.model:<36} {r.median_img_s:8.1f} {f'[{r.q1_img_s:.1f}, {r.q3_img_s:.1f}]':>17} "
                     f"{r.median_ms_per_batch:9.1f} {r.ratio_to_first:20.2f}")
    return "\n".join(lines)


def _build(name: str, img_size: int) -> nn.Module:
    import timm

    import sepvit  # noqa: F401  (registers sepvit_* with timm)

    kwargs = {"img_size": img_size} if name.startswith(("swin", "sepvit")) else {}
    return timm.create_model(name, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["sepvit_tiny", "swin_tiny_patch4_window7_224"])
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("-b", "--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.rounds < 1 or args.img_size < 1:
        parser.error("--batch-size, --rounds and --img-size must be positive")
    try:
        models = {name: _build(name, args.img_size) for name in args.models}
    except (RuntimeError, ValueError) as err:  # timm: unknown model; our config: bad size
        print(f"benchmark: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    results = compare_throughput(models, args.img_size, args.batch_size, args.rounds, args.warmup,
                                 args.device, args.threads)
    print(json.dumps([asdict(r) for r in results], indent=2) if args.format == "json" else format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
