"""The notebooks: stored outputs in order (no execution) and a smoke run of each that must draw its figures."""
from __future__ import annotations

import pytest

from workbench import notebooks

# figures each notebook draws at least (stored: a full run; smoke: the CI run)
MIN_FIGURES = {"01_complexity": 9, "02_attention_maps": 15, "03_ablation_report": 3, "04_search_report": 3, "05_latency": 3}


@pytest.mark.parametrize("name", notebooks.notebook_names())
def test_stored_notebook_matches_its_source_and_shows_its_figures(name):
    assert name in MIN_FIGURES, f"say how many figures {name} draws in MIN_FIGURES"
    assert notebooks.problems(name, MIN_FIGURES[name]) == []


@pytest.mark.parametrize("name", notebooks.notebook_names())
def test_notebook_runs_and_draws_its_figures(name):
    executed = notebooks.execute(name, timeout=600, env={"SEPVIT_SMOKE": "1"})
    assert notebooks.errors(executed) == []
    assert notebooks.png_count(executed) >= MIN_FIGURES[name]
