"""Grid definitions and the CLI's switch mapping produce valid, distinct configurations."""
import pytest

from experiments import ablate
from experiments.grids import GRIDS, ONE_OFF, PAPER_CHAIN, REFERENCE, SWITCHES, grid, label_for
from sepvit.config import SepViTConfig


@pytest.mark.parametrize("preset", ["sepvit_micro_32", "sepvit_micro_64", "sepvit_tiny"])
@pytest.mark.parametrize("name", list(GRIDS))
def test_every_grid_entry_is_a_valid_distinct_config(name, preset):
    base = SepViTConfig.preset(preset)
    configs = grid(name, base)
    assert len(configs) == len(GRIDS[name])
    dicts = [str(cfg.to_dict()) for _, cfg in configs]
    assert len(set(dicts)) == len(dicts)
    for _, cfg in configs:
        cfg.validate()


def test_paper_chain_adds_one_component_per_step_and_ends_at_the_reference():
    base = SepViTConfig.preset("sepvit_micro_32")
    configs = [cfg for _, cfg in grid("paper", base)]
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
