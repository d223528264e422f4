"""Grid definitions and the CLI's switch mapping produce valid, distinct configurations."""
import pytest
import torch

from experiments import ablate
from experiments.grids import GRIDS, ONE_OFF, PAPER_CHAIN, PAPER_STEPS, REFERENCE, SWITCHES, grid, label_for
from sepvit.config import SepViTConfig


@pytest.mark.parametrize("preset", ["sepvit_micro_32", "sepvit_micro_64", "sepvit_tiny"])
@pytest.mark.parametrize("name", list(GRIDS))
def test_every_grid_entry_is_its_declared_change_builds_and_is_distinct(name, preset):
    base = SepViTConfig.preset(preset)
    configs = grid(name, base)
    assert [label for label, _ in configs] == [label for label, _ in GRIDS[name]]
    for (label, cfg), (_, changes) in zip(configs, GRIDS[name]):
        declared = {field: value for field, value in changes.items() if getattr(base, field) != value}
        assert cfg.diff(base) == declared, label  # exactly its changes on this preset, nothing else moved
        with torch.device("meta"):  # the model is constructed (no weights, no compute)
            model = cfg.build()
        assert model.config == cfg, label
    dicts = [str(cfg.to_dict()) for _, cfg in configs]
    assert len(set(dicts)) == len(dicts)


def test_paper_chain_adds_one_component_per_step_and_ends_at_the_reference():
    base = SepViTConfig.preset("sepvit_micro_32")
    configs = [cfg for _, cfg in grid("paper-chain", base)]
    assert configs[0].block_pattern == "swin" and not configs[0].gsa
    assert configs[-1] == base
    steps = [set(after.diff(before)) for before, after in zip(configs, configs[1:])]
    assert steps[1:] == [{"ope"}, {"gsa"}, {"window_token"}]
    assert "block_pattern" in steps[0]
    assert len(PAPER_CHAIN) == 5


def test_one_off_turns_each_switch_off_alone():
    base = SepViTConfig.preset("sepvit_micro_32")
    configs = grid("one-off", base)
    assert configs[0] == (REFERENCE, base)
    for (label, cfg), (name, changes) in zip(configs[1:], SWITCHES.items()):
        assert label == name and cfg.diff(base) == changes
        assert label_for(cfg, base) == name
    assert len(ONE_OFF) == len(SWITCHES) + 1


def test_cli_switches_map_one_to_one_onto_config_fields():
    parser = ablate.build_parser()
    flags = {
        "--no-lwt": {"window_token": "zero"}, "--no-dssa": {"dssa": False}, "--no-gsa": {"gsa": False},
        "--no-ope": {"ope": False}, "--no-cpe": {"cpe": False}, "--paper-equations": {"inner_shortcuts": False},
    }
    for flag, expected in flags.items():
        assert ablate.switch_changes(parser.parse_args([flag])) == expected
    args = parser.parse_args(["--group-size", "1", "2", "2", "1", "--window-size", "2", "--block-pattern", "twins"])
    assert ablate.switch_changes(args) == {"group_size": (1, 2, 2, 1), "window_size": 2, "block_pattern": "twins"}
    args = parser.parse_args(["--model-kwargs", "embed_dims=(16,32,64,128)", "num_heads=(1,1,2,4)", "--drop-path", "0.1"])
    base = ablate.base_config(args)
    assert base.embed_dims == (16, 32, 64, 128) and base.drop_path_rate == 0.1


def test_compare_plans_the_reference_with_the_switched_config():
    parser = ablate.build_parser()
    base = SepViTConfig.preset("sepvit_micro_32")
    planned = ablate.plan_configs(parser.parse_args(["--no-gsa", "--compare"]), base)
    assert [label for label, _ in planned] == ["no-gsa", REFERENCE]
    assert planned[1][1] == base and planned[0][1] == base.replace(gsa=False)


def test_paper_grid_holds_the_chain_and_the_window_summary_alternatives():
    base = SepViTConfig.preset("sepvit_micro_32")
    configs = dict(grid("paper", base))
    assert configs["+ learnable window tokens"] == base
    assert {configs[k].diff(base)["window_token"] for k in ("avgpool-token", "dwconv-token")} == {"avgpool", "dwconv"}
    labels = set(configs)
    for step in PAPER_STEPS:  # every comparison the paper reports is trained by the paper grid
        assert {step.label, step.against} <= labels


def _runs(values: dict[str, list[float]]):
    import pandas as pd

    return pd.DataFrame([{"config": label, "seed": seed, "status": "FINISHED", "top1": v}
                         for label, vs in values.items() for seed, v in enumerate(vs)])


def test_paper_table_reads_a_direction_only_where_the_verdict_resolved_it():
    from experiments.paper_table import format_paper_comparison, paper_comparison

    table = paper_comparison(_runs({
        "swin+cpe baseline": [50.0, 60.0, 70.0],
        "dssa (zero tokens, no ope, no gsa)": [55.0, 65.1, 74.9],  # +5 on every seed: paired, agrees with the paper
        "+ ope": [50.0, 59.0, 70.5],  # about -5 paired: resolved, against the paper's direction
        "+ gsa": [40.0, 75.0, 55.0],  # noise: not resolved
    })).set_index("comparison")
    assert table.loc["dssa (zero tokens, no ope, no gsa) vs swin+cpe baseline", "agrees"] == "yes"
    assert table.loc["+ ope vs dssa (zero tokens, no ope, no gsa)", "agrees"] == "no"
    assert table.loc["+ gsa vs + ope", "verdict"] == "unresolved"  # a 35-point spread: no bound within the margin
    assert table.loc["+ gsa vs + ope", "agrees"].startswith("not resolved (±")  # a bound, not a direction
    assert table.loc["dssa (zero tokens, no ope, no gsa) vs swin+cpe baseline", "paper_delta"] == 0.5
    assert len(table) == 3  # steps whose configurations were not trained are left out
    text = format_paper_comparison(table.reset_index())
    assert "+0.5" in text and "(figure lost)" in text
