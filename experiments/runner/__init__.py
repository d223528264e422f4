"""The runner: train configurations x seeds, record every run in MLflow, compare them; finish what was interrupted.

    from experiments import runner

    plan = runner.plan_call({"reference": base, "no-gsa": base.replace(gsa=False)}, TrainConfig(epochs=3),
                            seeds=3, experiment="my-ablation")       # checks everything, builds the data
    results = runner.run_call(plan)                                 # trains, logs, reports; never raises for a stop
    print(results.report, results.folder, [r.top1 for r in results.runs])
    runner.resume_call(results.folder, changes={"epochs": 5})       # finish it (or extend it)
    runner.resume_call(results.folder, seeds=6)                     # add seeds to every configuration

One training run alone: `train_and_evaluate(PlannedRun.of(model_cfg, train_cfg, name), RunContext(...))` (the
search trains its trials so). `experiments/ablate.py` is this API's command line.

Modules: `plan` (a call checked before anything is made), `running` (its parent run, its runs, its report),
`lifecycle` (every exit of a call; torchrun ranks), `executor` (runs in sequence or in worker processes), `run`
(one run: resume, checkpoints, MLflow, signals), `engine` (the epoch loop, timm's parts), `checkpoint`, `calls`
(the call folder: the unit of resume), `call_costs` (the report's interleaved timings).
"""
from experiments.runner.calls import Call, CallError, PlannedRun, find_call_folder
from experiments.runner.plan import DEFAULT_EXPERIMENT, RESUME_MAY_CHANGE, Plan, Resumption, plan_call, plan_resume
from experiments.runner.run import Result, RunContext, RunInterrupted, train_and_evaluate
from experiments.runner.running import Results, resume_call, run_call

__all__ = ["Call", "CallError", "DEFAULT_EXPERIMENT", "PlannedRun", "Plan", "RESUME_MAY_CHANGE", "Result", "Results",
           "Resumption", "RunContext", "RunInterrupted", "find_call_folder", "plan_call", "plan_resume",
           "resume_call", "run_call", "train_and_evaluate"]
