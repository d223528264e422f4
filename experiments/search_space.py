"""Search spaces of `experiments/search.py`: which configuration fields a trial samples, and which samples are valid.

A space is a list of parameters, each naming a `SepViTConfig` or `TrainConfig` field, or `group_size.N` (the
group size of stage N, 1-based; only stages 2 and 3 have grouped blocks). Written as YAML (or the same mapping
in Python):

    window_size: [2, 4, 8]                      # a list: categorical choices
    group_size.2: {low: 1, high: fit}           # integers low..high; "fit": as many windows as the stage's map holds
    group_size.3: {low: 1, high: fit}
    window_token: [learnable, zero, avgpool]
    lr: {low: 1.0e-4, high: 1.0e-2, log: true}  # a float range (log-uniform); `step` makes it discrete
    embed_dims: ["16,32,64,128", "24,48,96,192"]

Every value is read by the one typed parser (`workbench.fields`), as the field's type says, so `"16,32,64,128"`
is a per-stage tuple and `1e-4` (which YAML reads as text) a float. Tuple choices are kept as their text in
Optuna (its categorical values must be plain scalars).

Sampling is define-by-run: the non-group parameters first, then each group size with its range fitted to the
window size just sampled (`high: fit`), and only for stages that have grouped blocks in that configuration. So a
group size that cannot fit is never proposed; what else is invalid (e.g. `dssa=False` with a zero window token)
raises `InvalidCombination` before any training, and the search prunes that trial. `check` refuses, before any
trial, a space that is empty, has no valid combination, or has a parameter no valid combination uses.
"""
from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from sepvit.config import GSA_STAGES, WINDOW_TOKENS, SepViTConfig
from workbench.fields import FieldError, coerce, field_types

from experiments.train_config import TrainConfig

FIT = "fit"  # `high` of a group size: the most windows per side the stage's map holds at the sampled window size
PREDEFINED = ("default", "training")
ENUMERATION_LIMIT = 20000  # combinations checked before a search starts

# Fields a space may not search, and why (what to do instead).
NOT_SEARCHABLE = {
    "img_size": "the data sets the input size: pass --img-size",
    "in_chans": "the dataset sets the input channels",
    "num_classes": "the dataset sets the number of classes",
    "fused_attn": "it selects a kernel for the same model, not a different model",
    "dataset": "every trial trains on the same data: pass --dataset",
    "data_dir": "every trial trains on the same data: pass --data-dir",
    "train_size": "every trial trains on the same data: pass --train-size",
    "val_size": "every trial is validated on the same data: pass --val-size",
    "data_seed": "every trial trains on the same data: pass --data-seed",
    "epochs": "the epochs are the budget every trial shares (the pruner's resource): pass --epochs",
    "seed": "trials share one training seed so that they differ only in their parameters: pass --seed",
    "workers": "it does not change the result", "device": "it does not change the result",
    "output": "it does not change the result", "checkpoint_every": "it does not change the result",
}


class SpaceError(ValueError):
    """A space that cannot be searched; the message is one line saying what to change."""


class InvalidCombination(ValueError):
    """A sampled combination that is not a valid configuration (the trial is pruned before training)."""


# ---------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class Param:
    """One searched parameter, named as Optuna stores it."""

    name: str  # a field name, or group_size.N
    owner: str  # "model" (SepViTConfig) or "train" (TrainConfig)
    field: str
    stage: int | None = None  # zero-based stage of group_size.N
    choices: tuple | None = None  # categorical values as Optuna stores them (text for tuple fields)
    low: float | int | None = None
    high: float | int | str | None = None  # a number, or FIT
    log: bool = False
    step: float | int | None = None

    @property
    def kind(self) -> str:
        if self.choices is not None:
            return "categorical"
        return "int" if self.stage is not None or _base_type(self.owner, self.field) is int else "float"

    @property
    def finite(self) -> bool:
        return self.kind != "float" or self.step is not None

    def value(self, stored: Any) -> Any:
        """The configuration value of a value as Optuna stores it (tuple choices are text)."""
        if isinstance(stored, str) and _base_type(self.owner, self.field) is not str:
            return coerce(_owner_cls(self.owner), self.field, stored)
        return stored

    def options(self, high: float | int) -> list:
        """Every value a grid would try (a continuous range: its two ends, enough to check validity)."""
        if self.choices is not None:
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(high) + 1, int(self.step or 1)))
        if self.step is None:
            return [self.low, high] if high != self.low else [self.low]
        count = int(math.floor((high - self.low) / self.step + 1e-9))
        return [self.low + i * self.step for i in range(count + 1)]

    def describe(self) -> str:
        if self.choices is not None:
            return f"{self.name} in {{{', '.join(str(c) for c in self.choices)}}}"
        high = "what the map allows" if self.high == FIT else self.high
        extra = " (log)" if self.log else (f" step {self.step}" if self.step else "")
        return f"{self.name} in [{self.low}, {high}]{extra}"

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any]
        if self.choices is not None:
            return {self.name: list(self.choices)}
        spec = {"low": self.low, "high": self.high}
        if self.log:
            spec["log"] = True
        if self.step is not None:
            spec["step"] = self.step
        return {self.name: spec}


def _owner_cls(owner: str) -> type:
    return SepViTConfig if owner == "model" else TrainConfig


def _base_type(owner: str, name: str):
    """The field's type without None (int | None -> int); tuple and union-with-tuple types stay as they are."""
    tp = field_types(_owner_cls(owner))[name]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _text_of(value: Any) -> Any:
    """How a choice is stored in Optuna: scalars as they are, tuples as '1,2,3'."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return value


# ---------------------------------------------------------------------------------- the space
@dataclass(frozen=True)
class Space:
    params: tuple[Param, ...]
    source: str = "default"

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def finite(self) -> bool:
        return all(p.finite for p in self.params)

    def describe(self) -> str:
        return "; ".join(p.describe() for p in self.params)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in self.params:
            out.update(p.to_dict())
        return out

    # ------------------------------------------------------------------ sampling
    def sample(self, choose: Callable[[Param, Any], Any], base: SepViTConfig,
               train: TrainConfig) -> tuple[dict[str, Any], SepViTConfig, TrainConfig]:
        """(values as Optuna stores them, model config, training config) of one trial.

        `choose(param, high)` returns a value of `param` (its `high` resolved: FIT becomes a number). Raises
        InvalidCombination (with the chosen values so far in `.values`) when the sample is not a valid
        configuration.
        """
        values: dict[str, Any] = {}
        model: dict[str, Any] = {}
        training: dict[str, Any] = {}
        for p in self.params:
            if p.stage is None:
                values[p.name] = choose(p, p.high)
                (model if p.owner == "model" else training)[p.field] = p.value(values[p.name])
        try:
            # group_size=1 fits any map: the partial config only tells the geometry and the grouped stages
            partial = base.replace(**{**model, "group_size": 1})
            train_cfg = train.replace(**training)
        except (ValueError, TypeError) as exc:
            raise _invalid(exc, values) from None
        groups = list(base.group_sizes)
        staged = [p for p in self.params if p.stage is not None]
        for p in staged:
            if p.stage not in partial.gsa_stages:
                continue  # no grouped blocks in that stage for this sample: the parameter does not apply
            high = partial.windows_per_side(p.stage) if p.high == FIT else p.high
            if high < p.low:  # e.g. `high: fit` under a larger window: no group size of the range fits this map
                raise _invalid(ValueError(f"{p.name} needs at least {p.low}, but only {high} window(s) per side fit "
                                          f"stage {p.stage} with these values"), values)
            values[p.name] = choose(p, high)
            groups[p.stage] = int(values[p.name])
        if staged:
            model["group_size"] = groups[0] if len(set(groups)) == 1 else tuple(groups)
        try:
            model_cfg = base.replace(**model)
        except (ValueError, TypeError) as exc:
            raise _invalid(exc, values) from None
        return values, model_cfg, train_cfg

    def sample_fixed(self, values: Mapping[str, Any], base: SepViTConfig, train: TrainConfig):
        """`sample` with the values given (e.g. a trial's params)."""
        def choose(p: Param, high):
            if p.name not in values:
                raise InvalidCombination(f"{p.name} has no value")
            return values[p.name]
        return self.sample(choose, base, train)

    # ------------------------------------------------------------------ whole-space checks
    def combinations(self, base: SepViTConfig, train: TrainConfig,
                     limit: int = ENUMERATION_LIMIT) -> tuple[list[tuple[dict, str | None]], bool]:
        """Every combination a grid would try, as (values, None or the reason it is invalid), and whether the list
        is complete (at most `limit`). Continuous ranges contribute their two ends."""
        out: list[tuple[dict, str | None]] = []
        pending: list[tuple[int, ...]] = [()]
        while pending:
            if len(out) >= limit:
                return out, False
            prefix = pending.pop()
            seen: list[int] = []

            def choose(p: Param, high, prefix=prefix, seen=seen):
                options = p.options(high)
                if not options:
                    raise InvalidCombination(f"{p.describe()} is empty")
                index = prefix[len(seen)] if len(seen) < len(prefix) else 0
                seen.append(len(options))
                return options[index]

            try:
                values, _, _ = self.sample(choose, base, train)
                out.append((values, None))
            except InvalidCombination as exc:
                out.append((getattr(exc, "values", {}), str(exc)))
            taken = list(prefix) + [0] * (len(seen) - len(prefix))
            for depth in range(len(seen) - 1, len(prefix) - 1, -1):
                for k in range(seen[depth] - 1, 0, -1):
                    pending.append(tuple(taken[:depth]) + (k,))
        return out, True

    def check(self, base: SepViTConfig, train: TrainConfig) -> dict[str, Any]:
        """Refuse a space that cannot be searched; return {"combinations": n or None (continuous), "valid": n}."""
        if not self.params:
            raise SpaceError(f"the search space {self.source} is empty: give at least one parameter")
        combos, complete = self.combinations(base, train)
        valid = [values for values, error in combos if error is None]
        if not valid:
            values, error = combos[0]
            shown = ", ".join(f"{k}={v}" for k, v in values.items())
            raise SpaceError(f"no combination of the search space {self.source} is a valid model (e.g. "
                             f"{shown or 'the first'}: {error}); change the space")
        used = {name for values in valid for name in values}
        unused = [p for p in self.params if p.name not in used]
        if unused and complete:
            p = unused[0]
            why = (f"stage {p.stage + 1} has no grouped blocks in any valid combination (grouping needs SepViT "
                   "blocks with dssa and gsa on)" if p.stage is not None else "no valid combination uses it")
            raise SpaceError(f"{p.name} in the search space {self.source} never takes effect: {why}; drop it")
        return {"combinations": len(combos) if complete and self.finite else None, "valid": len(valid),
                "complete": complete}

    def reference_values(self, base: SepViTConfig, train: TrainConfig) -> tuple[dict[str, Any] | None, str]:
        """The values that reproduce the base configuration (the paper's defaults unless --model-kwargs changes
        them) as one trial of this space, or (None, why not)."""
        values: dict[str, Any] = {}
        for p in self.params:
            owner = base if p.owner == "model" else train
            if p.stage is not None:
                if p.stage not in base.gsa_stages:
                    continue
                current = base.group_sizes[p.stage]
            else:
                current = getattr(owner, p.field)
            stored = _stored_match(p, current, base)
            if stored is _MISSING:
                return None, f"the base configuration's {p.name}={_text_of(current)} is outside {p.describe()}"
            values[p.name] = stored
        try:
            _, model, training = self.sample_fixed(values, base, train)
        except InvalidCombination as exc:
            return None, f"the base configuration is not a valid sample of the space ({exc})"
        if _comparable(model) != _comparable(base) or training.to_dict() != train.to_dict():
            return None, "the space cannot express the base configuration"
        return values, ""


_MISSING = object()


def _stored_match(p: Param, current: Any, base: SepViTConfig) -> Any:
    if p.choices is not None:
        for choice in p.choices:
            if p.value(choice) == current:
                return choice
        return _MISSING
    high = base.windows_per_side(p.stage) if p.high == FIT else p.high
    if not isinstance(current, (int, float)) or not p.low <= current <= high:
        return _MISSING
    return current


def _comparable(cfg: SepViTConfig) -> dict[str, Any]:
    """The config as a dict in which group_size=2 and group_size=(2, 2, 2, 2) read the same."""
    return {**cfg.to_dict(), "group_size": list(cfg.group_sizes)}


def _invalid(exc: BaseException, values: dict) -> InvalidCombination:
    error = InvalidCombination(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    error.values = dict(values)  # type: ignore[attr-defined]
    return error


# ---------------------------------------------------------------------------------- building spaces
def parse_space(mapping: Any, source: str) -> Space:
    """A Space from {name: [choices] or {low, high, log, step}}; SpaceError naming what is wrong."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise SpaceError(f"the search space {source} must map parameter names to choices or ranges, got "
                         f"{type(mapping).__name__}")
    params = [_parse_param(str(name), spec, source) for name, spec in mapping.items()]
    fields = {p.field for p in params}
    if "group_size" in fields and any(p.stage is not None for p in params) and \
            any(p.name == "group_size" for p in params):
        raise SpaceError(f"the search space {source} has both group_size and group_size.N: use one of them")
    return Space(tuple(params), source)


def _parse_param(name: str, spec: Any, source: str) -> Param:
    where = f"{name} in the search space {source}"
    field, stage = name, None
    if name.startswith("group_size."):
        number = name.partition(".")[2]
        if not number.isdigit() or int(number) - 1 not in GSA_STAGES:
            raise SpaceError(f"{where}: group_size.N names a stage with grouped blocks, N = "
                             f"{' or '.join(str(s + 1) for s in GSA_STAGES)}")
        field, stage = "group_size", int(number) - 1
    in_model, in_train = field in field_types(SepViTConfig), field in field_types(TrainConfig)
    if field in NOT_SEARCHABLE:
        raise SpaceError(f"{where}: {field} cannot be searched ({NOT_SEARCHABLE[field]})")
    if not (in_model or in_train):
        known = sorted((set(field_types(SepViTConfig)) | set(field_types(TrainConfig))) - set(NOT_SEARCHABLE))
        raise SpaceError(f"{where}: unknown field; searchable fields are {', '.join(known)} and group_size.N")
    owner = "model" if in_model else "train"
    cls = _owner_cls(owner)

    def typed(value: Any, what: str) -> Any:
        if stage is not None:
            text = str(value)
            if isinstance(value, bool) or not text.lstrip("-").isdigit():
                raise SpaceError(f"{where}: {what} {value!r} is not an integer")
            return int(text)
        try:
            return coerce(cls, field, _yaml_text(value))
        except FieldError as exc:
            raise SpaceError(f"{where}: {what} {value!r}: {exc}") from None

    if isinstance(spec, (list, tuple)):
        if not spec:
            raise SpaceError(f"{where} has no choices: give at least one")
        choices = tuple(_text_of(typed(v, "choice")) for v in spec)
        if len(set(choices)) != len(choices):
            raise SpaceError(f"{where} repeats a choice: {list(spec)}")
        return Param(name, owner, field, stage, choices=choices)
    if not isinstance(spec, Mapping):
        raise SpaceError(f"{where}: give a list of choices or a range {{low: ..., high: ...}}, got {spec!r}")
    unknown = set(spec) - {"low", "high", "log", "step"}
    if unknown:
        raise SpaceError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (use low, high, log, step)")
    if "low" not in spec or "high" not in spec:
        raise SpaceError(f"{where}: a range needs low and high")
    kind = int if stage is not None else _base_type(owner, field)
    if kind not in (int, float):
        raise SpaceError(f"{where}: {field} is not a number; give a list of choices")
    low = typed(spec["low"], "low")
    high = FIT if str(spec["high"]).strip().lower() == FIT else typed(spec["high"], "high")
    if high == FIT and stage is None:
        raise SpaceError(f"{where}: high: fit only applies to group_size.N")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"{where}: log must be true or false, got {log!r}")
    step = typed(spec["step"], "step") if spec.get("step") is not None else None
    if high != FIT and low > high:
        raise SpaceError(f"{where}: low {low} is above high {high}")
    if log and (low <= 0 or step is not None):
        raise SpaceError(f"{where}: a log range needs low > 0 and no step")
    if step is not None and step <= 0:
        raise SpaceError(f"{where}: step must be > 0, got {step}")
    return Param(name, owner, field, stage, low=low, high=high, log=log, step=step)


def _yaml_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def default_space(base: SepViTConfig) -> Space:
    """Group size per grouped stage (1 = no grouping, up to what the map allows), window size (the base's and
    double) and window-token type: the switches the paper fixes (2x2-window groups, window 7, learnable tokens).

    Half the base window is left out of the default (a YAML space can add it): at sepvit_nano_32 it means 2x2-pixel
    windows, 256 of them in stage 1, smaller than any window the paper uses (7 at 224 px is 4 at 32 px), and without
    it the default space has 30 combinations instead of 126, so an 8-trial study covers a real part of it. (It is
    not much slower: one training step of batch 64 takes 1.25x window 4's, measured interleaved.)"""
    spec: dict[str, Any] = {}
    w = base.window_size
    spec["window_size"] = [w, 2 * w]
    for stage in base.gsa_stages:
        spec[f"group_size.{stage + 1}"] = {"low": 1, "high": FIT}
    if base.block_pattern == "sepvit" and base.dssa:
        spec["window_token"] = list(WINDOW_TOKENS)
    return parse_space(spec, "default")


def training_space(base: SepViTConfig, train: TrainConfig) -> Space:
    """The default space plus peak learning rate, weight decay (both log-uniform) and drop-path rate; each range
    also holds the base value, so the base configuration stays a trial of the space."""
    spec = default_space(base).to_dict()
    spec["lr"] = {"low": min(1e-4, train.lr), "high": max(1e-2, train.lr), "log": True}
    spec["weight_decay"] = {"low": min(1e-3, train.weight_decay) or 1e-3, "high": max(0.2, train.weight_decay),
                            "log": True}
    spec["drop_path_rate"] = {"low": 0.0, "high": max(0.3, base.drop_path_rate)}
    if train.weight_decay == 0:
        spec["weight_decay"] = {"low": 0.0, "high": 0.2}
    return parse_space(spec, "training")


def load_space(spec: str, base: SepViTConfig, train: TrainConfig) -> Space:
    """`default`, `training`, or a YAML file (see the module docstring)."""
    if spec == "default":
        return default_space(base)
    if spec == "training":
        return training_space(base, train)
    path = Path(spec).expanduser()
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise SpaceError(f"--space {spec}: use one of {', '.join(PREDEFINED)} or a .yaml file")
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpaceError(f"--space {spec}: cannot read it ({exc.strerror})") from None
    try:
        mapping = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpaceError(f"--space {spec} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    return parse_space(mapping, str(path))
