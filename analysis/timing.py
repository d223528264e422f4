"""Timing on a shared, noisy machine: candidates interleaved round by round, medians with their spread.

Conventions (timm's benchmark.py, plus what a shared, noisy machine needs):
  - a fixed thread count (the caller's, reported), warm-up calls before timing, `torch.inference_mode()` for
    forward, CUDA synchronised before and after every timed call;
  - every candidate runs once per round, in an order rotated every round (round r starts with candidate
    r mod n), so that machine noise hits all candidates alike;
  - each figure is the median over rounds, with the inter-quartile range [q1, q3];
  - ratios to the reference are computed round by round (candidate / reference in the same round) and the
    median of those is reported: a slow spell that hits one round hits both sides of its ratio.
Before timing, every timed module is checked for forward/backward hooks (a counter's leftovers) and refused if it
has any. This is the one timing harness: the benchmark command, the search's latency objective, the call's cost
columns and notebook 05 time through it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import create_optimizer_v2
from torch import nn
from torch.nn.modules import module as module_lib

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


# ================================================================================== how a candidate runs
@dataclass(frozen=True)
class TrainStep:
    """The optimisation step a whole model is timed with: the caller's training settings, never copies of them
    (the runner's are `experiments.train_config.TrainConfig`'s; `of` reads them by name from such an object)."""

    opt: str  # a timm optimiser name
    lr: float
    weight_decay: float
    smoothing: float  # label smoothing of the cross-entropy
    clip_grad: float | None  # max gradient norm; None: no clipping

    @classmethod
    def of(cls, config: Any) -> "TrainStep":
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


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
    step: TrainStep | None = None  # how whole models train when `train` (blocks: forward + backward only)

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
    """One optimisation step on a fixed batch as `settings.step` says: label-smoothed loss, backward, clipping,
    the optimiser from timm's factory."""
    recipe = settings.step
    if recipe is None:
        raise ValueError("timing a training step needs its settings: Settings(step=TrainStep.of(train_config))")
    optimizer = create_optimizer_v2(params, opt=recipe.opt, lr=recipe.lr, weight_decay=recipe.weight_decay)
    criterion = LabelSmoothingCrossEntropy(smoothing=recipe.smoothing)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with settings.autocast():
            loss = criterion(module(x), y)
        loss.backward()
        if recipe.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(params.parameters(), recipe.clip_grad)
        optimizer.step()
    return step


def latency_ms(module: nn.Module, in_chans: int, settings: Settings) -> Spread:
    """One module's forward time per batch of `settings.batch_size` (ms): median and IQR of `settings.rounds` calls."""
    b, s = settings.batch_size, settings.img_size
    x = torch.randn(b, in_chans, s, s, device=settings.device)
    if settings.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    step = forward_step(prepare(module, settings, "the timed module"), x, settings)
    timings = time_interleaved({"module": step}, settings.rounds, settings.warmup, sync=settings.sync())
    return spread([1000 * t for t in timings.seconds["module"]])

