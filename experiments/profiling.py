"""Where one training step of the runner goes: phases by wall clock, model compute by operator kind, top operators.

    python experiments/profiling.py                               # the default ablation: sepvit_nano_32, batch 64, 32 px
    python experiments/profiling.py --model-kwargs dssa=false     # the local-only model of `ablate.py --no-dssa`
    python experiments/profiling.py --steps 20 --threads 2 --top 30 --format json

The step is the runner's (`experiments/runner/engine.py`): the next batch from a DataLoader over the built-in
synthetic set (`experiments.data.build_datasets`, generated on the main thread with the runner's default
`workers=0`), forward, label-smoothed cross-entropy, the finite-loss check, the per-step scheduler update,
backward, gradient clipping, AdamW from timm's factory, and the per-step metrics (`.item()` calls). Settings
come from `experiments.train_config.TrainConfig()` defaults.

Three measurements, all after warm-up steps:
  1. wall clock without the profiler: `--steps` steps, each phase timed with perf_counter; the medians give
     the step's split and the images/s the runner's users see (the runner also runs tqdm per step, not here);
  2. torch.profiler (CPU) over `--profile-steps` steps: every operator's self CPU time, attributed to its phase
     (the `phase:` ranges below) and, within forward and backward, to a kind (attention, Linear matmuls,
     reshapes/copies, padding/cat/crop, norms, ...). Backward operators are classified by the autograd node that
     runs them (e.g. SliceBackward0 -> padding/cat/crop), forward ones by their own name. "outside operators" is
     a phase's wall time minus the time inside its top-level operators: Python, the autograd engine and the
     profiler's own overhead (so it over-states Python's share; compare with measurement 1).
  3. (section 4 of the output, after the top operators) the profiled matmuls (mm, addmm, bmm: Linear layers and
     attention) against this machine: every recorded shape and memory layout timed on its own, with the caches
     warm and flushed, and a large square matmul at the same thread count. Step time between warm and cold means
     our code adds nothing to those kernels; alone far below the large matmul's rate means the shapes themselves
     (thin Linears, 17-token windows) are slow.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

if __package__ in (None, ""):  # `python experiments/profiling.py`: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from workbench.cli import OneLineParser, fail
from workbench.quiet import native_stderr_silenced

PROG = "sepvit-profile"
PHASES = ("data", "forward", "checks", "backward", "clip_grad", "optimizer", "metrics")
PHASE_TITLES = {
    "data": "data loading (DataLoader, synthetic images generated on the main thread)",
    "forward": "forward + loss",
    "checks": "finite-loss check + scheduler update",
    "backward": "backward",
    "clip_grad": "gradient clipping",
    "optimizer": "optimiser (zero_grad + AdamW step)",
    "metrics": "per-step metrics (.item() calls)",
}
# Kinds of model compute, first match wins (on the autograd node's name in backward, the op's name in forward).
KINDS = (
    ("loss", ("log_softmax", "nll_loss", "cross_entropy", "logsoftmax", "nllloss")),
    ("attention (SDPA, softmax, attention matmuls)", ("scaled_dot_product", "flash_attention", "efficient_attention",
                                                      "softmax", "bmm")),
    ("Linear matmuls", ("addmm", "aten::mm", "mmbackward", "linear", "matmul")),
    ("conv (OPE, CPE)", ("conv",)),
    ("norms", ("layer_norm", "layernorm")),
    ("padding / cat / crop / split", ("pad", "cat", "slice", "select", "narrow", "split", "unbind", "stack", "roll",
                                      "index")),
    ("reshape / copy", ("copy", "clone", "contiguous", "reshape", "view", "permute", "transpose", "expand", "strided",
                        "squeeze", "empty_like", "alias", "aten::to")),
    ("GELU", ("gelu",)),
)
OTHER_KIND = "elementwise / other (adds, means, fills, ...)"
OUTSIDE = "outside operators (Python, autograd engine, profiler)"
NODE_PREFIX = "autograd::engine::evaluate_function: "


def kind_of(name: str) -> str:
    """The kind of model compute an operator or autograd node name belongs to."""
    key = name.lower().replace("_", "")  # aten names have underscores, autograd node names none
    if key in ("aten::t", "tbackward0"):  # transpose of a weight: too short a name to match as a substring
        return "reshape / copy"
    for kind, needles in KINDS:
        if any(n.replace("_", "") in key for n in needles):
            return kind
    return OTHER_KIND


# ================================================================================== the runner's step
@dataclass
class RunnerStep:
    """The runner's training step, split into named phases; `run(phase_fn)` calls phase_fn(name, fn) per phase."""

    model: torch.nn.Module
    batches: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    optimizer: Any
    scheduler: Any
    criterion: Any
    clip_grad: float | None
    updates: int = 0
    state: dict = field(default_factory=dict)

    def run(self, phase: Callable[[str, Callable[[], Any]], Any]) -> int:
        s = self.state
        s["x"], s["y"] = phase("data", self.batches)

        def forward():
            s["out"] = self.model(s["x"])
            s["loss"] = self.criterion(s["out"], s["y"])

        def checks():
            if not torch.isfinite(s["loss"]).item():
                raise FloatingPointError("non-finite loss")
            self.scheduler.step_update(num_updates=self.updates)

        def optimizer():
            self.optimizer.step()

        def metrics():
            s["loss_sum"] = s["loss"].item() * s["x"].shape[0]
            s["correct"] = (s["out"].argmax(-1) == s["y"]).sum().item()

        phase("forward", forward)
        phase("checks", checks)
        phase("optimizer", lambda: self.optimizer.zero_grad(set_to_none=True))
        phase("backward", lambda: s["loss"].backward())
        if self.clip_grad is not None:
            phase("clip_grad", lambda: torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad))
        phase("optimizer", optimizer)
        phase("metrics", metrics)
        self.updates += 1
        return s["x"].shape[0]


def build_runner_step(model_name: str = "sepvit_nano_32", batch_size: int | None = None, img_size: int | None = None,
                      model_kwargs: dict[str, Any] | None = None, train_size: int | None = None) -> RunnerStep:
    """The runner's model, data, optimiser, scheduler and loss for `model_name` (TrainConfig defaults)."""
    import timm
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from torch.utils.data import DataLoader

    import sepvit  # noqa: F401  (registers sepvit_* with timm)
    from experiments.data import build_datasets
    from experiments.train_config import TrainConfig

    cfg = TrainConfig()
    batch_size = batch_size or cfg.batch_size
    train, _, info = build_datasets(cfg.dataset, cfg.data_dir, img_size, train_size or cfg.train_size, cfg.val_size,
                                    seed=cfg.data_seed)
    torch.manual_seed(cfg.seed)
    model = timm.create_model(model_name, **{**(model_kwargs or {}), "num_classes": info.num_classes,
                                             "in_chans": info.in_chans, "img_size": info.img_size})
    model.train()
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=cfg.workers,
                        generator=torch.Generator().manual_seed(cfg.seed), drop_last=False)
    optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler, _ = create_scheduler_v2(optimizer, sched=cfg.sched, num_epochs=cfg.epochs,
                                       warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr,
                                       step_on_epochs=False, updates_per_epoch=len(loader))
    iterator = iter(loader)

    def batches():
        nonlocal iterator
        try:
            return next(iterator)
        except StopIteration:  # next epoch
            iterator = iter(loader)
            return next(iterator)

    return RunnerStep(model, batches, optimizer, scheduler, LabelSmoothingCrossEntropy(smoothing=cfg.smoothing),
                      cfg.clip_grad)


# ================================================================================== measurements
def wall_clock(step: RunnerStep, steps: int, clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Per phase, the median over `steps` steps of its wall time (ms); the step's median and images/s."""
    per_phase: dict[str, list[float]] = defaultdict(list)
    totals, images = [], 0
    for _ in range(steps):
        spent: dict[str, float] = defaultdict(float)

        def phase(name, fn, spent=spent):
            start = clock()
            result = fn()
            spent[name] += clock() - start
            return result

        start = clock()
        images = step.run(phase)
        totals.append(clock() - start)
        for name in PHASES:
            per_phase[name].append(1000 * spent.get(name, 0.0))
    total_ms = 1000 * statistics.median(totals)
    return dict(step_ms=total_ms, img_per_s=images / (total_ms / 1000), batch_size=images,
                phases_ms={name: statistics.median(values) for name, values in per_phase.items()})


def profile_steps(step: RunnerStep, steps: int) -> torch.profiler.profile:
    from torch.profiler import ProfilerActivity, profile, record_function

    def phase(name, fn):
        with record_function(f"phase:{name}"):
            return fn()

    with native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step.run(phase)
    return prof


def breakdown(prof: torch.profiler.profile, steps: int) -> dict[str, Any]:
    """Phase wall times, model-compute kinds (forward + backward) and top operators, in ms per step."""
    events = [e for e in prof.events() if e.device_type.name == "CPU"]
    phase_ms: dict[str, float] = defaultdict(float)
    inside_ms: dict[str, float] = defaultdict(float)  # time inside top-level operators, per phase
    kind_ms: dict[str, float] = defaultdict(float)
    ops: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.name.startswith("phase:"):
            phase_ms[e.name[6:]] += e.cpu_time_total / 1000
            continue
        if e.name.startswith(NODE_PREFIX) or e.name.startswith("ProfilerStep"):
            continue
        ancestors, parent = [], e.cpu_parent
        while parent is not None:
            ancestors.append(parent.name)
            parent = parent.cpu_parent
        phase = next((a[6:] for a in ancestors if a.startswith("phase:")), None)
        if phase is None:
            continue
        self_ms = e.self_cpu_time_total / 1000
        ops[e.name][0] += self_ms
        ops[e.name][1] += 1
        if not ancestors or ancestors[0].startswith("phase:") or ancestors[0].startswith(NODE_PREFIX):
            inside_ms[phase] += e.cpu_time_total / 1000  # a top-level operator of the phase
        if phase in ("forward", "backward"):
            node = next((a[len(NODE_PREFIX):] for a in ancestors if a.startswith(NODE_PREFIX)), None)
            kind_ms[kind_of(node or e.name)] += self_ms
    model_phases = ("forward", "backward")
    kind_ms[OUTSIDE] = sum(max(phase_ms[p] - inside_ms[p], 0.0) for p in model_phases)
    top = sorted(ops.items(), key=lambda item: -item[1][0])
    per_step = 1 / steps
    return dict(
        phases_ms={p: phase_ms.get(p, 0.0) * per_step for p in PHASES},
        kinds_ms={k: v * per_step for k, v in sorted(kind_ms.items(), key=lambda item: -item[1])},
        top_ops=[dict(op=name, self_ms=ms * per_step, calls_per_step=calls * per_step) for name, (ms, calls) in top],
    )


# ================================================================================== matmuls against this machine
MATMULS = {"aten::mm": torch.mm, "aten::addmm": torch.addmm, "aten::bmm": torch.bmm}  # profiler name -> operator


def matmul_flops(op: str, shapes: Sequence[Sequence[int]]) -> int:
    """FLOPs (2 per multiply-add) of one mm (M,K)x(K,N), addmm (bias, (M,K), (K,N)) or bmm (B,M,K)x(B,K,N)."""
    a, b = (shapes[1], shapes[2]) if op == "aten::addmm" else (shapes[0], shapes[1])
    batch = a[0] if op == "aten::bmm" else 1
    return 2 * batch * a[-2] * a[-1] * b[-1]


def _operands(shapes, strides) -> list[torch.Tensor]:
    """Random tensors with the recorded shapes and strides (the same memory layout as in the step)."""
    tensors = []
    for shape, stride in zip(shapes, strides):
        span = 1 + sum((n - 1) * st for n, st in zip(shape, stride))
        tensors.append(torch.randn(span).as_strided(shape, stride))
    return tensors


_CACHE_FLUSH_BYTES = 64 << 20  # larger than this machine's caches: operands come from memory, as in the step


def time_alone(op: str, shapes, strides, repeats: int, cold: bool = False,
               clock: Callable[[], float] = time.perf_counter) -> float:
    """Median ms of one call of a matmul operator on its own, with the step's shapes and memory layout; `cold`
    flushes the caches before each call. In the step an operand is sometimes just written (warm), sometimes
    written long before (cold): the step's time belongs between the two if calling the kernel costs nothing more."""
    fn = MATMULS[op]
    args = _operands(shapes, strides)
    flush = torch.empty(_CACHE_FLUSH_BYTES // 4) if cold else None
    fn(*args)  # warm-up
    times = []
    for _ in range(repeats):
        if flush is not None:
            flush.fill_(1.0)
        start = clock()
        fn(*args)
        times.append(clock() - start)
    return 1000 * statistics.median(times)


def _gflops(gflop: float, ms: float) -> float:
    return gflop / (ms / 1000) if ms > 0 else 0.0


def matmul_headroom(prof: torch.profiler.profile, steps: int, repeats: int = 10,
                    reference_size: int = 1024) -> dict[str, Any]:
    """How fast the step's matmuls are against what this machine does with the same shapes alone, and with a large
    square matmul: separates our calling overhead (step vs alone) from the kernels' limit on small shapes
    (alone vs large). Times in ms per step, rates in GFLOP/s (2 FLOPs per multiply-add)."""
    calls: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0])
    for e in prof.events():
        if e.name in MATMULS and e.structured_input_shapes:
            tensors = 3 if e.name == "aten::addmm" else 2  # addmm also records its beta and alpha
            shapes = tuple(tuple(x) for x in e.structured_input_shapes[:tensors])
            strides = tuple(tuple(x) for x in e.structured_input_strides[:tensors])
            calls[(e.name, shapes, strides)][0] += e.self_cpu_time_total / 1000
            calls[(e.name, shapes, strides)][1] += 1
    rows = []
    for (op, shapes, strides), (in_step_ms, count) in calls.items():
        warm, cold = (time_alone(op, shapes, strides, repeats, cold=c) for c in (False, True))
        gflop = matmul_flops(op, shapes) * count / steps / 1e9
        rows.append(dict(op=op, shapes=[list(x) for x in shapes], calls_per_step=count / steps,
                         in_step_ms=in_step_ms / steps, alone_ms=warm * count / steps,
                         alone_cold_ms=cold * count / steps, gflop=gflop,
                         in_step_gflops=_gflops(gflop, in_step_ms / steps)))
    rows.sort(key=lambda r: -r["in_step_ms"])
    n = reference_size
    large_ms = time_alone("aten::mm", ((n, n), (n, n)), ((n, 1), (n, 1)), max(3, repeats // 2))
    totals = {key: sum(r[key] for r in rows) for key in ("in_step_ms", "alone_ms", "alone_cold_ms", "gflop")}
    return dict(shapes=rows, **totals, in_step_gflops=_gflops(totals["gflop"], totals["in_step_ms"]),
                alone_gflops=_gflops(totals["gflop"], totals["alone_ms"]),
                alone_cold_gflops=_gflops(totals["gflop"], totals["alone_cold_ms"]),
                large_gflops=_gflops(2 * n ** 3 / 1e9, large_ms), reference_size=n)


def profile_runner(model: str = "sepvit_nano_32", batch_size: int | None = None, img_size: int | None = None,
                   model_kwargs: dict[str, Any] | None = None, steps: int = 10, profile_steps_: int = 3,
                   warmup: int = 3, train_size: int | None = None) -> dict[str, Any]:
    step = build_runner_step(model, batch_size, img_size, model_kwargs, train_size)
    for _ in range(warmup):
        step.run(lambda name, fn: fn())
    report = dict(model=model, model_kwargs={k: str(v) for k, v in (model_kwargs or {}).items()},
                  threads=torch.get_num_threads(), steps=steps, profile_steps=profile_steps_,
                  wall=wall_clock(step, steps))
    prof = profile_steps(step, profile_steps_)
    report["profile"] = breakdown(prof, profile_steps_)
    report["matmuls"] = matmul_headroom(prof, profile_steps_)
    return report


# ================================================================================== output
def format_report(report: dict[str, Any], top: int = 20) -> str:
    wall, prof = report["wall"], report["profile"]
    kwargs = " ".join(f"{k}={v}" for k, v in report["model_kwargs"].items())
    lines = [f"one training step of {report['model']}{' ' + kwargs if kwargs else ''}: batch {wall['batch_size']}, "
             f"{report['threads']} threads, the runner's step (experiments/runner/engine.py) on its synthetic data",
             "",
             f"1. wall clock without the profiler, median of {report['steps']} steps: {wall['step_ms']:.1f} ms per step "
             f"= {wall['img_per_s']:.0f} img/s",
             f"   {'phase':<62}{'ms':>8}{'share':>8}"]
    for name in PHASES:
        ms = wall["phases_ms"][name]
        lines.append(f"   {PHASE_TITLES[name]:<62}{ms:8.2f}{ms / wall['step_ms']:8.1%}")
    model_ms = sum(prof["kinds_ms"].values())
    lines += ["", f"2. torch.profiler (CPU), {report['profile_steps']} steps: forward + backward by kind "
                  f"({model_ms:.1f} ms per step under the profiler; self CPU time)",
              f"   {'kind':<62}{'ms':>8}{'share':>8}"]
    for kind, ms in prof["kinds_ms"].items():
        lines.append(f"   {kind:<62}{ms:8.2f}{ms / model_ms:8.1%}")
    lines += ["", "   phases under the profiler: " + ", ".join(f"{p} {ms:.1f} ms" for p, ms in prof["phases_ms"].items()),
              "", f"3. top {top} operators by self CPU time (all phases, ms per step)",
              f"   {'operator':<62}{'ms':>8}{'calls':>8}"]
    for op in prof["top_ops"][:top]:
        lines.append(f"   {op['op'][:62]:<62}{op['self_ms']:8.2f}{op['calls_per_step']:8.0f}")
    mm = report.get("matmuls")
    if mm:
        n = mm["reference_size"]
        model_ms = sum(prof["kinds_ms"].values())
        lines += ["", f"4. matmuls (mm, addmm, bmm) against this machine: {mm['gflop']:.2f} GFLOP per step "
                      f"({len(mm['shapes'])} shapes)",
                  f"   in the step          {mm['in_step_ms']:8.1f} ms  {mm['in_step_gflops']:6.1f} GFLOP/s  "
                  f"({mm['in_step_ms'] / model_ms:.0%} of forward + backward)",
                  f"   same shapes alone    {mm['alone_ms']:8.1f} ms  {mm['alone_gflops']:6.1f} GFLOP/s  "
                  "(the step's shapes and memory layouts, each called on its own, caches warm)",
                  f"   ... caches flushed   {mm['alone_cold_ms']:8.1f} ms  {mm['alone_cold_gflops']:6.1f} GFLOP/s  "
                  "(operands read from memory)",
                  f"   a {n}x{n} matmul   {'':8} {mm['large_gflops']:10.1f} GFLOP/s  (what these threads do on a "
                  "large square matmul)",
                  f"   {'operator':<10}{'shapes':<44}{'calls':>6}{'step ms':>9}{'warm ms':>9}{'cold ms':>9}"
                  f"{'GFLOP/s':>9}"]
        for row in mm["shapes"][:top]:
            shapes = " ".join("x".join(map(str, sh)) for sh in row["shapes"])
            lines.append(f"   {row['op'][6:]:<10}{shapes[:43]:<44}{row['calls_per_step']:6.0f}{row['in_step_ms']:9.2f}"
                         f"{row['alone_ms']:9.2f}{row['alone_cold_ms']:9.2f}{row['in_step_gflops']:9.1f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sepvit_nano_32", help="sepvit_* preset (the runner's default)")
    parser.add_argument("--model-kwargs", nargs="*", default=[], metavar="FIELD=VALUE", help="SepViTConfig fields")
    parser.add_argument("-b", "--batch-size", type=int, default=None, help="default: the runner's (64)")
    parser.add_argument("--img-size", type=int, default=None, help="default: the dataset's (32)")
    parser.add_argument("--train-size", type=int, default=None, help="training images (default: the runner's 4000)")
    parser.add_argument("--steps", type=int, default=10, help="wall-clock steps without the profiler (10)")
    parser.add_argument("--profile-steps", type=int, default=3, help="steps under torch.profiler (3)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--top", type=int, default=20, help="operators listed (20)")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sepvit.config import PRESETS, SepViTConfig
    from workbench.fields import FieldError, parse_assignments

    for flag in ("batch_size", "img_size", "train_size", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            return fail(PROG, f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
    if min(args.steps, args.profile_steps) < 1 or args.warmup < 0 or args.top < 0:
        return fail(PROG, "--steps and --profile-steps must be 1 or more, --warmup and --top 0 or more")
    if args.model not in PRESETS:
        return fail(PROG, f"unknown model {args.model!r}: the runner trains the presets {', '.join(PRESETS)}")
    try:
        kwargs = parse_assignments(SepViTConfig, args.model_kwargs)
        SepViTConfig.preset(args.model, **kwargs)
    except (FieldError, ValueError, TypeError) as error:
        return fail(PROG, f"--model-kwargs: {error}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        report = profile_runner(args.model, args.batch_size, args.img_size, kwargs, args.steps, args.profile_steps,
                                args.warmup, args.train_size)
    except ValueError as error:  # the data or the config refuse the size
        return fail(PROG, str(error))
    print(json.dumps(report, indent=1) if args.format == "json" else format_report(report, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
