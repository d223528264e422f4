"""The benchmark's results (`analysis.speed` rows) as MLflow runs: one parent per benchmark, one child per row."""
from __future__ import annotations

import json
from typing import Any, Sequence

from workbench.provenance import environment_params
from workbench.tracking import Tracker

from analysis.timing import Settings


def log_to_mlflow(rows: list[dict[str, Any]], kind: str, tracking_uri: str, experiment: str,
                  command: Sequence[str], table: str) -> str:
    """One parent run (settings as params, results.json and table.txt as artifacts) with a child run per row
    (stage or model: numbers as metrics, text as params). Returns the parent run id."""
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
