"""What produced a run, recorded on it: the code (git commit, uncommitted changes), the packages and the machine.

`environment_params` are a run's `env.*`/`git.*` params (enough to tell two runs' code and machine apart);
`run_context_tags` the tags `mlflow.start_run` would add (user, source, git commit); `pip_requirements` what a
logged model needs installed.
"""
from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Iterable

GIT_COMMIT_TAG = "mlflow.source.git.commit"


def cpu_model() -> str:
    """The processor's model name (Linux /proc/cpuinfo), else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment_params() -> dict[str, str]:
    """Git commit, package versions and machine: enough to tell two runs' code apart."""
    import mlflow  # ~1.3 s to import: only when a run is recorded (the rest are loaded by then anyway)
    import numpy
    import timm
    import torch

    params = {
        "env.python": platform.python_version(),
        "env.torch": torch.__version__,
        "env.timm": timm.__version__,
        "env.mlflow": mlflow.__version__,
        "env.numpy": numpy.__version__,
        "env.platform": platform.platform(terse=True),
        "env.cuda": torch.version.cuda or "none",
        # a run's numbers are deterministic for one thread count only: another count can move top-1 by points
        "env.torch_threads": str(torch.get_num_threads()),
        "env.cpu": cpu_model(),
    }
    commit, dirty = _git_state()
    params["git.commit"] = commit or "unknown"
    if dirty is not None:
        params["git.dirty"] = str(dirty)
    return params


@functools.lru_cache(maxsize=1)
def _git_state() -> tuple[str | None, bool | None]:
    """(commit, uncommitted changes?) of this checkout, once per process: the code a process runs is the code it
    imported at its start, whatever is committed later."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit.stdout.strip() or None, bool(dirty.stdout.strip()) if commit.returncode == 0 else None


def run_context_tags() -> dict[str, str]:
    """The tags `mlflow.start_run` adds to a run (user, source name and type, and git when MLflow finds it from
    the script), with the git commit of this package's checkout, which is the code that runs."""
    from mlflow.tracking.context.registry import resolve_tags

    tags = dict(resolve_tags())
    commit, _ = _git_state()
    if commit:
        tags[GIT_COMMIT_TAG] = commit
    return tags


def pip_requirements(distributions: Iterable[str]) -> list[str]:
    """'name==installed version' for each distribution (name alone if it is not installed): given to
    `log_pytorch_model` so that MLflow neither imports the model's modules nor probes pip to guess them."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in distributions:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out
