"""One trial of the search: sample a configuration, refuse it at once if invalid, train it with the runner's
engine reporting validation top-1 after every epoch (the pruner's signal), and return its objectives (top-1, and
the analytic MACs and/or the measured latency for a Pareto front)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import optuna
import torch

from sepvit.config import SepViTConfig

from analysis import timing
from analysis.analytic_macs import model_macs
from experiments.runner import PlannedRun, RunContext
from experiments.runner import run as training
from experiments.runner.engine import fit_model_to_data, resolve_device
from experiments.runner.run import RunInterrupted, reported_metric
from experiments.search_signals import as_stop, describe_stop
from experiments.search_space import InvalidCombination, Space
from experiments.search_storage import (HOST, Settings, find_trial_run, folder_name, mask_secrets, record_fail_reason,
                                        record_trial_without_training, trial_tags)
from experiments.train_config import TrainConfig

log = logging.getLogger("sepvit.search")


class TrialFailed(RuntimeError):
    """A trial whose training ended FAILED without raising (e.g. a NaN loss)."""


class StudyStorageError(RuntimeError):
    """The study's storage failed while a trial reported to it (the message has its credentials masked)."""



# ---------------------------------------------------------------------------------- cost objectives
def architecture_key(cfg: SepViTConfig) -> str:
    """Configs that differ only in training-time regularisation (dropout, drop path) run the same network."""
    data = {k: v for k, v in cfg.to_dict().items() if k not in ("drop_rate", "drop_path_rate")}
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def analytic_macs(cfg: SepViTConfig) -> int:
    """MACs of one image: the analytic count in fvcore's convention (the paper's formulas + norms)."""
    return int(model_macs(cfg).fvcore)


def measure_latency(cfg: SepViTConfig, device: str) -> float:
    """Median batch-1 forward latency (ms) with `analysis.timing.latency_ms`, 30 calls after 5 warm-up calls."""
    settings = timing.Settings(batch_size=1, img_size=cfg.img_size, device=str(resolve_device(device)),
                        threads=torch.get_num_threads(), rounds=30, warmup=5)
    with torch.random.fork_rng():
        model = cfg.build()
        return float(timing.latency_ms(model, cfg.in_chans, settings).median)


def latency_of(study: optuna.Study, cfg: SepViTConfig, device: str) -> float:
    """Measured once per distinct architecture in the whole study (kept in the study, shared by workers)."""
    key = f"latency_ms:{architecture_key(cfg)}"
    known = study.user_attrs.get(key)
    if known is not None:
        return float(known)
    value = measure_latency(cfg, device)
    study.set_user_attr(key, value)
    return value


# ---------------------------------------------------------------------------------- the trial
class TrialObjective:
    """One trial: sample a configuration, prune it at once if invalid, else train it with the runner's engine,
    reporting validation top-1 after each epoch; return the objectives."""

    def __init__(self, settings: Settings, space: Space, base: SepViTConfig, train: TrainConfig, datasets,
                 tracker, output: Path):
        self.settings, self.space, self.base, self.train = settings, space, base, train
        self.datasets, self.tracker, self.output = datasets, tracker, output

    def __call__(self, trial: optuna.Trial):
        # who runs it: a later call fails it at once if this process dies (fail_dead_trials)
        trial.set_user_attr("worker", {"host": HOST, "pid": os.getpid()})
        trial.set_user_attr("mlflow_parent_run_id", self.settings.parent_run_id)
        try:
            return self._objective(trial)
        except (KeyboardInterrupt, RunInterrupted) as exc:  # Ctrl-C or a stop signal, wherever it came
            stop = as_stop(exc)
            if "fail_reason" not in trial.user_attrs:
                reference = bool(trial.user_attrs.get("reference"))
                self._mark_failed(trial.number, trial_tags(self.settings, trial.number, dict(trial.params), reference),
                                  f"interrupted ({describe_stop(stop)[0]})", dict(trial.params), trial)
            raise stop from None  # Optuna marks the trial FAIL and stops this worker

    def _objective(self, trial: optuna.Trial):
        s, number = self.settings, trial.number
        reference = bool(trial.user_attrs.get("reference"))
        try:
            values, model_cfg, train_cfg = self.space.sample(_suggest(trial), self.base, self.train)
            model_cfg = fit_model_to_data(model_cfg, self.datasets[2])
        except InvalidCombination as exc:
            reason = f"invalid combination, pruned before training: {exc}"
            trial.set_user_attr("invalid", str(exc))
            record_trial_without_training(self.tracker, s.parent_run_id,
                                          trial_tags(s, number, dict(trial.params), reference), "PRUNED", reason,
                                          dict(trial.params))
            raise optuna.TrialPruned(reason) from None
        except Exception as exc:
            self._mark_failed(number, trial_tags(s, number, dict(trial.params), reference),
                              f"building the trial's model: {type(exc).__name__}: {exc}", dict(trial.params), trial)
            raise
        tags = trial_tags(s, number, values, reference)
        same = next((t for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                     if t.params == trial.params and t.number != number), None)
        if same is not None:  # the same configuration with the same seed trains to the same numbers: reuse them
            return self._reuse(trial, same, tags, values)
        try:  # a failure before training is a FAIL with its reason too, in Optuna and MLflow
            macs = analytic_macs(model_cfg)
            trial.set_user_attr("macs", macs)
            trial.set_user_attr("config", model_cfg.to_dict())
            latency = latency_of(trial.study, model_cfg, train_cfg.device) if "latency" in s.objectives else None
            if latency is not None:
                trial.set_user_attr("latency_ms", latency)
            metric = reported_metric(train_cfg)
        except Exception as exc:
            self._mark_failed(number, tags, f"before training: {type(exc).__name__}: {exc}", values, trial)
            raise
        prunable = len(s.objectives) == 1 and s.pruner != "none"
        pruned: list[tuple[int, float]] = []

        def on_epoch_end(epoch: int, metrics: dict[str, float]) -> bool:
            if not prunable:
                return False
            try:
                trial.report(metrics[metric], epoch)
                should_prune = epoch < train_cfg.epochs and trial.should_prune()
            except Exception as exc:  # the storage's error may quote its URL: the run's records keep it masked
                raise StudyStorageError(mask_secrets(f"reporting epoch {epoch} to the study: {type(exc).__name__}: "
                                                     f"{exc}")) from None
            if should_prune:
                pruned.append((epoch, metrics[metric]))
                return True
            return False

        run_dir = self.output / folder_name(s.experiment) / folder_name(s.study_name) / f"trial-{number:04d}"
        try:
            result = training.train_and_evaluate(
                PlannedRun.of(model_cfg, train_cfg, f"trial {number}", tags),
                RunContext(run_dir=run_dir, tracker=self.tracker, datasets=self.datasets, on_epoch_end=on_epoch_end,
                           parent_run_id=s.parent_run_id,
                           cost={"macs": float(macs), **({"latency_ms": latency} if latency else {})}))
        except Exception as exc:
            self._mark_failed(number, tags, f"{type(exc).__name__}: {exc}", values, trial)
            raise
        for name in ("last.pth", "interrupted.pth"):  # a trial is never resumed: the study is the unit of resume
            (run_dir / name).unlink(missing_ok=True)
        trial.set_user_attr("mlflow_run_id", result.run_id)
        if result.status != "FINISHED":  # its training ran and failed by itself (e.g. a NaN loss)
            trial.set_user_attr("training_result", result.status)
            self._mark_failed(number, tags, result.reason or result.status, values, trial, run_id=result.run_id)
            raise TrialFailed(result.reason or result.status)
        trial.set_user_attr("top1", result.top1)
        trial.set_user_attr("best_top1", result.best_top1)
        trial.set_user_attr("epochs", len(result.history))
        objective_values = {"top1": result.top1, "macs": float(macs), "latency": latency}
        self.tracker.log_metrics(result.run_id, {"objective.macs_analytic": float(macs),
                                                 **({"objective.latency_ms": latency} if latency else {})}, step=0)
        if pruned:
            epoch, value = pruned[0]
            reason = f"pruned after epoch {epoch} of {train_cfg.epochs}: top-1 {value:.2f}"
            trial.set_user_attr("pruned_reason", reason)
            self.tracker.set_tags(result.run_id, {"optuna.state": "PRUNED", "optuna.pruned_reason": reason})
            raise optuna.TrialPruned(reason)
        self.tracker.set_tags(result.run_id, {"optuna.state": "COMPLETE"})
        out = [float(objective_values[o]) for o in s.objectives]
        return out[0] if len(out) == 1 else out

    def _reuse(self, trial: optuna.Trial, same: optuna.trial.FrozenTrial, tags: dict, values: dict):
        """A repeat of a COMPLETE trial (samplers re-propose configurations): its values, without training again
        (trials share the training seed, so the run would repeat itself); marked `duplicate_of` everywhere."""
        for key in ("top1", "best_top1", "epochs", "macs", "config", "latency_ms"):
            if key in same.user_attrs:
                trial.set_user_attr(key, same.user_attrs[key])
        trial.set_user_attr("duplicate_of", same.number)
        reason = f"duplicate of trial {same.number}: its values are reused (same configuration and seed)"
        run_id = self.tracker.start_run(tags["config"], parent_run_id=self.settings.parent_run_id,
                                        tags={**tags, "optuna.state": "COMPLETE", "optuna.duplicate_of": str(same.number),
                                              "status_reason": reason})
        self.tracker.log_params(run_id, {f"trial.{k}": v for k, v in values.items()})
        self.tracker.log_metrics(run_id, {"final_val_top1": same.values[0]}, step=0)
        self.tracker.end_run(run_id, "FINISHED")
        trial.set_user_attr("mlflow_run_id", run_id)
        return same.values[0] if len(same.values) == 1 else list(same.values)

    def _mark_failed(self, number: int, tags: dict, reason: str, values: dict, trial: optuna.Trial,
                     run_id: str | None = None) -> None:
        reason = mask_secrets(reason)
        record_fail_reason(trial.study._storage, trial._trial_id, reason)
        try:
            if run_id is None:
                run = find_trial_run(self.tracker, self.settings.study_name, number, self.settings.parent_run_id)
                run_id = run.info.run_id if run is not None else None
            if run_id is None:
                record_trial_without_training(self.tracker, self.settings.parent_run_id, tags, "FAIL", reason, values)
            else:
                self.tracker.set_tags(run_id, {"optuna.state": "FAIL"})
                if self.tracker.run_status(run_id) == "RUNNING":
                    self.tracker.end_run(run_id, "FAILED", reason)
        except Exception as exc:  # noqa: BLE001  (never hide the trial's own error)
            log.error("trial %d: could not mark its MLflow run failed: %s", number, exc)


def _suggest(trial: optuna.Trial):
    def choose(p, high):
        if p.choices is not None:
            return trial.suggest_categorical(p.name, list(p.choices))
        if p.kind == "int":
            return trial.suggest_int(p.name, int(p.low), int(high), step=int(p.step or 1), log=p.log)
        return trial.suggest_float(p.name, float(p.low), float(high), step=p.step, log=p.log)
    return choose
