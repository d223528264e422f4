"""The notebooks' model zoo: runner runs at one budget, trained once and found again by what the model computes."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from runner_support import mlflow_db_template  # noqa: F401  (fixture)
from zoo_support import STORE_LOOKUP, zoo_store  # noqa: F401  (fixture)

from experiments import zoo
from experiments.zoo import __main__ as zoo_command
from sepvit.config import SepViTConfig
from workbench.tracking import default_tracking_uri, flatten


def _run(run_id: str, cfg: SepViTConfig, start: int, best: float) -> dict:
    return dict(run_id=run_id, status="FINISHED", start_time=start, best_top1=best, **flatten(cfg.to_dict(), "model."))


def test_same_model_ignores_how_attention_was_computed_but_nothing_else():
    nano = SepViTConfig.preset("sepvit_nano_32")
    assert not nano.fused_attn
    runs = pd.DataFrame([_run("fused-old", nano.replace(fused_attn=True), 1, 90.0),
                         _run("explicit-new", nano, 2, 80.0),
                         _run("local-only", nano.replace(dssa=False), 3, 85.0),
                         _run("other-window", nano.replace(fused_attn=True, window_size=2), 4, 70.0)])
    assert zoo.same_model(runs, nano)["run_id"].tolist() == ["explicit-new", "fused-old"]  # newest first
    assert zoo.same_model(runs, nano.replace(fused_attn=True))["run_id"].tolist() == ["explicit-new", "fused-old"]
    found = zoo.same_model(runs, nano.replace(dssa=False))
    assert found["run_id"].tolist() == ["local-only"] and found["model.fused_attn"].tolist() == ["False"]  # kept
    assert zoo.same_model(runs.iloc[:0], nano).empty


def test_a_run_that_did_not_log_a_newer_training_field_matches_only_the_value_it_ran_with():
    """Runs logged before `train.synthetic_cue` existed trained on the ring cue: they match a ring request and
    never a frame one (whichever is the default)."""
    from experiments.train_config import TrainConfig

    ring, frame = TrainConfig(synthetic_cue="ring"), TrainConfig(synthetic_cue="frame")
    logged = {k: v for k, v in flatten(ring.to_dict(), "train.").items() if k != "train.synthetic_cue"}
    runs = pd.DataFrame([dict(run_id="old", **logged),
                         dict(run_id="new-frame", **flatten(frame.to_dict(), "train."))])
    assert zoo._same_training(runs, ring)["run_id"].tolist() == ["old"]
    assert zoo._same_training(runs, frame)["run_id"].tolist() == ["new-frame"]


def test_zoo_trains_a_missing_model_once_and_then_finds_it_however_it_was_computed(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # trained on the fused kernel with one thread; looked up for the preset's explicit path
        first = zoo.trained(["local-only"], output=tmp_path, smoke=True,
                            model_changes={"fused_attn": True})["local-only"]
    finally:
        torch.set_num_threads(threads)
    again = zoo.trained(["local-only"], output=tmp_path, smoke=True)["local-only"]
    assert first.trained_here and not again.trained_here
    assert again.run_id == first.run_id and again.top1 == first.top1
    assert again.execution == {"model.fused_attn": "True", "env.torch_threads": "1"}
    assert again.model.config.dssa is False and again.num_classes == 10 and again.val_size == 64
    assert again.seed == 0 and again.train["seed"] == 0 and again.train["epochs"] == 1
    assert zoo.missing(["local-only"], (0, 1), output=tmp_path, smoke=True) == [("local-only", 1)]  # seed counts


def test_zoo_refuses_an_unknown_model(tmp_path):
    with pytest.raises(ValueError, match="unknown zoo model"):
        zoo.trained(["resnet"], output=tmp_path, smoke=True)


def test_a_lookup_plan_names_each_model_with_its_sorted_distinct_seeds():
    assert zoo.lookup_plan(["sepvit", "swin"]) == {"sepvit": (0,), "swin": (0,)}
    assert zoo.lookup_plan(["msa"], (2, 0, 2)) == {"msa": (0, 2)}
    assert zoo.lookup_plan({"sepvit": (1, 0), "local-only": [3]}) == {"sepvit": (0, 1), "local-only": (3,)}
    for names, seeds, message in ((["resnet"], None, "unknown zoo model"), (["msa"], (), "seeds must be"),
                                  (["msa"], (-1,), "seeds must be"), ({"msa": (0,)}, (1,), "not both"),
                                  ("msa", None, "the string")):
        with pytest.raises(ValueError, match=message):
            zoo.lookup_plan(names, seeds)
    assert zoo.consecutive([5, 0, 2, 1, 7, 8, 1]) == [(0, 3), (5, 1), (7, 2)]


def test_missing_seeds_are_trained_in_one_call_per_run_of_consecutive_seeds(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(zoo, "_train", lambda lookup, name, first, count, parallel: calls.append(
        (name, first, count, parallel, lookup.train.output, lookup.planned[name].model)))
    monkeypatch.setattr(zoo, "_load", lambda lookup, name, seed, trained_here: (name, seed, trained_here))
    found = zoo.trained_seeds({"swin": (3, 0, 2), "msa": (1,)}, output=tmp_path, smoke=True, parallel=2)
    assert found == {"swin": [("swin", 0, True), ("swin", 2, True), ("swin", 3, True)], "msa": [("msa", 1, True)]}
    assert [call[:4] for call in calls] == [("swin", 0, 1, 1), ("swin", 2, 2, 2), ("msa", 1, 1, 1)]  # never more
    assert all(call[4] == str(tmp_path) for call in calls)  # processes than runs; every call into the store
    assert [call[5].block_pattern for call in calls] == ["swin", "swin", "msa"]
    assert not (tmp_path / "mlflow.db").exists()  # looking up an empty folder creates no store
    with pytest.raises(ValueError, match="the zoo sets seed"):
        zoo.trained_seeds(["msa"], output=tmp_path, smoke=True, train_changes={"seed": 1})


def test_the_command_line_says_what_a_lookup_would_train_in_one_line(tmp_path, capsys):
    assert zoo_command.main(["--lookup", '{"msa": [0, 1], "swin": [2]}', "--output", str(tmp_path), "--smoke"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"would train 3 of 3 zoo model(s) at the smoke budget, not in {tmp_path}: msa seeds 0, 1; swin seed 2"]
    for argv, message in ((["--lookup", "{bad"], "--lookup is not JSON"), (["--lookup", "[1]"], "JSON object"),
                          (["msa", "--lookup", "{}"], "one of them"), (["resnet"], "unknown zoo model"),
                          (["msa", "--parallel", "0"], "--parallel must be")):
        assert zoo_command.main([*argv, "--output", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)


@pytest.mark.slow
def test_two_seeds_train_in_one_call_and_are_found_again(zoo_store, capsys):
    from experiments.report import list_calls

    assert len(list_calls(default_tracking_uri(zoo_store), zoo.EXPERIMENT)) == 1  # both seeds: one runner call
    models = zoo.trained_seeds(STORE_LOOKUP, output=zoo_store, smoke=True)["local-only"]
    assert [m.seed for m in models] == [0, 1] and not any(m.trained_here for m in models)
    assert len({m.run_id for m in models}) == 2
    assert zoo.missing({"local-only": (0, 1, 2), "msa": (0,)}, output=zoo_store, smoke=True) == [
        ("local-only", 2), ("msa", 0)]
    assert zoo_command.main(["local-only", "--seeds", "0", "1", "--output", str(zoo_store), "--smoke"]) == 0
    assert capsys.readouterr().out.startswith("all 2 zoo model(s) of the lookup are in")


def test_paper_comparison_sets_our_difference_over_seeds_beside_the_papers():
    def model(name, seed, top1):
        return zoo.ZooModel(name, None, top1, top1, 10, 64, f"{name}{seed}", False, {}, seed=seed)

    models = {"sepvit": [model("sepvit", s, t) for s, t in enumerate((70.0, 72.0, 71.0))],
              "sepvit, zero tokens": [model("zero", s, t) for s, t in enumerate((82.0, 83.0, 82.5))],
              "msa": [model("msa", s, t) for s, t in enumerate((96.0, 96.5, 96.2))]}
    table = zoo.paper_comparison(models).set_index("comparison")
    assert list(table.index) == ["window tokens: learnable vs fixed zero", "SepViT vs global MSA"]  # pairs present
    tokens = table.loc["window tokens: learnable vs fixed zero"]
    assert tokens["diff"] == pytest.approx(-11.5) and tokens["paper_delta"] == 0.2
    assert tokens["paired_high"] < 0 and tokens["agrees"] == "no: runs against the paper"
    assert table.loc["SepViT vs global MSA", "agrees"] == "no paper figure"
    lines = zoo.paper_sentences(table.reset_index())
    assert lines[0].startswith("window tokens: learnable vs fixed zero: here 71.0 vs 82.5 % top-1, -11.5 points "
                               "(paired 95 % interval [")
    assert "seeds 0, 1, 2 vs 0, 1, 2" in lines[0] and "the paper: +0.2" in lines[0]


def test_accuracy_table_says_whether_each_model_is_matched_to_the_reference():
    def runs(name, *top1):
        return [zoo.ZooModel(name, None, t, t, 10, 640, f"{name}{s}", False, {}, seed=s) for s, t in enumerate(top1)]

    table = zoo.accuracy_table({"sepvit": runs("sepvit", 70.0, 72.0, 71.0), "swin": runs("swin", 70.5, 71.5, 71.2),
                                "msa": runs("msa", 96.0, 96.5, 96.2), "twins": runs("twins", 9.0)}).set_index("model")
    assert table.loc["sepvit", "matched"] == "the reference" and table.loc["sepvit", "seeds"] == [0, 1, 2]
    assert table.loc["sepvit", "mean"] == pytest.approx(71.0) and table.loc["sepvit", "half_width"] > 0
    assert table.loc["swin", "matched"].startswith("within ")  # equivalent within the margin over three seeds
    assert table.loc["msa", "matched"].startswith("no: +25.2 points") and not table.loc["msa", "at_chance"]
    assert table.loc["twins", "at_chance"] and table.loc["twins", "matched"] == "unknown: fewer than two seeds"
