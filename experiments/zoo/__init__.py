"""The trained models the notebooks compare: runner runs at one shared budget, trained once and then reused.

    models = zoo.trained(["sepvit", "swin", "local-only"])           # name -> ZooModel (seed 0)
    seeds = zoo.trained_seeds(["sepvit", "swin"], seeds=(0, 1, 2))   # name -> [ZooModel per seed]
    seeds = zoo.trained_seeds({"sepvit": (0, 1, 2), "local-only": (0,)})  # a notebook's ZOO_LOOKUP
    zoo.missing({"sepvit": (0, 1, 2)})                               # [(name, seed)] a lookup would train
    python -m experiments.zoo --lookup '{"sepvit": [0, 1, 2]}'       # the same from a shell (exit 1: some missing)
    python -m experiments.zoo sepvit swin --seeds 0 1 2 --train      # train what is missing, now

Every model is an ordinary runner run (`experiments.runner.plan_call` with the configuration changes in `ZOO`,
one seed per run, the runner's default training budget unless `smoke`), logged to the experiment `notebook-models` of a store (default the
repository's `output/mlflow.db`, the README main command's). A model already there that computes the same function
and was trained the same way is loaded instead of trained again, so two notebooks (and their re-runs) compare the
very same checkpoints, all trained alike. `smoke=True` (CI) trains tiny throw-away models that stay near chance.
The seeds of one model that are missing are trained in one runner call (consecutive seeds), so the runner trains
them side by side (`parallel`).

Identity. A logged run is "the same model" when its model.* params equal the planned configuration's apart from
`sepvit.config.EXECUTION_FIELDS` (fused or explicit attention: the same output within 1e-5), and its train.*
params equal the planned training's apart from bookkeeping (`experiments.report.BOOKKEEPING`: output, device,
DataLoader workers; the seed counts). The thread count is an env.* param, never part of it. These execution details
stay recorded on every run and are returned with the model (`ZooModel.execution`). Where several runs qualify, the
newest is used (not the most accurate: picking the best of repeats would flatter the model).

Paper vs here (`paper_comparison`): the zoo's comparisons that the paper also makes (window tokens, GSA, the block
patterns), our top-1 difference over seeds with its intervals (`experiments.stats.compare`) beside the paper's
ImageNet-1k figure (`experiments.grids.PAPER_STEPS`, `analysis.published.PUBLISHED_TOP1`).
"""
from __future__ import annotations

import contextlib
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from torch import nn

from sepvit.config import EXECUTION_FIELDS, SepViTConfig

from experiments import runner
from experiments.base_model import DEFAULT_MODEL
from experiments.grids import label_for
from experiments.train_config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = "notebook-models"
PROG = "python -m experiments.zoo"
# name -> its SepViTConfig changes from the runner's default model (the ablation switches': --no-lwt is
# window_token="zero", --no-dssa is dssa=False, ...; "sepvit" is every switch at its default)
ZOO: dict[str, dict[str, Any]] = {
    "sepvit": {},
    "sepvit, zero tokens": {"window_token": "zero"},
    "sepvit, avgpool tokens": {"window_token": "avgpool"},
    "sepvit without GSA": {"gsa": False},
    "local-only": {"dssa": False},
    "swin": {"block_pattern": "swin"},
    "twins": {"block_pattern": "twins"},
    "msa": {"block_pattern": "msa"},
}
SMOKE_TRAIN = {"epochs": 1, "train_size": 64, "val_size": 64, "batch_size": 32}  # TrainConfig changes
# The notebooks' analyses follow one far reference cell (where attention finds the ring): their models keep the
# built-in task's ring cue, the default before 2026-12-06, with its seed noise (experiments/synthetic.py).
# They also keep the per-epoch scoring (1000 images) that every run had before final scoring on 10000 existed
# (TrainConfig.final_val_size): their accuracy is a label on the analyses, which the grids measure precisely.
ZOO_TRAIN = {"synthetic_cue": "ring", "final_val_size": 0}
# how a run was computed, recorded on it but not part of what the model is
EXECUTION_PARAMS = (*(f"model.{name}" for name in EXECUTION_FIELDS), "env.torch_threads")
# TrainConfig fields the zoo sets itself (which seed, where): refused in train_changes
ZOO_TRAIN_FIELDS = ("seed", "output")


@dataclass
class ZooModel:
    name: str
    model: nn.Module  # eval mode, the reported (best-epoch) weights
    top1: float  # the run's reported top-1 (last epoch), percent
    best_top1: float
    num_classes: int
    val_size: int
    run_id: str
    trained_here: bool  # False: found in the store
    execution: dict[str, str | None]  # EXECUTION_PARAMS as the run logged them (None: not logged)
    seed: int = 0  # the training seed
    train: dict[str, Any] = field(default_factory=dict)  # the planned training (TrainConfig.to_dict(), this seed)


def default_output(smoke: bool) -> Path:
    if smoke:
        import tempfile

        return Path(tempfile.mkdtemp(prefix="sepvit-zoo-"))
    return ROOT / "output"


def lookup_plan(names: Sequence[str] | Mapping[str, Sequence[int]],
                seeds: Sequence[int] | None = None) -> dict[str, tuple[int, ...]]:
    """name -> sorted distinct seeds: `names` with `seeds` (default (0,)) for each, or a mapping name -> seeds
    (a notebook's ZOO_LOOKUP; then `seeds` must be None). ValueError for an unknown name or a bad seed."""
    if isinstance(names, Mapping):
        if seeds is not None:
            raise ValueError("give the seeds either in the name -> seeds mapping or as `seeds`, not both")
        plan = {name: tuple(values) for name, values in names.items()}
    else:
        if isinstance(names, str):
            raise ValueError(f"names must be a sequence of zoo names, got the string {names!r}")
        plan = {name: tuple((0,) if seeds is None else seeds) for name in names}
    unknown = sorted(set(plan) - set(ZOO))
    if unknown:
        raise ValueError(f"unknown zoo model(s) {', '.join(map(repr, unknown))}: use {', '.join(ZOO)}")
    for name, values in plan.items():
        bad = [s for s in values if isinstance(s, bool) or not isinstance(s, int) or s < 0]
        if not values or bad:
            raise ValueError(f"zoo model {name!r}: seeds must be one or more integers >= 0, got {list(values)}")
    return {name: tuple(sorted(set(values))) for name, values in plan.items()}


def consecutive(seeds: Sequence[int]) -> list[tuple[int, int]]:
    """(first, count) of each run of consecutive seeds, in order: one runner call (`--seed F --seeds N`) each."""
    out: list[tuple[int, int]] = []
    for seed in sorted(set(seeds)):
        if out and out[-1][0] + out[-1][1] == seed:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((seed, 1))
    return out


def _check_train_changes(train_changes: Mapping[str, Any]) -> dict[str, Any]:
    given = [name for name in train_changes if name in ZOO_TRAIN_FIELDS]
    if given:
        raise ValueError(f"the zoo sets {', '.join(given)} itself: pass seeds as `seeds`, the store as `output`")
    return dict(train_changes)


class Lookup:
    """The planned runs of a zoo lookup in one store: what each (name, seed) is, and which the store holds."""

    def __init__(self, plan: dict[str, tuple[int, ...]], output: Path, smoke: bool,
                 model_changes: Mapping[str, Any] = {}, train_changes: Mapping[str, Any] = {}):
        from workbench.tracking import default_tracking_uri

        self.plan, self.output = plan, output
        self.uri = default_tracking_uri(output)
        self.base = SepViTConfig.preset(DEFAULT_MODEL, **model_changes)
        self.train = TrainConfig(output=str(output), **{**ZOO_TRAIN, **(SMOKE_TRAIN if smoke else {}),
                                                        **_check_train_changes(train_changes)})
        # one plan for every name: each configuration fitted to the data (classes, channels) as its call will be
        configs = {name: self.base.replace(**ZOO[name]) for name in plan}
        planned = runner.plan_call(configs, self.train, base=self.base, experiment=EXPERIMENT) if plan else None
        self.planned = {run.label: run for run in planned.runs} if planned else {}
        self.refresh()

    def refresh(self) -> None:
        self.runs = _finished_runs(self.uri)

    def matches(self, name: str, seed: int):
        planned = self.planned[name]
        return _same_training(same_model(self.runs, planned.model), planned.train.replace(seed=seed))

    def missing(self) -> list[tuple[str, int]]:
        return [(name, seed) for name, seeds in self.plan.items() for seed in seeds if self.matches(name, seed).empty]


def missing(names: Sequence[str] | Mapping[str, Sequence[int]], seeds: Sequence[int] | None = None,
            output: str | Path | None = None, smoke: bool = False, model_changes: Mapping[str, Any] = {},
            train_changes: Mapping[str, Any] = {}) -> list[tuple[str, int]]:
    """The (name, seed) pairs of a lookup (`lookup_plan`) that the store does not hold, in plan order: what
    `trained_seeds` with the same arguments would train. Trains nothing and creates no store."""
    plan = lookup_plan(names, seeds)
    output = Path(output) if output is not None else default_output(smoke)
    return Lookup(plan, output, smoke, model_changes, train_changes).missing()


def trained_seeds(names: Sequence[str] | Mapping[str, Sequence[int]], seeds: Sequence[int] | None = None,
                  output: str | Path | None = None, smoke: bool = False, model_changes: Mapping[str, Any] = {},
                  train_changes: Mapping[str, Any] = {}, parallel: int | str = "auto") -> dict[str, list[ZooModel]]:
    """name -> its ZooModels in seed order, for `lookup_plan(names, seeds)`. Found ones are loaded; the missing
    seeds of a name are trained first, one runner call per run of consecutive seeds, names in order.

    model_changes: SepViTConfig fields changed in every model (e.g. fused_attn); train_changes: TrainConfig fields
    changed in every training (not seed or output, which the zoo sets).

    parallel: runs trained side by side in one call (the runner's --parallel); "auto" = one single-thread process
    per CPU this process may use, no more than the call's runs (1 on a GPU). The runner's own "auto" counts torch
    threads instead, which the notebooks set to 1."""
    plan = lookup_plan(names, seeds)
    output = Path(output) if output is not None else default_output(smoke)
    lookup = Lookup(plan, output, smoke, model_changes, train_changes)
    found: dict[str, list[ZooModel]] = {}
    for name, wanted in plan.items():
        absent = [seed for seed in wanted if lookup.matches(name, seed).empty]
        for first, count in consecutive(absent):
            _train(lookup, name, first, count, _processes(parallel, count))
        if absent:
            lookup.refresh()
        found[name] = [_load(lookup, name, seed, seed in absent) for seed in wanted]
    return found


def trained(names: Sequence[str], output: str | Path | None = None, smoke: bool = False,
            model_changes: Mapping[str, Any] = {}, train_changes: Mapping[str, Any] = {},
            seed: int = 0) -> dict[str, ZooModel]:
    """The zoo models `names` (keys of ZOO) at one training seed; missing ones are trained now (in order)."""
    models = trained_seeds(list(names), (seed,), output, smoke, model_changes, train_changes, parallel=1)
    return {name: runs[0] for name, runs in models.items()}


def _processes(parallel: int | str, runs: int) -> int:
    if parallel != "auto":
        if isinstance(parallel, bool) or int(parallel) < 1:
            raise ValueError(f"parallel must be a positive integer or 'auto', got {parallel!r}")
        return min(int(parallel), runs)
    import torch

    if torch.cuda.is_available():
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(runs, cpus))


def _train(lookup: Lookup, name: str, first: int, count: int, parallel: int) -> None:
    """One runner call: seeds first .. first + count - 1 of `name` (the only place the zoo trains)."""
    config = lookup.planned[name].model
    plan = runner.plan_call({label_for(config, lookup.base): config}, lookup.train.replace(seed=first), seeds=count,
                            base=lookup.base, experiment=EXPERIMENT, parallel=parallel,
                            command=f"{PROG} --train {name!r} (seeds {first}..{first + count - 1})")
    with contextlib.redirect_stdout(io.StringIO()):
        results = runner.run_call(plan)
    if results.exit_code != 0:
        raise RuntimeError(f"training zoo model {name!r} failed (exit code {results.exit_code}): see {results.folder}")


def _load(lookup: Lookup, name: str, seed: int, trained_here: bool) -> ZooModel:
    from experiments.logged_models import load_logged_model

    match = lookup.matches(name, seed)
    if match.empty:
        raise RuntimeError(f"zoo model {name!r} seed {seed} was trained but is not in {lookup.uri}: see {lookup.output}")
    row = match.iloc[0]
    return ZooModel(name, load_logged_model(lookup.uri, row["run_id"]), float(row["top1"]), float(row["best_top1"]),
                    int(row["num_classes"]), int(row["val_size"]), row["run_id"], trained_here,
                    _execution(lookup.uri, row["run_id"]), seed=seed,
                    train=lookup.planned[name].train.replace(seed=seed).to_dict())


def same_model(runs, config: SepViTConfig):
    """The FINISHED runs (rows of `experiments.report.load_runs`) whose model computes what `config`'s does:
    every model.* param equal but EXECUTION_FIELDS (module docstring), newest first."""
    from experiments.logged_models import matching_runs

    if runs.empty:
        return runs
    # matching_runs takes a param a run did not log as matching the field's default: without the execution
    # columns, and with the default asked for, any execution matches
    defaults = type(config)()
    neutral = config.replace(**{name: getattr(defaults, name) for name in EXECUTION_FIELDS})
    execution = [f"model.{name}" for name in EXECUTION_FIELDS if f"model.{name}" in runs]
    found = matching_runs(runs.drop(columns=execution), neutral)
    return runs.loc[found.index].sort_values("start_time", ascending=False)


def _finished_runs(uri: str):
    """Every FINISHED run of the zoo's experiment, read call by call: `load_runs(calls="all")` pools calls and
    refuses a label whose runs differ in any param, which runs of one model computed differently do."""
    import pandas as pd

    from experiments.report import ReportError, list_calls, load_runs

    try:
        calls = list_calls(uri, EXPERIMENT)
    except ReportError:  # no such experiment yet
        return pd.DataFrame()
    frames = [frame for parent in calls["parent_run_id"]
              if not (frame := load_runs(uri, EXPERIMENT, calls=[parent])).empty]
    runs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return runs[runs["status"] == "FINISHED"] if len(runs) else runs


def _execution(uri: str, run_id: str) -> dict[str, str | None]:
    """EXECUTION_PARAMS of one run, as logged."""
    from mlflow.tracking import MlflowClient

    params = MlflowClient(tracking_uri=uri).get_run(run_id).data.params
    return {name: params.get(name) for name in EXECUTION_PARAMS}


def _same_training(runs, train_cfg):
    """Rows trained exactly as `train_cfg` says (seed, budget, optimiser...; not where or how fast).

    A field a run did not log (one added to TrainConfig after it ran) matches only the value such runs had
    (`TrainConfig.before_logged`)."""
    import pandas as pd

    from workbench.tracking import flatten

    from experiments.report import BOOKKEEPING

    if runs.empty:
        return runs
    before = {f"train.{name}": str(value)
              for name, value in type(train_cfg).before_logged(train_cfg.dataset).items()}
    keep = pd.Series(True, index=runs.index)
    for key, value in flatten(train_cfg.to_dict(), "train.").items():
        if key in BOOKKEEPING and key != "train.seed":
            continue
        logged = runs[key] if key in runs else pd.Series(None, index=runs.index, dtype=object)
        keep &= logged.astype(str).eq(value) | (logged.isna() & (value == before.get(key)))
    return runs[keep]


# ---------------------------------------------------------------------------------- paper vs here
@dataclass(frozen=True)
class PaperComparison:
    """One comparison the paper makes that the zoo can make too: zoo model `a` against `b`, and the paper's
    ImageNet-1k top-1 difference a - b (points; None where only a direction, or nothing, was reported)."""

    what: str
    a: str
    b: str
    paper_delta: float | None
    paper_direction: int | None  # +1: the paper found `a` better; None: the paper reports no such comparison
    paper_source: str


def paper_comparisons() -> list[PaperComparison]:
    """The zoo's comparisons with a counterpart in the paper, from the one record of each paper figure."""
    from analysis.published import PUBLISHED_TOP1

    from experiments.grids import PAPER_STEPS

    steps = {(s.label, s.against): s for s in PAPER_STEPS}
    out = []
    for what, a, b, key in (("window tokens: learnable vs fixed zero", "sepvit", "sepvit, zero tokens",
                             ("+ learnable window tokens", "+ gsa")),
                            ("window tokens: learnable vs average-pooled", "sepvit", "sepvit, avgpool tokens",
                             ("+ learnable window tokens", "avgpool-token")),
                            ("GSA: with vs without", "sepvit", "sepvit without GSA", ("+ gsa", "+ ope"))):
        step = steps[key]
        out.append(PaperComparison(what, a, b, step.paper_delta, step.direction, step.source))
    ours = PUBLISHED_TOP1["sepvit_tiny"]
    for pattern, peer in (("swin", "swin_tiny_patch4_window7_224"), ("twins", "twins_svt_small")):
        other = PUBLISHED_TOP1[peer]
        delta = round(ours["top1"] - other["top1"], 2)
        out.append(PaperComparison(f"SepViT vs the {pattern} pattern", "sepvit", pattern, delta, 1 if delta > 0 else -1,
                                   f"SepViT-T {ours['top1']} ({ours['source']}) vs {peer} {other['top1']} "
                                   f"({other['source']}); whole architectures, not one backbone"))
    out.append(PaperComparison("SepViT vs global MSA", "sepvit", "msa", None, None,
                               "not reported: the paper trains no global-MSA model of its backbone"))
    return out


def paper_comparison(models: Mapping[str, Sequence[ZooModel]], confidence: float = 0.95):
    """One row per `paper_comparisons` entry whose two models are in `models` (name -> its seeds): our top-1
    of each (mean and t half-width over seeds), the difference a - b with its paired and Welch intervals and the
    verdict of `experiments.stats.compare`, the paper's difference, and whether the direction agrees (only a
    resolved difference has a direction; an unresolved one says so)."""
    import pandas as pd

    from experiments.paper_table import RESOLVED
    from experiments.stats import compare

    rows = []
    for c in paper_comparisons():
        if not models.get(c.a) or not models.get(c.b):
            continue
        a, b = list(models[c.a]), list(models[c.b])
        d = compare([m.top1 for m in a], [m.top1 for m in b], confidence, seeds_a=[m.seed for m in a],
                    seeds_b=[m.seed for m in b])
        if c.paper_direction is None:
            agrees = "no paper figure"
        elif d.verdict in RESOLVED:
            agrees = "yes" if (1 if d.diff > 0 else -1) == c.paper_direction else "no: runs against the paper"
        elif d.verdict == "equivalent":
            agrees = f"equivalent here: no difference > {d.bound:.1f} points"
        elif d.verdict == "unresolved":
            agrees = f"not resolved (±{d.bound:.1f} points)"
        else:
            agrees = "not resolved"
        paired = d.paired or (math.nan, math.nan, math.nan)
        rows.append(dict(comparison=c.what, a=c.a, b=c.b, seeds_a=[m.seed for m in a], seeds_b=[m.seed for m in b],
                         top1_a=d.ci_a[0], top1_a_half=d.ci_a[1], top1_b=d.ci_b[0], top1_b_half=d.ci_b[1],
                         diff=d.diff, paired_low=paired[1], paired_high=paired[2], welch_low=d.low, welch_high=d.high,
                         verdict=d.verdict, bound=d.bound, paper_delta=c.paper_delta,
                         paper_direction=c.paper_direction, agrees=agrees, paper_source=c.paper_source))
    return pd.DataFrame(rows)




def paper_sentences(table) -> list[str]:
    """One sentence per row of `paper_comparison`, every number from the row."""
    lines = []
    for r in table.itertuples():
        if not math.isnan(r.paired_low):
            interval = f"paired 95 % interval [{r.paired_low:+.1f}, {r.paired_high:+.1f}]"
        elif not math.isnan(r.welch_low):
            interval = f"Welch 95 % interval [{r.welch_low:+.1f}, {r.welch_high:+.1f}]"
        else:
            interval = "no interval: fewer than two seeds"
        reported = not (r.paper_direction is None
                        or (isinstance(r.paper_direction, float) and math.isnan(r.paper_direction)))
        if not reported:
            paper = f"the paper: {r.paper_source}"
        elif r.paper_delta is None or (isinstance(r.paper_delta, float) and math.isnan(r.paper_delta)):
            paper = f"the paper: {'+' if r.paper_direction > 0 else '-'} (figure not recovered; {r.paper_source})"
        else:
            paper = f"the paper: {r.paper_delta:+.1f} ({r.paper_source})"
        lines.append(f"{r.comparison}: here {r.top1_a:.1f} vs {r.top1_b:.1f} % top-1, {r.diff:+.1f} points "
                     f"({interval}; seeds {', '.join(map(str, r.seeds_a))} vs {', '.join(map(str, r.seeds_b))}; "
                     f"verdict {r.verdict}); {paper}" + (f": {r.agrees}." if reported else "."))
    return lines


def setting_sentence(models: Mapping[str, Sequence[ZooModel]]) -> str:
    """What differs between the zoo's setting and the paper's: task, image size, model size, budget, seeds."""
    from analysis.published import PAPER_SETTING

    first = next(m for runs in models.values() for m in runs)
    cfg, train = first.model.config, first.train
    params = sum(p.numel() for p in first.model.parameters()) / 1e6
    seeds = sorted({len(runs) for runs in models.values()})
    return (f"Here: our backbone at {cfg.img_size} px (widths {'/'.join(map(str, cfg.embed_dims))}, "
            f"{params:.2f} M parameters in the {cfg.block_pattern} pattern), {train.get('epochs')} epoch(s) of the "
            f"{train.get('dataset')} task "
            f"({first.num_classes} classes, {first.val_size} validation images), "
            f"{'/'.join(map(str, seeds))} seed(s) per model. The paper: {PAPER_SETTING['model']} at "
            f"{PAPER_SETTING['img_size']} px, {PAPER_SETTING['epochs']} epochs of {PAPER_SETTING['dataset']} "
            f"({PAPER_SETTING['classes']} classes), one run per model.")


# ---------------------------------------------------------------------------------- accuracy over seeds
def accuracy_table(models: Mapping[str, Sequence[ZooModel]], reference: str = "sepvit", confidence: float = 0.95):
    """One row per model (name -> its seeds): seeds, top-1 per seed (last epoch), mean with its t half-width, the
    95 % band guessing reaches, whether the mean lies inside it (at chance), and against `reference` (when
    present): the difference with its paired interval and `experiments.stats.compare`'s verdict, so a reader sees
    whether two models' accuracies are matched before comparing anything else about them."""
    import pandas as pd

    from experiments.stats import chance_interval, compare, mean_ci

    rows = []
    ref = list(models.get(reference) or [])
    for name, runs in models.items():
        runs = list(runs)
        top1 = [m.top1 for m in runs]
        lo, hi = chance_interval(runs[0].num_classes, runs[0].val_size, confidence)
        mean, half = mean_ci(top1, confidence)
        row = dict(model=name, seeds=[m.seed for m in runs], top1=top1, mean=mean, half_width=half, chance_low=lo,
                   chance_high=hi, at_chance=mean <= hi)
        if name == reference:
            row.update(matched="the reference")
        elif ref:
            d = compare(top1, [m.top1 for m in ref], confidence, seeds_a=row["seeds"], seeds_b=[m.seed for m in ref])
            paired = d.paired or (math.nan, math.nan, math.nan)
            if d.verdict in ("separated", "paired", "welch"):
                matched = f"no: {d.diff:+.1f} points ({d.verdict})"
            elif d.verdict == "equivalent":
                matched = f"within {d.bound:.1f} points (equivalent)"
            elif d.verdict == "unresolved":
                matched = f"unknown: within {d.bound:.1f} points, wider than the equivalence margin"
            else:
                matched = "unknown: fewer than two seeds"
            row.update(diff=d.diff, paired_low=paired[1], paired_high=paired[2], verdict=d.verdict,
                       matched=matched)
        rows.append(row)
    return pd.DataFrame(rows)
