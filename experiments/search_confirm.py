"""Is a search's best trial beyond seed noise? Its configuration against the paper's at K paired seeds.

A trial is one training run with one seed, so the distance from the best trial to the reference (the paper's
configuration, the study's first trial) is partly seed noise, and the best of several trials is the one the noise
favoured most. `python experiments/search.py --confirm K` answers the question: after the call's trials it trains
the best trial's configuration and the reference configuration at seeds seed+1..seed+K (fresh seeds: the trials'
own seed is left out, because the best trial is the one whose configuration *and* seed luck came out highest, and a
confirmation that reused that seed would carry the luck that selected it), with the study's data and TrainConfig
otherwise, as one runner call (`experiments.runner.plan_call` / `run_call`, what `ablate.py --compare --seeds K`
runs: the same runs, the same report, the same kind of MLflow records, kept in the search's experiment, the same
way out of an interruption), and compares them with `experiments.stats.compare`. This module holds what the search report needs to say so (the target, the equivalent
`ablate.py` command, the stored result and the sentence); `experiments.search_call.confirm_best` runs the call.

Several objectives: the confirmation is of top-1 only, for the most accurate trial of the Pareto set (its MACs are
exact and the same at every seed; a latency is measured in the runner's report, not tested).

Where the answer is kept: in the study itself, as the user attribute `sepvit.confirmation.<N>` (N: the first trial
with the confirmed parameters; a repeat of a trial, `duplicate_of`, shares its record), so the report finds it from
the storage alone, from any machine, as it finds the trials. The record names the runner call that trained it (its
call folder and MLflow parent run; the runs' per-seed top-1 are copied in) and its state: `running` (written once
the call folder exists, before any run trains, with the process and the time: a process killed outright leaves
it), then `finished`, or `interrupted`/`failed`; the next `--confirm` with the same seeds resumes the call named by
any but a finished record rather than starting again, and refuses while another process's record is `running`
(`search_storage.confirming_elsewhere`). A `--confirm` with more seeds than the stored record extends its call
(`runner.plan_resume(..., seeds=K)`: the finished runs are kept, the next seeds of both arms train as a new call's
would) and the record keeps the seeds of each look (`seed_counts`), so that the answer says what looking again
costs (`report.looks_sentence`); one with fewer seeds than a finished record is answered by that record. The
verdict is recomputed from the per-seed values whenever a report is made, so the report and `ablate.py`'s table
follow the same rules (`experiments.stats`); a record made at other seeds than today's fresh seeds is refused, not
shown.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, fields
from typing import Any, Mapping

import optuna
from optuna.trial import TrialState

from sepvit.config import PRESETS, SepViTConfig
from workbench.cli import UsageError, cli_text

from experiments.base_model import DATA_OWNED, DEFAULT_MODEL
from experiments.grids import SWITCHES
from experiments.report import looks_sentence
from experiments.search_space import InvalidCombination, Space, parse_space
from experiments.stats import EQUIVALENCE_MARGIN, Difference, chance_interval, compare, verdict_text
from experiments.train_config import TrainConfig

RECORD_PREFIX = "sepvit.confirmation."
MIN_SEEDS = 2  # one seed per arm gives no interval
ABLATE = "python experiments/ablate.py"
# TrainConfig fields that do not change what a run learns: never part of a confirming command
BOOKKEEPING = ("workers", "device", "checkpoint_every")
# The inverse of ablate.py's switch_changes: SepViTConfig field -> (the value a flag sets, the flag), read from
# grids.SWITCHES (`--<name>` turns off the one field a switch names), and field -> the flag that takes the value;
# any other field has no switch (tests/test_search.py checks the round trip)
_FLAG_SWITCHES = {field: (value, f"--{name}") for name, change in SWITCHES.items() if len(change) == 1
                  for field, value in change.items() if value is False}
_VALUE_SWITCHES = {"window_token": "--window-token", "group_size": "--group-size", "window_size": "--window-size",
                   "block_pattern": "--block-pattern"}


@dataclass
class Target:
    """What a confirmation compares: the study's best trial's configuration and the study's base (the paper's)."""

    trial: int  # the first trial with the best trial's parameters (its record's number)
    best: int  # the best trial as the report names it (a repeat of `trial` when it is a duplicate)
    params: dict[str, Any]
    model: SepViTConfig
    train: TrainConfig
    base: SepViTConfig
    base_train: TrainConfig
    top1: float
    reference_trial: int | None  # the COMPLETE reference trial, if the study has one
    reference_top1: float | None

    @property
    def is_reference(self) -> bool:
        """The best trial is the paper's configuration (group_size=2 and (2, 2, 2, 2) read the same)."""
        return _comparable(self.model) == _comparable(self.base) and self.train == self.base_train

    @property
    def confirm_train(self) -> TrainConfig:
        """The confirmation's training settings: the study's, its seeds starting one after the trials' seed."""
        return self.base_train.replace(seed=self.base_train.seed + 1)

    def fresh_seeds(self, k: int) -> list[int]:
        """The seeds of a confirmation at `k` paired seeds: the study's seed + 1 .. + k."""
        return list(range(self.confirm_train.seed, self.confirm_train.seed + k))

    @property
    def training_changes(self) -> list[str]:
        """The TrainConfig fields in which the best trial differs from the study's (a training space)."""
        return [f.name for f in fields(TrainConfig) if getattr(self.train, f.name) != getattr(self.base_train, f.name)]


def _comparable(cfg: SepViTConfig) -> dict[str, Any]:
    return {**cfg.to_dict(), "group_size": list(cfg.group_sizes)}


# ---------------------------------------------------------------------------------- refusals
def check_confirm(confirm: int, space: Space) -> None:
    """Refuse a --confirm that cannot give an answer, before any trial (one-line UsageError). Several objectives
    are not refused: the confirmation is of top-1, for the most accurate trial of the Pareto set."""
    if confirm == 0:
        return
    if confirm < MIN_SEEDS:
        raise UsageError(f"--confirm must be 0 (off) or at least {MIN_SEEDS} seeds (one seed per arm gives no "
                         f"interval; 3 is the documented choice), got {confirm}")
    training = [p.name for p in space.params if p.owner == "train"]
    if training:
        raise UsageError(f"--confirm trains the best trial and the paper's configuration as one runner call, with one "
                         f"TrainConfig for both, but the space {space.source} also searches training fields "
                         f"({', '.join(training)}): drop --confirm or search model fields only")


# ---------------------------------------------------------------------------------- the target
def study_setup(study: optuna.Study, train: Mapping[str, Any] | None = None):
    """(space, base model, TrainConfig) of a study made by the search, or None for one made elsewhere. Output and
    data_dir: `train`'s (the call's full training settings) when given, else the study's own (`sepvit.paths`)."""
    stored = study.user_attrs.get("sepvit.settings") or {}
    if not all(k in stored for k in ("space", "model", "train")):
        return None
    known = {f.name for f in fields(TrainConfig)}
    paths = {k: v for k, v in (study.user_attrs.get("sepvit.paths") or {}).items() if k in ("output", "data_dir")}
    data = {**stored["train"], **paths, **{k: v for k, v in (train or {}).items() if k in known}}
    try:
        return (parse_space(stored["space"], "study"), SepViTConfig.from_dict(stored["model"]),
                TrainConfig.from_dict(data))
    except (ValueError, TypeError):
        return None


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The trial the report calls best: Optuna's best trial, or with several objectives the most accurate trial of
    the Pareto set (the earliest on a tie); None without a COMPLETE trial."""
    try:
        trials = study.best_trials if study._is_multi_objective() else [study.best_trial]
    except ValueError:  # no COMPLETE trial yet
        return None
    return max(trials, key=lambda t: (t.values[0], -t.number), default=None)


def target(study: optuna.Study, train: Mapping[str, Any] | None = None, trial: int | None = None) -> Target | None:
    """The study's best trial (`best_trial`; `trial`: that COMPLETE trial instead) and the paper's configuration it
    is measured against; None without a COMPLETE trial or for a study made elsewhere."""
    setup = study_setup(study, train)
    best = best_trial(study) if trial is None else study.trials[trial]
    if setup is None or best is None or best.state != TrialState.COMPLETE:
        return None
    space, base, base_train = setup
    try:
        _, model, trained = space.sample_fixed(best.params, base, base_train)
    except InvalidCombination:
        return None
    first = int(best.user_attrs.get("duplicate_of", best.number))
    ref = next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.user_attrs.get("reference") and "duplicate_of" not in t.user_attrs), None)
    return Target(first, best.number, dict(best.params), model, trained, base, base_train, float(best.values[0]),
                  None if ref is None else ref.number, None if ref is None else float(ref.values[0]))


# ---------------------------------------------------------------------------------- the ablate.py command
def _preset_of(base: SepViTConfig) -> tuple[str, dict[str, Any]]:
    """The preset `base` is closest to (the default model on a tie) and the fields it changes, data-owned ones
    aside (the dataset and --img-size set those)."""
    def changes(name: str) -> dict[str, Any]:
        return {k: v for k, v in base.diff(SepViTConfig.preset(name)).items() if k not in DATA_OWNED}

    name = min([DEFAULT_MODEL, *(p for p in PRESETS if p != DEFAULT_MODEL)], key=lambda p: len(changes(p)))
    return name, changes(name)


def switch_flags(base: SepViTConfig, cfg: SepViTConfig) -> tuple[list[str] | None, str]:
    """The ablate.py switches that turn `base` into `cfg`, or (None, why no switch does)."""
    flags: list[str] = []
    for name, value in cfg.diff(base).items():
        if name in _FLAG_SWITCHES and value == _FLAG_SWITCHES[name][0]:
            flags.append(_FLAG_SWITCHES[name][1])
        elif name == "group_size":
            flags += ["--group-size", *(str(v) for v in (value if isinstance(value, list) else [value]))]
        elif name in _VALUE_SWITCHES:
            flags += [_VALUE_SWITCHES[name], cli_text(value)]
        else:
            return None, f"{name}={cli_text(value)} is not an ablate.py switch (--model-kwargs changes the reference too)"
    return flags, ""


def ablate_command(base: SepViTConfig, cfg: SepViTConfig, train: TrainConfig, seeds: int) -> tuple[str | None, str]:
    """The `ablate.py --compare --seeds K` command that trains `cfg` against `base` with `train` (the same
    SepViTConfigs and TrainConfig, hence the same runs), or (None, why no command does)."""
    switches, why = switch_flags(base, cfg)
    if switches is None:
        return None, why
    preset, kwargs = _preset_of(base)
    argv = [*(["--model", preset] if preset != DEFAULT_MODEL else [])]
    if kwargs:
        argv += ["--model-kwargs", *(f"{k}={cli_text(v)}" for k, v in kwargs.items())]
    argv += switches
    default = TrainConfig()
    for f in fields(TrainConfig):
        value = getattr(train, f.name)
        if f.name in BOOKKEEPING or value == getattr(default, f.name):
            continue
        if f.name == "img_size" and value == SepViTConfig.preset(preset).img_size:
            continue  # the preset's own size: ablate.py fills it in the same way
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, cli_text(value)]
    argv += ["--compare", "--seeds", str(seeds)]
    return " ".join([ABLATE, *(shlex.quote(a) for a in argv)]), ""


def command_for(t: Target, seeds: int) -> tuple[str | None, str]:
    """The ablate.py command that confirms `t` at `seeds` paired seeds, or (None, why none does)."""
    if t.training_changes:
        return None, (f"it differs from the paper's configuration in training settings "
                      f"({', '.join(t.training_changes)}), and a runner call trains both with one TrainConfig")
    return ablate_command(t.base, t.model, t.confirm_train, seeds)


# ---------------------------------------------------------------------------------- the stored answer
def record_key(trial: int) -> str:
    return f"{RECORD_PREFIX}{trial}"


def record_of(study: optuna.Study, t: Target) -> dict[str, Any] | None:
    """The confirmation stored for the target's configuration (None: never confirmed)."""
    record = study.user_attrs.get(record_key(t.trial))
    return record if isinstance(record, dict) else None


def same_request(record: Mapping[str, Any], t: Target, seeds: list[int]) -> bool:
    """A stored confirmation made of these seeds, this configuration and these training settings."""
    return (record.get("seeds") == seeds and record.get("model") == t.model.to_dict()
            and record.get("base") == t.base.to_dict() and _results_train(record.get("train")) == _results_train(
                t.base_train.to_dict()))


def seeds_relation(record: Mapping[str, Any] | None, t: Target, seeds: list[int]) -> str | None:
    """How a stored confirmation of this configuration and training stands to a request at `seeds`: "same" (these
    seeds), "fewer" (the first of them only: the call a request at `seeds` extends, and a look already taken) or
    "more" (more seeds, starting with these: its runs hold the request's); None for any other record or none."""
    have = list((record or {}).get("seeds") or [])
    if not have or not same_request(record, t, have):
        return None
    if have == seeds:
        return "same"
    if len(have) < len(seeds) and seeds[:len(have)] == have:
        return "fewer"
    return "more" if have[:len(seeds)] == seeds else None


def _results_train(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The training settings that decide a result; a field added since a record was stored takes the value such
    runs had (`TrainConfig.as_logged_before`)."""
    filled = TrainConfig.as_logged_before(dict(data or {}))
    return {k: v for k, v in filled.items() if k not in (*BOOKKEEPING, "output", "data_dir", "seed")}


def difference(record: Mapping[str, Any]) -> Difference | None:
    """The comparison of a stored confirmation (`experiments.stats.compare`, the rules of ablate.py's table)."""
    runs = [r for r in record.get("runs", []) if r.get("status") == "FINISHED" and r.get("top1") is not None]
    best = [r for r in runs if r["label"] == record["label"]]
    ref = [r for r in runs if r["label"] == record["reference_label"]]
    if not best or not ref:
        return None
    return compare([r["top1"] for r in best], [r["top1"] for r in ref], seeds_a=[r["seed"] for r in best],
                   seeds_b=[r["seed"] for r in ref])


def _seed_range(seeds: list[int]) -> str:
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def answer(d: Difference) -> str:
    """Whether a confirmed difference is beyond seed noise, in words, from its verdict."""
    if d.verdict in ("separated", "paired", "welch"):
        return ("yes: the gain is beyond seed noise" if d.diff > 0 else
                "no: the best trial's configuration is worse than the paper's, beyond seed noise")
    if d.verdict == "equivalent":
        return (f"no: the two are equivalent (no difference larger than {d.bound:.1f} points, within the "
                f"±{EQUIVALENCE_MARGIN:g}-point margin)")
    if d.verdict == "unresolved":
        more = (f"~{d.seeds_needed} seeds per arm would resolve it (--confirm {d.seeds_needed})"
                if d.seeds_needed is not None else "more than 50 seeds per arm would be needed at this noise")
        return (f"not resolved: seed noise still allows differences up to {d.bound:.1f} points, beyond the "
                f"±{EQUIVALENCE_MARGIN:g}-point margin; {more}")
    return "undetermined: fewer than two seeds per arm finished"


def confirmation_sentence(study: optuna.Study, train: Mapping[str, Any] | None = None, seeds: int = 3) -> str | None:
    """One sentence: is the best trial's gain over the paper's configuration beyond seed noise? From the stored
    confirmation when there is one; else it says the gain is unconfirmed and gives the command that confirms it.
    None for a study without a COMPLETE trial or made elsewhere."""
    t = target(study, train)
    if t is None:
        return None
    if t.is_reference:
        return (f"Beyond seed noise? Nothing to confirm: the most accurate trial, {t.best}, is the paper's "
                "configuration.")
    name = f"trial {t.best}" + (f" (a repeat of trial {t.trial})" if t.best != t.trial else "")
    record = record_of(study, t)
    if record is not None and record.get("seeds") != t.fresh_seeds(len(record.get("seeds") or [])):
        return _stale_sentence(t, name, record, seeds)
    if record is not None and record.get("status") == "running":
        return _running_sentence(name, record, seeds) + _meanwhile(study, t, name, record)
    if record is not None and record.get("status") == "finished" and difference(record) is not None:
        return "Beyond seed noise? " + _confirmed(study, t, name, record)
    if record is not None and record.get("status") in ("interrupted", "failed"):
        k = len(record.get("seeds", [])) or seeds
        return (f"Beyond seed noise? Unknown: the confirmation of {name} at {k} seeds did not finish "
                f"({record.get('reason') or record['status']}); the search command with `--n-trials 0 --confirm {k}` "
                f"finishes it (call folder {record.get('call_folder')}, finished runs kept)."
                + _meanwhile(study, t, name, record))
    distance = (f"{t.top1 - t.reference_top1:+.2f} points from the paper's configuration (trial {t.reference_trial}) "
                "with one seed each, which seed noise alone may produce" if t.reference_top1 is not None else
                "not measured against the paper's configuration (no COMPLETE reference trial)")
    command, why = command_for(t, seeds)
    how = (f"`{command}` answers it at {seeds} paired seeds (`--n-trials 0 --confirm {seeds}` on this search does the "
           "same and keeps the answer in the study)" if command else
           f"no ablate.py command expresses it ({why}); rerun this search with `--n-trials 0 --confirm {seeds}`"
           if not t.training_changes else f"no runner call confirms it ({why})")
    return f"Beyond seed noise? Unconfirmed: {name} is {distance}; {how}."


def _confirmed(study: optuna.Study, t: Target, name: str, record: Mapping[str, Any]) -> str:
    """The answer of a finished confirmation: its difference, intervals and verdict, and what looking more than
    once cost."""
    d = difference(record)
    chance = _at_chance(study, record)
    paired = (f"paired 95 % CI [{d.paired[1]:+.2f}, {d.paired[2]:+.2f}], " if d.paired and d.paired_seeds >= 2
              else "")
    verdict = f"not interpretable: {chance} at chance level" if chance else answer(d)
    return (f"Confirmed at {len(record['seeds'])} paired seeds ({_seed_range(record['seeds'])}; call "
            f"{record.get('call_folder')}): {name}'s configuration ({record['label']}) against the paper's, "
            f"{d.diff:+.2f} points, {paired}Welch [{d.low:+.2f}, {d.high:+.2f}], verdict "
            f"{verdict_text(d.verdict, d.bound, d.seeds_needed)}: {verdict}." + _looks(record, t))


def _meanwhile(study: optuna.Study, t: Target, name: str, record: Mapping[str, Any]) -> str:
    """' ' + the answer at fewer seeds that an unfinished extension leaves standing; '' when there is none."""
    earlier = record.get("earlier")
    if not isinstance(earlier, dict) or difference(earlier) is None:
        return ""
    return f" Until it finishes, the answer at {len(earlier['seeds'])} seeds stands: " + _confirmed(
        study, t, name, earlier)


def _looks(record: Mapping[str, Any], t: Target) -> str:
    """' ' + what looking more than once costs (`report.looks_sentence`), for a record extended by a larger
    --confirm, with the ablate.py command that confirms at fresh seeds; '' for one looked at once."""
    seeds = list(record.get("seeds") or [0])
    fresh, _ = ablate_command(t.base, t.model, t.confirm_train.replace(seed=seeds[-1] + 1), len(seeds))
    sentence = looks_sentence(record.get("seed_counts"), seeds[-1] + 1, confirmation=True, fresh=fresh)
    return "" if sentence is None else " " + sentence


def _stale_sentence(t: Target, name: str, record: Mapping[str, Any], seeds: int) -> str:
    """A stored confirmation at other seeds than today's rule gives (e.g. the trials' own, as --confirm once used):
    refused, not shown as the answer, with the commands that redo it."""
    k = len(record.get("seeds") or []) or seeds
    command, _ = command_for(t, k)
    also = f", or `{command}` trains the same runs outside the study" if command else ""
    made = _seed_range(list(record.get("seeds") or [])) or "unknown seeds"
    return (f"Beyond seed noise? Unconfirmed: the stored confirmation of {name} was made at other seeds ({made}) "
            f"than the fresh seeds a confirmation uses ({_seed_range(t.fresh_seeds(k))}: the study's seed + 1 .. + "
            f"{k}, not the trials' own, whose luck selected the best trial), so it is not taken as the answer; redo "
            f"it with the search command and `--n-trials 0 --confirm {k}` (kept in the study){also}.")


def _running_sentence(name: str, record: Mapping[str, Any], seeds: int) -> str:
    k = len(record.get("seeds", [])) or seeds
    worker = record.get("worker") or {}
    return (f"Beyond seed noise? Unknown: the confirmation of {name} at {k} seeds is recorded as running (pid "
            f"{worker.get('pid')} on {worker.get('host')} since {record.get('when')}): still in progress, or its "
            f"process was killed before it could say so; the search command with `--n-trials 0 --confirm {k}` "
            f"resumes it once that process is gone (call folder {record.get('call_folder')}, finished runs kept).")


def _at_chance(study: optuna.Study, record: Mapping[str, Any]) -> str:
    """Which arm's mean top-1 lies within chance (the runner's flag), in words: one arm, 'both', or ''."""
    data = study.user_attrs.get("sepvit.data") or {}
    if not data.get("num_classes") or not data.get("val_size"):
        return ""
    high = chance_interval(int(data["num_classes"]), int(data["val_size"]))[1]
    flagged = []
    for label, words in ((record["label"], "the best trial's configuration"),
                         (record["reference_label"], "the paper's configuration")):
        values = [r["top1"] for r in record.get("runs", []) if r["label"] == label and r.get("top1") is not None]
        if values and sum(values) / len(values) <= high:
            flagged.append(words)
    return "both" if len(flagged) == 2 else "".join(flagged)
