"""Latency and throughput, measured side by side: SepViT blocks against timm's Swin and Twins pairs, whole models.

    python analysis/benchmark.py --blocks --variant sepvit_tiny --img-size 224           # per stage, forward
    python analysis/benchmark.py --blocks --variant sepvit_tiny --img-size 224 --train   # forward + backward
    python analysis/benchmark.py --models sepvit_tiny swin_tiny_patch4_window7_224 twins_svt_small -b 8 --threads 2
    python analysis/benchmark.py --models sepvit_nano_32 sepvit_nano_32:block_pattern=swin --train -b 64 --img-size 32

Conventions (timm's benchmark.py, plus what a shared, noisy machine needs):
  - a fixed thread count (`--threads`, reported), warm-up calls before timing, `torch.inference_mode()` for
    forward, CUDA synchronised before and after every timed call;
  - every candidate runs once per round, in an order rotated every round (round r starts with candidate
    r mod n), so that machine noise hits all candidates alike;
  - each figure is the median over rounds, with the inter-quartile range [q1, q3];
  - ratios to the reference are computed round by round (candidate / reference in the same round) and the
    median of those is reported: a slow spell that hits one round hits both sides of its ratio.
Modes: forward (default); `--train`: blocks run forward + backward (gradient of sum(output), input included),
models run the runner's step: forward, label-smoothed cross-entropy, backward, gradient clipping at 5, AdamW
(timm's create_optimizer_v2, lr 3e-3, weight decay 0.05).
MACs are never counted on a timed module: blocks use the analytic formulas (`analysis.complexity`, the paper's
convention: weights + attention matmuls, multiply-add = 1, per image); models use fvcore on a deep copy (attention
included, multiply-add = 1, per image), plus the analytic count for workbench models. Before timing, every timed
module is checked for forward/backward hooks (a counter's leftovers) and refused if it has any.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import difflib
import io
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

if __package__ in (None, ""):  # `python analysis/benchmark.py`: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
from torch import nn

from workbench.cli import OneLineParser, fail

PROG = "sepvit-benchmark"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BLOCK_UNITS = ("sepvit_block", "sepvit_gsa_block", "swin_pair", "twins_pair", "msa_block",
               "ours_swin_pair", "ours_twins_pair", "ours_msa_block")  # analysis.units.UNITS, in this order
BLOCK_MACS = "analytic (paper convention: weights + attention matmuls), multiply-add = 1, per image"
MODEL_MACS = "fvcore on a deep copy (attention included), multiply-add = 1, per image"
# The runner's optimiser and loss (experiments/train_config.py defaults), for --train on whole models.
TRAIN_LR, TRAIN_WEIGHT_DECAY, TRAIN_SMOOTHING, TRAIN_CLIP_GRAD = 3e-3, 0.05, 0.1, 5.0


class UsageError(ValueError):
    """Bad input: the command line prints it as one line and exits with code 2."""


class HookedModuleError(RuntimeError):
    """A module about to be timed carries hooks (e.g. left by a MAC counter): its time would be wrong."""


# ================================================================================== interleaved timing
@dataclass
class Timings:
    """Seconds of every timed call: `seconds[name][r]` is candidate `name` in round r; `orders[r]` the call order."""

    seconds: dict[str, list[float]]
    orders: list[list[str]]


def rotated(names: Sequence[str], round_index: int) -> list[str]:
    """The call order of round `round_index`: the candidates rotated left by round_index mod n."""
    k = round_index % len(names)
    return list(names[k:]) + list(names[:k])


def time_interleaved(steps: Mapping[str, Callable[[], Any]], rounds: int, warmup: int, *,
                     clock: Callable[[], float] = time.perf_counter,
                     sync: Callable[[], None] = lambda: None) -> Timings:
    """Run every step once per round, order rotated each round; `warmup` untimed rounds first.

    `sync` is called before reading the clock on both sides of a call (CUDA synchronisation on a GPU),
    so a timed call includes all the work it queued and none of its predecessor's.
    """
    names = list(steps)
    for r in range(warmup):
        for name in rotated(names, r):
            steps[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    orders = []
    for r in range(rounds):
        order = rotated(names, r)
        orders.append(order)
        for name in order:
            sync()
            start = clock()
            steps[name]()
            sync()
            seconds[name].append(clock() - start)
    return Timings(seconds, orders)


@dataclass(frozen=True)
class Spread:
    """Median and inter-quartile range (inclusive quartiles) of a sample."""

    median: float
    q1: float
    q3: float


def spread(values: Sequence[float]) -> Spread:
    if len(values) == 1:
        return Spread(values[0], values[0], values[0])
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return Spread(median, q1, q3)


def round_ratios(seconds: Mapping[str, Sequence[float]], reference: str) -> dict[str, list[float]]:
    """Per candidate, its time divided by the reference's time in the same round (< 1: faster)."""
    ref = seconds[reference]
    return {name: [t / r for t, r in zip(values, ref)] for name, values in seconds.items()}


# ================================================================================== what is timed
@dataclass(frozen=True)
class Settings:
    """How every candidate runs; `attention`: None keeps each module's own choice, else 'fused'/'explicit'."""

    batch_size: int = 8
    img_size: int = 224
    train: bool = False
    device: str = "cpu"
    threads: int = 1
    dtype: str = "float32"
    attention: str | None = None
    compile: bool = False
    channels_last: bool = False
    rounds: int = 20
    warmup: int = 3

    @property
    def mode(self) -> str:
        return "train" if self.train else "forward"

    def describe(self) -> dict[str, Any]:
        return dict(mode=self.mode, batch_size=self.batch_size, img_size=self.img_size, device=self.device,
                    threads=self.threads, dtype=self.dtype, attention=self.attention or "as built",
                    compile=self.compile, channels_last=self.channels_last, rounds=self.rounds, warmup=self.warmup,
                    torch=torch.__version__)

    def autocast(self):
        if self.dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=DTYPES[self.dtype])

    def sync(self) -> Callable[[], None]:
        device = torch.device(self.device)
        if device.type == "cuda":
            return lambda: torch.cuda.synchronize(device)
        return lambda: None


def hooks_on(module: nn.Module) -> list[str]:
    """Names of the submodules that carry forward/backward hooks, and 'global' for module-wide hooks."""
    from torch.nn.modules import module as module_lib

    found = [name or "<root>" for name, sub in module.named_modules()
             if sub._forward_hooks or sub._forward_pre_hooks or sub._backward_hooks or sub._backward_pre_hooks]
    if (module_lib._global_forward_hooks or module_lib._global_forward_pre_hooks
            or module_lib._global_backward_hooks or module_lib._global_backward_pre_hooks):
        found.append("global")
    return found


def ensure_no_hooks(module: nn.Module, what: str) -> None:
    hooked = hooks_on(module)
    if hooked:
        raise HookedModuleError(f"{what} carries hooks on {', '.join(hooked[:5])}: a counter or probe was left on "
                                f"the module to be timed; count MACs on a deep copy")


def set_attention(module: nn.Module, attention: str | None) -> int:
    """Flip `fused_attn` on every submodule that has it (ours and timm's); returns how many were set."""
    if attention is None:
        return 0
    flips = [sub for sub in module.modules() if hasattr(sub, "fused_attn")]
    for sub in flips:
        sub.fused_attn = attention == "fused"
    return len(flips)


def prepare(module: nn.Module, settings: Settings, what: str) -> nn.Module:
    """The module as it will be timed: attention path, device, memory format, mode, compiled; hooks refused."""
    set_attention(module, settings.attention)
    module.to(settings.device)
    if settings.channels_last:
        module.to(memory_format=torch.channels_last)
    module.train(settings.train)
    ensure_no_hooks(module, what)
    return torch.compile(module) if settings.compile else module


def forward_step(module: Callable, x: torch.Tensor, settings: Settings) -> Callable[[], None]:
    def step():
        with torch.inference_mode(), settings.autocast():
            module(x)
    return step


def backward_step(module: Callable, params: nn.Module, x: torch.Tensor, settings: Settings) -> Callable[[], None]:
    """Forward + backward of sum(output), gradients of the parameters and of the input (as inside a network)."""
    x = x.detach().requires_grad_(True)

    def step():
        params.zero_grad(set_to_none=True)
        x.grad = None
        with settings.autocast():
            out = module(x)
        out.float().sum().backward()
    return step


def training_step(module: Callable, params: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  settings: Settings) -> Callable[[], None]:
    """The runner's optimisation step on a fixed batch: loss, backward, clipping, AdamW (timm's factory)."""
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2

    optimizer = create_optimizer_v2(params, opt="adamw", lr=TRAIN_LR, weight_decay=TRAIN_WEIGHT_DECAY)
    criterion = LabelSmoothingCrossEntropy(smoothing=TRAIN_SMOOTHING)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with settings.autocast():
            loss = criterion(module(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.parameters(), TRAIN_CLIP_GRAD)
        optimizer.step()
    return step


# ================================================================================== blocks
def variant_config(variant: str, img_size: int):
    """The SepViTConfig of preset `variant` built for `img_size` (at its own size if the config refuses it)."""
    from sepvit.config import PRESETS, SepViTConfig

    if variant not in PRESETS:
        close = difflib.get_close_matches(variant, list(PRESETS), n=3, cutoff=0.4)
        raise UsageError(f"unknown variant {variant!r}: use one of {', '.join(PRESETS)}"
                         + (f" (closest: {', '.join(close)})" if close else ""))
    cfg = SepViTConfig.preset(variant)
    try:
        return cfg.replace(img_size=img_size)
    except ValueError:
        return cfg


def benchmark_blocks(variant: str, settings: Settings, units: Sequence[str] = BLOCK_UNITS,
                     stages: Sequence[int] | None = None, reference: str = "swin_pair", *,
                     clock: Callable[[], float] = time.perf_counter,
                     log: Callable[[str], None] = lambda message: None) -> list[dict[str, Any]]:
    """Per stage of `variant` (1-based `stages`, default all): each unit of `analysis.units.stage_units` timed
    interleaved on a (batch, H, W, C) map; one row per stage with medians, IQRs, analytic MACs and ratios."""
    from analysis.complexity import block_comparison
    from analysis.units import stage_units

    if reference not in units:
        raise UsageError(f"--reference {reference} is not among the timed units ({', '.join(units)})")
    cfg = variant_config(variant, settings.img_size)
    shapes = block_comparison(variant, settings.img_size, measure=False)  # stage shapes + analytic MACs
    wanted = stages or [row["stage"] for row in shapes]
    unknown = sorted(set(wanted) - {row["stage"] for row in shapes})
    if unknown:
        raise UsageError(f"--stages {unknown}: {variant} has stages 1-{len(shapes)}")
    rows = []
    for shape in shapes:
        stage = shape["stage"]
        if stage not in wanted:
            continue
        h, w, dim = shape["height"], shape["width"], shape["dim"]
        torch.manual_seed(0)
        built = stage_units(cfg, stage - 1, h, w)
        x = torch.randn(settings.batch_size, h, w, dim, device=settings.device)
        steps = {}
        for name in units:
            if built.get(name) is None:
                continue
            module = built[name]
            timed = prepare(module, settings, f"stage {stage} {name}")
            steps[name] = (backward_step(timed, module, x, settings) if settings.train
                           else forward_step(timed, x, settings))
        log(f"stage {stage}: {h}x{w}x{dim}, timing {', '.join(steps)}")
        timings = time_interleaved(steps, settings.rounds, settings.warmup, clock=clock, sync=settings.sync())
        # a reference absent at this stage (e.g. sepvit_gsa_block at stage 1) leaves the stage without ratios
        ratios = round_ratios(timings.seconds, reference) if reference in timings.seconds else {}
        row: dict[str, Any] = dict(variant=variant, stage=stage, height=h, width=w, dim=dim, heads=shape["heads"],
                                   window=shape["window"], reference=reference, macs_convention=BLOCK_MACS)
        ref_macs = shape[f"{reference}_analytic"]
        for name in BLOCK_UNITS:  # every unit's keys, None where not timed: one schema for json/csv
            measured = name in timings.seconds
            ms = spread([1000 * s for s in timings.seconds[name]]) if measured else None
            macs = shape.get(f"{name}_analytic")
            row[f"{name}_ms"] = ms.median if ms else None
            row[f"{name}_ms_q1"] = ms.q1 if ms else None
            row[f"{name}_ms_q3"] = ms.q3 if ms else None
            ratio = spread(ratios[name]) if measured and ratios else None
            row[f"{name}_time_ratio"] = ratio.median if ratio else None
            row[f"{name}_time_ratio_q1"] = ratio.q1 if ratio else None
            row[f"{name}_time_ratio_q3"] = ratio.q3 if ratio else None
            row[f"{name}_macs"] = macs if measured else None
            row[f"{name}_macs_ratio"] = macs / ref_macs if measured and ratios and macs is not None and ref_macs else None
        row.update(settings.describe())
        rows.append(row)
    return rows


# ================================================================================== whole models
@dataclass
class ModelCandidate:
    """One model to time, with the counts made before timing (on copies)."""

    name: str
    module: nn.Module
    num_classes: int
    in_chans: int = 3
    params: int = 0
    macs: int | None = None
    macs_analytic: int | None = None
    notes: list[str] = field(default_factory=list)


def parse_model_spec(spec: str) -> tuple[str, list[str]]:
    """'sepvit_tiny:block_pattern=swin:gsa=false' -> ('sepvit_tiny', ['block_pattern=swin', 'gsa=false'])."""
    name, *pairs = spec.split(":")
    return name.strip(), [p for p in pairs if p.strip()]


def _check_model_name(name: str) -> None:
    import timm

    import sepvit  # noqa: F401  (registers sepvit_* with timm)

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=4, cutoff=0.6)
        raise UsageError(f"unknown model {name!r}" + (f"; closest: {', '.join(close)}" if close
                                                       else "; see timm.list_models() or the sepvit_* presets"))


def build_candidate(spec: str, img_size: int, common_kwargs: Sequence[str] = (), *, count_macs: bool = True,
                    log: Callable[[str], None] = lambda message: None) -> ModelCandidate:
    """Build `spec` (NAME[:field=value]...) for `img_size`; count MACs on deep copies, never on the module."""
    import timm

    from sepvit.config import PRESETS, SepViTConfig
    from workbench.fields import FieldError, parse_assignments

    name, pairs = parse_model_spec(spec)
    _check_model_name(name)
    ours = name in PRESETS
    pairs = [*common_kwargs, *pairs] if ours else pairs
    if pairs and not ours:
        raise UsageError(f"{spec}: field=value overrides apply to the workbench's sepvit_* models only")
    try:
        kwargs = parse_assignments(SepViTConfig, pairs) if ours else {}
    except FieldError as error:
        raise UsageError(f"{spec}: {error}") from None
    torch.manual_seed(0)
    try:
        if ours:
            cfg = SepViTConfig.preset(name, **kwargs).replace(img_size=img_size)
            module = timm.create_model(name, **{**kwargs, "img_size": img_size})
        else:
            try:
                module = timm.create_model(name, img_size=img_size)
            except TypeError:  # the model takes any size at run time and no img_size argument
                module = timm.create_model(name)
    except (TypeError, ValueError, RuntimeError, AssertionError) as error:
        raise UsageError(f"{spec} cannot be built for {img_size} px: {' '.join(str(error).split())}") from None
    module.eval()
    candidate = ModelCandidate(spec, module, int(getattr(module, "num_classes", 1000)),
                               int(getattr(module, "in_chans", 3) or 3),
                               params=sum(p.numel() for p in module.parameters()))
    if count_macs:
        from analysis.counters import fvcore_count

        log(f"{spec}: counting MACs (fvcore, on a deep copy)")
        candidate.macs = fvcore_count(copy.deepcopy(module),
                                      torch.zeros(1, candidate.in_chans, img_size, img_size)).total
        if ours:
            from analysis.complexity import model_macs

            candidate.macs_analytic = int(model_macs(cfg, img_size).paper)
    return candidate


def benchmark_models(candidates: Sequence[ModelCandidate], settings: Settings, reference: str | None = None, *,
                     clock: Callable[[], float] = time.perf_counter,
                     log: Callable[[str], None] = lambda message: None) -> list[dict[str, Any]]:
    """Whole models timed interleaved on one random batch; one row per model. `reference`: default the first."""
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise UsageError(f"each model may be named once (got {', '.join(names)})")
    reference = reference or names[0]
    if reference not in names:
        raise UsageError(f"--reference {reference} is not among --models ({', '.join(names)})")
    b, s = settings.batch_size, settings.img_size
    steps = {}
    torch.manual_seed(0)
    for c in candidates:
        x = torch.randn(b, c.in_chans, s, s, device=settings.device)
        if settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        timed = prepare(c.module, settings, c.name)
        if settings.train:
            y = torch.randint(0, c.num_classes, (b,), device=settings.device)
            steps[c.name] = training_step(timed, c.module, x, y, settings)
        else:
            steps[c.name] = forward_step(timed, x, settings)
    log(f"timing {', '.join(names)}: {settings.rounds} rounds after {settings.warmup} warm-up rounds")
    timings = time_interleaved(steps, settings.rounds, settings.warmup, clock=clock, sync=settings.sync())
    ratios = round_ratios(timings.seconds, reference)
    rows = []
    for c in candidates:
        seconds = timings.seconds[c.name]
        img_s = spread([b / t for t in seconds])
        ms = spread([1000 * t for t in seconds])
        speed = spread([1 / r for r in ratios[c.name]])
        rows.append(dict(
            model=c.name, img_per_s=img_s.median, img_per_s_q1=img_s.q1, img_per_s_q3=img_s.q3,
            ms_per_batch=ms.median, ms_per_batch_q1=ms.q1, ms_per_batch_q3=ms.q3, reference=reference,
            time_ratio=statistics.median(ratios[c.name]),
            speed_ratio=speed.median, speed_ratio_q1=speed.q1, speed_ratio_q3=speed.q3,
            params=c.params, macs=c.macs, macs_analytic=c.macs_analytic,
            macs_convention=MODEL_MACS if c.macs is not None else None, **settings.describe(),
        ))
    return rows


def latency_ms(module: nn.Module, in_chans: int, settings: Settings) -> Spread:
    """One module's forward time per batch of `settings.batch_size` (ms): median and IQR of `settings.rounds` calls."""
    b, s = settings.batch_size, settings.img_size
    x = torch.randn(b, in_chans, s, s, device=settings.device)
    if settings.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    step = forward_step(prepare(module, settings, "the timed module"), x, settings)
    timings = time_interleaved({"module": step}, settings.rounds, settings.warmup, sync=settings.sync())
    return spread([1000 * t for t in timings.seconds["module"]])


# ================================================================================== output
def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio_iqr(row: dict[str, Any], key: str) -> str:
    if row.get(f"{key}_q1") is None:
        return "-"
    return f"[{row[f'{key}_q1']:.2f}, {row[f'{key}_q3']:.2f}]"


def _header(rows: list[dict[str, Any]], what: str) -> str:
    r = rows[0]
    return (f"{what}, {r['mode']}, batch {r['batch_size']}, {r['img_size']} px, {r['device']}, {r['threads']} threads, "
            f"{r['dtype']}, attention {r['attention']}{', compiled' if r['compile'] else ''}"
            f"{', channels-last' if r['channels_last'] else ''}; {r['rounds']} interleaved rounds (order rotated) after "
            f"{r['warmup']} warm-up; median [IQR]; ratios: median over rounds of the same-round ratio to {r['reference']}")


def format_block_table(rows: list[dict[str, Any]]) -> str:
    from analysis.units import TITLES

    ref = rows[0]["reference"]
    lines = [_header(rows, f"blocks of {rows[0]['variant']}"),
             f"MACs: {BLOCK_MACS}",
             f"{'stage':<6}{'map':<13}{'unit':<34}{'ms':>9} {'IQR':>19} {'MMACs':>9} {'time/' + ref[:10]:>16} "
             f"{'IQR':>14} {'MACs/' + ref[:10]:>16}"]
    for row in rows:
        shape = f"{row['height']}x{row['width']}x{row['dim']}"
        for name in BLOCK_UNITS:
            if row.get(f"{name}_ms") is None:
                continue
            iqr = f"[{_fmt(row[f'{name}_ms_q1'])}, {_fmt(row[f'{name}_ms_q3'])}]"
            macs = row[f"{name}_macs"]
            lines.append(f"{row['stage']:<6}{shape:<13}{TITLES.get(name, name):<34}{row[f'{name}_ms']:9.2f} {iqr:>19} "
                         f"{_fmt(macs and macs / 1e6, 1):>9} {_fmt(row[f'{name}_time_ratio']):>16} "
                         f"{_ratio_iqr(row, f'{name}_time_ratio'):>14} {_fmt(row[f'{name}_macs_ratio']):>16}")
    return "\n".join(lines)


def format_model_table(rows: list[dict[str, Any]]) -> str:
    ref = rows[0]["reference"]
    lines = [_header(rows, "whole models"),
             f"MACs: {MODEL_MACS}; analytic: the paper's formulas (workbench models)",
             f"{'model':<40}{'img/s':>8} {'IQR':>17} {'ms/batch':>9} {'speed vs ' + ref[:16]:>26} {'IQR':>14} "
             f"{'GMACs':>7} {'analytic':>9} {'params (M)':>11}"]
    for r in rows:
        iqr = f"[{r['img_per_s_q1']:.1f}, {r['img_per_s_q3']:.1f}]"
        lines.append(f"{r['model']:<40}{r['img_per_s']:8.1f} {iqr:>17} {r['ms_per_batch']:9.1f} "
                     f"{r['speed_ratio']:26.2f} {_ratio_iqr(r, 'speed_ratio'):>14} "
                     f"{_fmt(r['macs'] and r['macs'] / 1e9, 3):>7} "
                     f"{_fmt(r['macs_analytic'] and r['macs_analytic'] / 1e9, 3):>9} {r['params'] / 1e6:11.2f}")
    return "\n".join(lines)


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().rstrip("\n")


def render(rows: list[dict[str, Any]], kind: str, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=1)
    if fmt == "csv":
        return to_csv(rows)
    return format_block_table(rows) if kind == "blocks" else format_model_table(rows)


# ================================================================================== MLflow
def log_to_mlflow(rows: list[dict[str, Any]], kind: str, tracking_uri: str, experiment: str,
                  command: Sequence[str], table: str) -> str:
    """One parent run (settings as params, results.json and table.txt as artifacts) with a child run per row
    (stage or model: numbers as metrics, text as params). Returns the parent run id."""
    from workbench.tracking import Tracker, environment_params

    tracker = Tracker(tracking_uri, experiment)
    settings = {k: rows[0][k] for k in Settings().describe()}
    parent = tracker.start_run(f"benchmark-{kind}", tags={"kind": f"benchmark-{kind}"})
    tracker.log_params(parent, {**{f"bench.{k}": v for k, v in settings.items()}, "bench.command": " ".join(command),
                                **environment_params()})
    for row in rows:
        label = row["model"] if kind == "models" else f"stage{row['stage']}"
        child = tracker.start_run(label, parent_run_id=parent, tags={"kind": f"benchmark-{kind}"})
        numbers = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        texts = {k: v for k, v in row.items() if k not in numbers and v is not None}
        tracker.log_params(child, texts)
        tracker.log_metrics(child, numbers, step=0)
        tracker.end_run(child)
    tracker.log_files(parent, [("results.json", json.dumps(rows, indent=1)), ("table.txt", table)])
    tracker.end_run(parent)
    return parent


# ================================================================================== command line
def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="Models: NAME or NAME:field=value[:field=value...] (SepViTConfig fields, typed as "
                                  "everywhere in the workbench; sepvit_* models only), e.g. "
                                  "sepvit_tiny:block_pattern=swin sepvit_tiny:gsa=false:window_token=zero. "
                                  "--model-kwargs applies its fields to every sepvit_* model.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--models", nargs="+", metavar="MODEL", help="whole models (timm names or sepvit_* presets)")
    what.add_argument("--blocks", action="store_true", help="per-stage units of --variant (SepViT block vs timm pairs)")
    parser.add_argument("--variant", default="sepvit_tiny", help="preset whose stages --blocks uses (sepvit_tiny)")
    parser.add_argument("--units", nargs="+", choices=BLOCK_UNITS, default=None, metavar="UNIT",
                        help=f"--blocks units to time (default all: {', '.join(BLOCK_UNITS)})")
    parser.add_argument("--stages", nargs="+", type=int, default=None, metavar="N", help="--blocks stages (1-based)")
    parser.add_argument("--reference", default=None,
                        help="what ratios divide by: a unit (default swin_pair) or a model (default the first)")
    parser.add_argument("--model-kwargs", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="SepViTConfig fields for every sepvit_* model in --models")
    parser.add_argument("--img-size", type=int, default=224, metavar="PX", help="square input side (224)")
    parser.add_argument("-b", "--batch-size", type=int, default=8, help="images per call (8)")
    parser.add_argument("--train", action="store_true",
                        help="blocks: forward + backward; models: the runner's step (loss, backward, clip, AdamW)")
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
                    compile=args.compile, channels_last=args.channels_last, rounds=args.rounds, warmup=args.warmup)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = list(sys.argv if argv is None else [PROG, *argv])
    log = (lambda message: print(f"[{PROG}] {message}", file=sys.stderr, flush=True))
    try:
        settings = settings_from_args(args)
        tracking_uri = None
        if args.mlflow:
            from workbench.tracking import TrackingError, check_tracking_uri, default_tracking_uri

            tracking_uri = args.tracking_uri or default_tracking_uri(args.output)
            try:
                check_tracking_uri(tracking_uri)
            except TrackingError as error:
                raise UsageError(str(error)) from None
        torch.set_num_threads(settings.threads)
        if args.blocks:
            kind = "blocks"
            rows = benchmark_blocks(args.variant, settings, args.units or BLOCK_UNITS, args.stages,
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
