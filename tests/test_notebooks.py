"""The notebooks: stored outputs in order (no execution) and a smoke run of each that must draw its figures."""
from __future__ import annotations

import sys

import pytest
from runner_support import mlflow_db_template  # noqa: F401  (fixture)
from zoo_support import STORE_LOOKUP, zoo_store  # noqa: F401  (fixture)

from workbench import notebooks

# figures each notebook draws at least (stored: a full run; smoke: the CI run)
MIN_FIGURES = {"01_complexity": 9, "02_attention_maps": 16, "03_ablation_report": 3, "04_search_report": 3, "05_latency": 3}


@pytest.mark.parametrize("name", notebooks.notebook_names())
def test_stored_notebook_matches_its_source_and_shows_its_figures(name):
    assert name in MIN_FIGURES, f"say how many figures {name} draws in MIN_FIGURES"
    assert notebooks.problems(name, MIN_FIGURES[name]) == []


@pytest.mark.parametrize("name", notebooks.notebook_names())
def test_notebook_runs_and_draws_its_figures(name):
    executed = notebooks.execute(name, timeout=600, env={"SEPVIT_SMOKE": "1"})
    assert notebooks.errors(executed) == []
    assert notebooks.png_count(executed) >= MIN_FIGURES[name]


# ---------------------------------------------------------------------------------- provenance (--check)
TINY = '''# %%
import analysis
from IPython.display import Image, display

display(Image(data=b"\\x89PNG\\r\\n\\x1a\\n" + bytes(16), format="png"))
'''


@pytest.fixture
def tiny_project(tmp_path, monkeypatch):
    """A project of three packages and one notebook that imports one of them (which imports another)."""
    for path, text in {"notebooks/tiny.py": TINY, "analysis/__init__.py": "import sepvit\n",
                       "sepvit/__init__.py": "VALUE = 1\n", "sepvit/spaces/space.yaml": "a: 1\n",
                       "experiments/__init__.py": "import analysis\n"}.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    monkeypatch.setattr(notebooks, "ROOT", tmp_path)
    monkeypatch.setattr(notebooks, "FOLDER", tmp_path / "notebooks")
    monkeypatch.delenv("SEPVIT_SMOKE", raising=False)
    return tmp_path


def test_check_passes_on_todays_outputs_and_names_the_module_that_changed_since(tiny_project, capsys):
    import nbformat

    assert notebooks.main(["--check"]) == 1  # nothing stored yet
    assert notebooks.main(["--execute", "tiny"]) == 0
    recorded = nbformat.read(tiny_project / "notebooks" / "tiny.ipynb", as_version=4).metadata["provenance"]
    assert recorded["packages"] == ["analysis", "sepvit"]  # experiments is not imported, directly or not
    assert sorted(recorded["sources"]) == ["analysis/__init__.py", "sepvit/__init__.py", "sepvit/spaces/space.yaml"]
    capsys.readouterr()
    assert notebooks.main(["--check"]) == 0
    assert "made by today's code" in capsys.readouterr().out

    (tiny_project / "experiments" / "__init__.py").write_text("import analysis\nOTHER = 2\n")
    assert notebooks.main(["--check"]) == 0  # a package the notebook does not depend on
    capsys.readouterr()
    (tiny_project / "sepvit" / "__init__.py").write_text("VALUE = 2\n")
    (tiny_project / "analysis" / "extra.py").write_text("X = 1\n")
    assert notebooks.main(["--check"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "tiny.ipynb is stale: sepvit/__init__.py, analysis/extra.py (added) changed since its outputs were made")
    assert lines[0].endswith("re-run python -m workbench.notebooks --execute tiny")


def test_check_reports_a_notebook_without_provenance_and_an_unreadable_source(tiny_project, capsys):
    import jupytext
    import nbformat

    nbformat.write(jupytext.read(tiny_project / "notebooks" / "tiny.py"), tiny_project / "notebooks" / "tiny.ipynb")
    assert notebooks.stale("tiny") == [
        "tiny.ipynb records no provenance (made before provenance was recorded): "
        "re-run python -m workbench.notebooks --execute tiny"]
    (tiny_project / "notebooks" / "tiny.py").write_text("# %%\nimport analysis as\n")
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(notebooks.main(["--execute", "tiny"]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tiny.py does not parse" in err[0]


# ---------------------------------------------------------------------------------- zoo lookups (--check)
def _declare(project, lookup_line: str) -> None:
    (project / "notebooks" / "tiny.py").write_text(TINY.replace("import analysis\n", f"import analysis\n\n{lookup_line}\n"))


def test_a_notebooks_zoo_lookup_is_read_from_its_source_without_running_it(tiny_project):
    assert notebooks.zoo_lookup("tiny") is None and notebooks.zoo_problems("tiny") == []  # declares none
    _declare(tiny_project, 'ZOO_LOOKUP = {"sepvit": (0, 1, 2), "msa": [0]}')
    assert notebooks.zoo_lookup("tiny") == {"sepvit": [0, 1, 2], "msa": [0]}
    for line in ('ZOO_LOOKUP = {name: (0,) for name in ("sepvit",)}', 'ZOO_LOOKUP = {"sepvit": 0}',
                 'ZOO_LOOKUP = {"sepvit": (0,)}\nZOO_LOOKUP = {}'):
        _declare(tiny_project, line)
        with pytest.raises(ValueError, match="ZOO_LOOKUP must be a literal mapping of zoo names to seeds"):
            notebooks.zoo_lookup("tiny")


def test_check_says_in_one_line_when_a_zoo_lookup_would_retrain(tiny_project, monkeypatch):
    _declare(tiny_project, 'ZOO_LOOKUP = {"local-only": (0, 1), "msa": (0,)}')
    (found,) = notebooks.zoo_problems("tiny", smoke=True)  # the project's output/ holds no store
    assert found.startswith("tiny.py's zoo lookup would train 3 of 3 zoo model(s) at the smoke budget, not in "
                            f"{tiny_project / 'output'}: local-only seeds 0, 1; msa seed 0: running it would retrain")
    assert not (tiny_project / "output").exists()  # the check creates no store
    monkeypatch.setattr(notebooks.sys, "executable", "false")  # a check that fails without saying what is missing
    assert notebooks.zoo_problems("tiny", smoke=True) == ["tiny.py's zoo lookup could not be checked: exit code 1"]


@pytest.mark.slow
def test_check_passes_with_the_zoo_models_in_the_store_and_fails_without(tiny_project, zoo_store, monkeypatch, capsys):
    _declare(tiny_project, f"ZOO_LOOKUP = {STORE_LOOKUP!r}")
    assert notebooks.main(["--execute", "tiny"]) == 0
    (tiny_project / "output").symlink_to(zoo_store, target_is_directory=True)
    monkeypatch.setenv("SEPVIT_SMOKE", "1")  # the store holds smoke-budget models
    capsys.readouterr()
    assert notebooks.main(["--check"]) == 0
    assert "their zoo models in the store" in capsys.readouterr().out
    (tiny_project / "output").unlink()
    (tiny_project / "output").mkdir()
    assert notebooks.main(["--check"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tiny.py's zoo lookup would train 2 of 2 zoo model(s)")


# ---------------------------------------------------------------------------------- notebook 04's stored study
STORED_STUDY = notebooks.FOLDER / "data" / "search-default-budget"


def test_the_stored_search_study_is_confirmed_and_calibrated_at_the_runners_default_budget(tmp_path):
    """Notebook 04 reads this study by default: it must be the search at the runner's default budget, with its best
    trial confirmed at fresh paired seeds and a calibration at the same budget beside it."""
    import json
    import shutil

    import optuna

    from experiments import search_confirm
    from experiments.search_call import DEFAULT_STUDY
    from experiments.train_config import TrainConfig

    copy = tmp_path / "optuna.db"  # opening an SQLite study may write to its file
    shutil.copyfile(STORED_STUDY / "optuna.db", copy)
    study = optuna.load_study(study_name=DEFAULT_STUDY, storage=f"sqlite:///{copy}")
    t = search_confirm.target(study)
    assert t is not None, "the stored study has no COMPLETE trial"
    default = TrainConfig()
    assert (t.base_train.epochs, t.base_train.train_size, t.base_train.val_size, t.base_train.dataset) == (
        default.epochs, default.train_size, default.val_size, default.dataset)
    assert any(trial.user_attrs.get("reference") for trial in study.trials)
    assert not t.is_reference, "the stored study's best trial is the paper's configuration: nothing was confirmed"
    record = search_confirm.record_of(study, t)
    assert record is not None and record["status"] == "finished"
    assert record["seeds"] == [t.base_train.seed + 1, t.base_train.seed + 2, t.base_train.seed + 3]
    d = search_confirm.difference(record)
    # what the folder's README, docs/search.md and the stored notebook 04 report
    assert (round(d.diff, 2), d.verdict, d.seeds_needed) == (1.13, "unresolved", 6)
    calibration = json.loads((STORED_STUDY / "calibration.json").read_text())
    assert calibration["seeds"] == 3 and calibration["epochs"] == default.epochs
    assert round(calibration["seed_sd"], 2) == 1.16
