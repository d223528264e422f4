"""The README's measured block is parsed from docs/results.md (the runner's own printed tables), never typed in."""
from __future__ import annotations

from pathlib import Path

import pytest

from experiments import readme_results
from experiments.grids import SWITCHES

ROOT = Path(__file__).resolve().parents[1]

COMPARISON = """```
configuration  Δ top-1 vs reference  paired 95% CI   Welch 95% CI      CIs overlap  verdict
-------------  --------------------  --------------  ----------------  -----------  -----------------
{rows}

With 3 seeds per configuration this call resolves differences ≥ 3.1 points unpaired (seed sd 1.0, pooled over its configurations), ≥ 1.2 points paired (sd of per-seed differences 0.4): two-sided 5 % test, power 0.8.
```"""
ROW = "{label:<13}  -12.40                [-15.10, -9.70]  [-16.00, -8.80]   no           separated"


SUMMARY_NOTE = ("* = reference (every switch at its default); (chance!) = mean top-1 within or below chance, the 95 % "
                "binomial interval of 1/10 on {images} images: [8.2, 11.9] %\n\n")


def section(title: str, command: str, rows: list[str], extra: str = "", images: int = 1000) -> str:
    return (f"## {title}\n\ncommit `0123456789abcdef0123456789abcdef01234567`, 2026-12-06 19:40 UTC. `{command}`: "
            f"exit code 0, 7.5 minutes wall clock (load).\n\n" + SUMMARY_NOTE.format(images=images)
            + COMPARISON.format(rows="\n".join(rows)) + extra + "\n")


def document(switch_rows: list[str], probe: bool = True, longer: bool = False) -> str:
    calibration = ("\nCalibration of `reference`: 3 seeds, top-1 97.80 ± 1.00 (95 % CI half-width); seed standard "
                   "deviation 0.40 points (target ≤ 2: met).\n\nNull change (fused_attn flipped: the same function "
                   "through another kernel): paired difference -1.13 [-2.17, -0.10] (EXCLUDES 0: the instrument is "
                   "biased); sd of per-seed differences 0.42 points, the floor of paired noise.\n\nTake-off: every "
                   "run covered half its way from chance by epoch 4 of 9.\n")
    return "\n".join([
        "# Measured results\n",
        section(readme_results.CALIBRATION, "python experiments/ablate.py --calibrate --seeds 3",
                [ROW.format(label="null-change")], calibration),
        section(readme_results.HEADLINE, "python experiments/ablate.py --no-gsa --compare --seeds 3",
                [ROW.format(label="no-gsa")], images=10000),
        section(readme_results.SWITCH_TABLE, "python experiments/ablate.py --grid one-off --seeds 3", switch_rows,
                images=10000),
        *([section(next(iter(readme_results.PROBES)), "python experiments/ablate.py --no-gsa --compare --seeds 3 "
                   "--dataset mirror-pairs", [ROW.format(label="no-gsa")])] if probe else []),
        *([section(readme_results.LONGER_HEADLINE, "python experiments/ablate.py --no-gsa --compare --seeds 3 "
                   "--epochs 15", [ROW.format(label="no-gsa").replace("-12.40", "+0.25")], images=10000)]
          if longer else []),
    ])


def test_every_row_of_the_one_off_and_position_grids_has_the_command_of_the_same_configuration():
    """A README row's command, parsed by ablate.py's own parser, trains the configuration its grid row trained."""
    from experiments import ablate
    from experiments.grids import GRIDS, REFERENCE
    from sepvit import SepViTConfig

    rows = {label: changes for name in ("one-off", "position", "patterns") for label, changes in GRIDS[name] if label != REFERENCE}
    assert set(readme_results.SWITCH_FLAGS) == set(rows) and set(SWITCHES) <= set(rows)
    base = SepViTConfig.preset("sepvit_nano_32")
    for label, flags in readme_results.SWITCH_FLAGS.items():
        args = ablate.build_parser().parse_args([*flags.split(), "--compare", "--seeds", "3"])
        configs = dict(ablate.plan_configs(args, base))
        assert set(configs) - {REFERENCE} and configs[REFERENCE] == base
        (trained,) = [cfg for name, cfg in configs.items() if name != REFERENCE]
        assert trained == base.replace(**rows[label]), label


def test_the_block_quotes_the_printed_tables_with_their_commands_and_provenance():
    rows = [ROW.format(label=label) for label in SWITCHES]
    text = readme_results.block(document(rows))
    assert text.startswith(readme_results.BEGIN) and text.endswith(readme_results.END)
    assert "seed standard deviation is 0.40 points at the default budget (target ≤ 2: met)" in text
    assert "≥ 3.1 points unpaired, ≥ 1.2 points paired" in text
    assert "paired difference -1.13 [-2.17, -0.10] (EXCLUDES 0: the instrument is biased)" in text
    assert "Take-off: every run covered half its way from chance by epoch 4 of 9." in text
    assert ("7.5 minutes on 2 cores, top-1 on 10000 validation images): no-gsa -12.40 points, paired 95 % CI "
            "[-15.10, -9.70]") in text
    assert "commit 0123456789ab, 2026-12-06 19:40 UTC" in text
    table = [line for line in text.splitlines() if line.startswith("| ") and "`python" in line]
    assert len(table) == len(SWITCHES) + 1  # every switch on the default task, and the GSA probe's row
    assert ("| avgpool-token | synthetic (default) | `python experiments/ablate.py --window-token avgpool --compare "
            "--seeds 3` | 10000 | -12.40 |") in text
    # each row says the images its section's top-1 is on: the probe's call was scored on its 1000 per-epoch ones
    assert ("| no-gsa | mirror-pairs (probe) | `python experiments/ablate.py --no-gsa --compare --seeds 3 --dataset "
            "mirror-pairs` | 1000 | -12.40 |") in text
    without_probe = readme_results.block(document(rows, probe=False))  # a document from before the probe
    assert "mirror-pairs" not in without_probe and len(
        [line for line in without_probe.splitlines() if line.startswith("| ") and "`python" in line]) == len(SWITCHES)


def test_a_document_without_what_the_block_needs_is_refused_in_words():
    with pytest.raises(readme_results.ResultsFormatError, match="no section"):
        readme_results.block("# Measured results\n")
    with pytest.raises(readme_results.ResultsFormatError, match="no command known"):
        readme_results.block(document([ROW.format(label="mystery")]))
    broken = document([ROW.format(label="no-gsa")]).replace("(target ≤ 2: met)", "")
    with pytest.raises(readme_results.ResultsFormatError, match="seed sd"):
        readme_results.block(broken)
    unsized = document([ROW.format(label="no-gsa")]).replace("1/10 on 10000 images", "1/10")
    with pytest.raises(readme_results.ResultsFormatError, match="how many validation images"):
        readme_results.block(unsized)


def test_write_replaces_only_the_block_and_needs_its_markers(tmp_path):
    results = tmp_path / "results.md"
    results.write_text(document([ROW.format(label="no-cpe")]))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{readme_results.BEGIN}\nold\n{readme_results.END}\noutro\n")
    readme_results.write(readme, results)
    text = readme.read_text()
    assert text.startswith("intro\n" + readme_results.BEGIN) and text.endswith(readme_results.END + "\noutro\n")
    assert "old" not in text and "| no-cpe |" in text
    readme.write_text("no markers\n")
    with pytest.raises(readme_results.ResultsFormatError, match="markers"):
        readme_results.write(readme, results)


def test_the_repository_readme_holds_the_block_markers_once():
    text = (ROOT / "README.md").read_text()
    assert text.count(readme_results.BEGIN) == 1 and text.count(readme_results.END) == 1


def test_the_headline_at_the_longer_budget_joins_the_headline_and_the_table_with_its_own_command():
    from experiments import ablate

    rows = [ROW.format(label=label) for label in SWITCHES]
    text = readme_results.block(document(rows, longer=True))
    headline = next(line for line in text.splitlines() if line.startswith("**The headline**"))
    assert "no-gsa -12.40 points" in headline  # the default budget's call first
    assert ("Given 15 epochs (`python experiments/ablate.py --no-gsa --compare --seeds 3 --epochs 15`, commit "
            "0123456789ab, 2026-12-06 19:40 UTC, 7.5 minutes on 2 cores, top-1 on 10000 validation images): no-gsa "
            "+0.25 "
            "points") in headline
    command = "python experiments/ablate.py --no-gsa --compare --seeds 3 --epochs 15"
    (row,) = [line for line in text.splitlines() if line.startswith("| ") and f"`{command}`" in line]
    assert row.startswith("| no-gsa | synthetic (default), 15 epochs |") and "| 10000 | +0.25 |" in row
    assert ablate.build_parser().parse_args(command.split()[2:]).epochs == 15  # the row's command trains 15 epochs
    assert "15 epochs" not in readme_results.block(document(rows))  # a document without the section: no such line
