"""The benchmark harness's own correctness (what it times, how it summarises, what it refuses), not timings.

Timing tests use a fake clock that only the fake modules advance, so every expected figure is exact.
"""
import json

import pytest
import torch
from runner_support import mlflow_db_template, output_dir, tracking_uri  # noqa: F401  (fixtures)
from torch import nn

from analysis import benchmark, speed, timing
from analysis.block_counts import block_comparison
from analysis.speed import ModelCandidate, benchmark_blocks, benchmark_models, render
from analysis.timing import (HookedModuleError, Settings, TrainStep, ensure_no_hooks, round_ratios, spread,
                             time_interleaved)
from experiments.train_config import TrainConfig


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Costly(nn.Module):
    """Advances the fake clock by its next scripted cost on every forward; records its calls."""

    def __init__(self, clock: FakeClock, costs, num_classes: int = 3):
        super().__init__()
        self.clock, self.costs, self.calls = clock, list(costs), 0
        self.num_classes = num_classes
        self.head = nn.Linear(3, num_classes)

    def forward(self, x):
        self.clock.now += self.costs[self.calls]
        self.calls += 1
        return self.head(x.mean((2, 3)) if x.dim() == 4 else x)


def fast_settings(**changes) -> Settings:
    base = dict(batch_size=2, img_size=4, threads=torch.get_num_threads(), rounds=4, warmup=1)
    return Settings(**{**base, **changes})


# ------------------------------------------------------------------ timing and statistics
def test_timed_calls_are_the_steps_only_in_rotated_order_after_warmup():
    clock, calls = FakeClock(), []
    costs = {"a": iter([9.0, 1.0, 2.0, 3.0]), "b": iter([9.0, 10.0, 20.0, 30.0]), "c": iter([9.0, 5.0, 5.0, 5.0])}

    def step(name):
        def run():
            calls.append(name)
            clock.now += next(costs[name])
        return run

    synced = []
    timings = time_interleaved({n: step(n) for n in "abc"}, rounds=3, warmup=1, clock=clock,
                               sync=lambda: synced.append(clock.now))
    assert calls[:3] == ["a", "b", "c"]  # warm-up round, untimed
    assert timings.orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert calls[3:] == [n for order in timings.orders for n in order]
    assert timings.seconds == {"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0], "c": [5.0, 5.0, 5.0]}
    assert len(synced) == 2 * 9  # before and after every timed call


def test_spread_is_median_and_inclusive_quartiles_of_what_it_was_given():
    s = spread([4.0, 1.0, 100.0, 2.0, 3.0])
    assert (s.median, s.q1, s.q3) == (3.0, 2.0, 4.0)
    assert spread([7.0]) == timing.Spread(7.0, 7.0, 7.0)


def test_ratios_are_taken_round_by_round():
    # the machine slows down 10x in the middle: per-round ratios stay 0.5, the ratio of medians would not
    seconds = {"ref": [1.0, 10.0, 10.0, 1.0, 1.0], "cand": [0.5, 5.0, 5.0, 0.5, 0.5]}
    ratios = round_ratios(seconds, "ref")
    assert ratios["cand"] == [0.5] * 5 and ratios["ref"] == [1.0] * 5


# ------------------------------------------------------------------ whole models
def test_models_report_medians_iqr_and_same_round_ratios():
    clock = FakeClock()
    fast = Costly(clock, [0.1, 0.1, 0.1, 0.1, 0.1])
    slow = Costly(clock, [0.4, 0.4, 0.4, 0.8, 0.4])  # warm-up call, then four timed calls
    rows = benchmark_models([ModelCandidate("fast", fast, 3), ModelCandidate("slow", slow, 3)], fast_settings(),
                            clock=clock)
    assert fast.calls == slow.calls == 5
    by = {r["model"]: r for r in rows}
    assert by["fast"]["ms_per_batch"] == pytest.approx(100.0) and by["fast"]["img_per_s"] == pytest.approx(20.0)
    assert by["slow"]["ms_per_batch"] == pytest.approx(400.0)
    assert by["slow"]["ms_per_batch_q3"] == pytest.approx(500.0)  # [400, 400, 800, 400] inclusive quartiles
    assert by["slow"]["time_ratio"] == pytest.approx(4.0) and by["slow"]["speed_ratio"] == pytest.approx(0.25)
    assert by["slow"]["speed_ratio_q1"] == pytest.approx(0.21875)  # per-round speeds [.25, .25, .125, .25]
    assert by["fast"]["reference"] == "fast" and by["fast"]["time_ratio"] == 1.0
    for key in ("model", "img_per_s", "ms_per_batch", "macs", "mode", "threads", "device", "dtype"):
        assert key in by["slow"]


def test_forward_runs_under_inference_mode_and_eval():
    seen = []

    class Probe(nn.Module):
        num_classes = 2

        def forward(self, x):
            seen.append((torch.is_inference_mode_enabled(), self.training))
            return x

    benchmark_models([ModelCandidate("p", Probe(), 2)], fast_settings(rounds=1, warmup=0))
    assert seen == [(True, False)]


def test_train_mode_does_backward_and_an_optimiser_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    before = [p.detach().clone() for p in model.parameters()]
    step = TrainStep.of(TrainConfig())  # the runner's step, read from its one owner
    rows = benchmark_models([ModelCandidate("tiny", model, 5)], fast_settings(train=True, step=step, rounds=1, warmup=0))
    assert rows[0]["mode"] == "train"
    assert all(p.grad is not None for p in model.parameters())
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_block_train_step_backpropagates_to_parameters_and_input():
    block = nn.Linear(4, 4)
    x = torch.randn(2, 3, 3, 4)
    step = timing.backward_step(block, block, x, fast_settings(train=True))
    step()
    assert block.weight.grad is not None and block.weight.grad.abs().sum() > 0


def test_a_hooked_module_is_never_timed():
    model = nn.Linear(4, 3)
    handle = model.register_forward_hook(lambda *args: None)
    with pytest.raises(HookedModuleError, match="hooks"):
        ensure_no_hooks(model, "linear")
    with pytest.raises(HookedModuleError):
        benchmark_models([ModelCandidate("hooked", model, 3)], fast_settings(rounds=1, warmup=0))
    handle.remove()
    ensure_no_hooks(model, "linear")


def test_macs_are_counted_on_a_copy_that_may_keep_its_hooks(monkeypatch):
    from analysis import counters

    counted = []

    def leaky_count(module, inputs):  # like ptflops: leaves hooks on what it counts
        module.register_forward_hook(lambda *args: None)
        counted.append(module)
        return counters.FvcoreCount(total=1234)

    monkeypatch.setattr(counters, "fvcore_count", leaky_count)  # speed counts through the module
    candidate = speed.build_candidate("sepvit_nano_32", 32)
    assert candidate.macs == 1234 and candidate.macs_analytic > 0
    assert counted and counted[0] is not candidate.module
    assert timing.hooks_on(candidate.module) == []
    rows = benchmark_models([candidate], fast_settings(img_size=32, rounds=1, warmup=0))
    assert rows[0]["macs"] == 1234


def test_attention_switch_flips_every_module_that_has_one():
    import timm

    model = timm.create_model("sepvit_nano_32", pretrained=False)
    flags = [m for m in model.modules() if hasattr(m, "fused_attn")]
    assert flags and not any(m.fused_attn for m in flags)  # the CPU-scale preset is built explicit
    assert timing.set_attention(model, "fused") == len(flags)
    assert all(m.fused_attn for m in flags)
    timing.set_attention(model, "explicit")
    assert not any(m.fused_attn for m in flags)


def test_model_specs_carry_typed_fields():
    candidate = speed.build_candidate("sepvit_nano_32:block_pattern=swin:gsa=false", 32, count_macs=False)
    assert candidate.module.config.block_pattern == "swin" and candidate.module.config.gsa is False
    assert candidate.name == "sepvit_nano_32:block_pattern=swin:gsa=false"


# ------------------------------------------------------------------ blocks
def test_blocks_rows_carry_every_unit_with_analytic_macs_and_ratios_to_swin():
    settings = fast_settings(batch_size=1, img_size=32, rounds=2, warmup=0)
    units = ("sepvit_block", "sepvit_gsa_block", "swin_pair", "twins_pair", "msa_block")
    rows = benchmark_blocks("sepvit_nano_32", settings, units, stages=[2])
    assert [r["stage"] for r in rows] == [2]
    row = rows[0]
    analytic = block_comparison("sepvit_nano_32", 32, measure=False)[1]
    for name in units:
        assert row[f"{name}_ms"] > 0 and row[f"{name}_ms_q1"] <= row[f"{name}_ms"] <= row[f"{name}_ms_q3"]
        assert row[f"{name}_macs"] == analytic[f"{name}_analytic"]
    assert row["swin_pair_time_ratio"] == 1.0 and row["swin_pair_macs_ratio"] == 1.0
    assert row["ours_swin_pair_ms"] is None  # not asked for
    text = render(rows, "blocks", "table")
    assert "Swin pair (timm W-MSA + SW-MSA)" in text and "multiply-add = 1" in text


def test_block_units_time_what_they_say(monkeypatch):
    """Each unit's figure is the time of that unit's module: scripted costs come back per unit."""
    clock = FakeClock()
    costs = {"sepvit_block": 1.0, "swin_pair": 4.0, "twins_pair": 3.0, "msa_block": 8.0}

    class Unit(nn.Module):
        def __init__(self, cost):
            super().__init__()
            self.cost, self.w = cost, nn.Parameter(torch.ones(1))

        def forward(self, x):
            clock.now += self.cost
            return x * self.w

    monkeypatch.setattr(speed, "stage_units",  # what is timed; the MAC counts still build the real units
                        lambda cfg, stage, h, w: {**{n: Unit(c) for n, c in costs.items()}, "sepvit_gsa_block": None})
    rows = benchmark_blocks("sepvit_nano_32", fast_settings(img_size=32, rounds=3, warmup=1), tuple(costs),
                            stages=[1, 2], clock=clock)
    for row in rows:
        for name, cost in costs.items():
            assert row[f"{name}_ms"] == pytest.approx(1000 * cost)
            assert row[f"{name}_time_ratio"] == pytest.approx(cost / 4.0)


# ------------------------------------------------------------------ formats and command line
def test_json_and_csv_carry_the_required_keys(capsys):
    assert benchmark.main(["--models", "sepvit_nano_32", "--img-size", "32", "-b", "2", "--rounds", "1",
                           "--warmup", "0", "--threads", "1", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and {"model", "img_per_s", "ms_per_batch", "macs"} <= set(rows[0])
    assert rows[0]["macs"] > 0 and rows[0]["threads"] == 1
    assert benchmark.main(["--blocks", "--variant", "sepvit_nano_32", "--img-size", "32", "-b", "1", "--stages", "4",
                           "--units", "sepvit_block", "swin_pair", "twins_pair", "msa_block", "--rounds", "1",
                           "--warmup", "0", "--format", "csv"]) == 0
    header, line = capsys.readouterr().out.splitlines()
    keys = header.split(",")
    for key in ("stage", "sepvit_block_ms", "swin_pair_ms", "twins_pair_ms", "msa_block_ms", "sepvit_block_macs",
                "swin_pair_macs", "sepvit_block_time_ratio", "sepvit_block_macs_ratio"):
        assert key in keys
    assert line.split(",")[keys.index("stage")] == "4"


@pytest.mark.parametrize("argv, message", [
    (["--models", "sepvit_nano_23"], "unknown model 'sepvit_nano_23'"),
    (["--models", "sepvit_nano_32", "--rounds", "0"], "--rounds must be a positive integer"),
    (["--models", "sepvit_nano_32:gsa=maybe"], "gsa expects bool"),
    (["--models", "sepvit_nano_32:colour=red"], "unknown SepViTConfig field"),
    (["--models", "resnet18:depth=3"], "sepvit_* models only"),
    (["--models", "sepvit_nano_32", "--reference", "swin"], "--reference swin is not among"),
    (["--blocks", "--channels-last"], "--channels-last applies to --models"),
    (["--blocks", "--variant", "sepvit_tiniest"], "unknown variant"),
    (["--blocks", "--variant", "sepvit_nano_32", "--stages", "7"], "has stages 1-4"),
    (["--models", "sepvit_nano_32", "--compile", "--warmup", "0"], "--compile needs --warmup"),
    (["--models", "sepvit_nano_32", "--mlflow", "--tracking-uri", "./runs"], "file store"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    assert benchmark.main([*argv, "--img-size", "32", "--no-macs"] if argv[0] == "--models"
                          else [*argv, "--img-size", "32"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_usage_errors_of_the_parser_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--models", "a", "--blocks"])
    assert exit_info.value.code == 2 and capsys.readouterr().err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused(capsys):
    assert benchmark.main(["--models", "sepvit_nano_32", "--device", "cuda", "--no-macs"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_mlflow_logs_a_parent_and_one_child_per_model(output_dir, capsys):
    from mlflow.tracking import MlflowClient

    assert benchmark.main(["--models", "sepvit_nano_32", "sepvit_nano_32:gsa=false", "--img-size", "32", "-b", "2",
                           "--rounds", "1", "--warmup", "0", "--no-macs", "--mlflow", "--output", str(output_dir)]) == 0
    uri = tracking_uri(output_dir)  # the runner's default store: sqlite:///<abs output>/mlflow.db
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("sepvit-benchmark").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.tags["mlflow.runName"] for c in children} == {"sepvit_nano_32", "sepvit_nano_32:gsa=false"}
    assert all(c.data.metrics["img_per_s"] > 0 for c in children)
    assert parents[0].data.params["bench.mode"] == "forward"


@pytest.mark.slow
def test_compiled_models_are_timed_after_compilation_in_warmup():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    rows = benchmark_models([ModelCandidate("lin", model, 3)], fast_settings(compile=True, rounds=2, warmup=1))
    assert rows[0]["compile"] is True and rows[0]["img_per_s"] > 0


# ------------------------------------------------------------------ the training-step profile
@pytest.mark.parametrize("name, kind", [
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("ScaledDotProductFlashAttentionForCpuBackward0", "attention"),
    ("BmmBackward0", "attention"),
    ("aten::_log_softmax", "loss"),
    ("aten::addmm", "Linear"),
    ("MmBackward0", "Linear"),
    ("NativeLayerNormBackward0", "norms"),
    ("SliceBackward0", "padding"),
    ("aten::constant_pad_nd", "padding"),
    ("CatBackward0", "padding"),
    ("aten::copy_", "reshape"),
    ("PermuteBackward0", "reshape"),
    ("ConvolutionBackward0", "conv"),
    ("aten::add", "elementwise"),
])
def test_operators_fall_into_their_kinds(name, kind):
    from experiments.profiling import kind_of

    assert kind_of(name).startswith(kind)


def test_wall_clock_splits_the_step_into_its_phases():
    from experiments.profiling import PHASES, wall_clock

    clock = FakeClock()
    cost = {"data": 0.010, "forward": 0.030, "backward": 0.050, "optimizer": 0.004}

    class Step:
        def run(self, phase):
            for name in ("data", "forward", "optimizer", "backward", "optimizer"):
                phase(name, lambda name=name: setattr(clock, "now", clock.now + cost[name]))
            return 8

    wall = wall_clock(Step(), steps=3, clock=clock)
    assert wall["step_ms"] == pytest.approx(98.0) and wall["img_per_s"] == pytest.approx(8 / 0.098)
    assert wall["phases_ms"]["optimizer"] == pytest.approx(8.0)  # two calls in one step add up
    assert set(wall["phases_ms"]) == set(PHASES) and wall["phases_ms"]["metrics"] == 0.0


def test_profile_of_the_runner_step_attributes_forward_and_backward():
    from experiments.profiling import OUTSIDE, profile_runner

    report = profile_runner("sepvit_nano_32", batch_size=4, train_size=8, steps=1, profile_steps_=1, warmup=1)
    prof = report["profile"]
    kinds = prof["kinds_ms"]
    assert kinds["attention (SDPA, softmax, attention matmuls)"] > 0 and kinds["Linear matmuls"] > 0
    assert OUTSIDE in kinds
    model_ms = prof["phases_ms"]["forward"] + prof["phases_ms"]["backward"]
    assert sum(kinds.values()) == pytest.approx(model_ms, rel=0.02)  # every microsecond of the two phases, once
    assert prof["top_ops"][0]["self_ms"] >= prof["top_ops"][-1]["self_ms"]
    assert report["wall"]["batch_size"] == 4 and report["wall"]["phases_ms"]["backward"] > 0


def test_profile_command_refuses_bad_input(capsys):
    from experiments import profiling

    assert profiling.main(["--model", "sepvit_nano_23"]) == 2
    assert profiling.main(["--model-kwargs", "gsa=maybe"]) == 2
    assert profiling.main(["-b", "0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "unknown model" in err[0] and "gsa" in err[1] and "--batch-size" in err[2]


def test_a_reference_missing_at_a_stage_leaves_that_stage_without_ratios():
    settings = fast_settings(batch_size=1, img_size=32, rounds=1, warmup=0)
    rows = benchmark_blocks("sepvit_nano_32", settings, ("sepvit_block", "sepvit_gsa_block"), stages=[1, 2],
                            reference="sepvit_gsa_block")
    stage1, stage2 = rows
    assert stage1["sepvit_gsa_block_ms"] is None and stage1["sepvit_block_time_ratio"] is None
    assert stage1["sepvit_block_ms"] > 0
    assert stage2["sepvit_gsa_block_time_ratio"] == 1.0 and stage2["sepvit_block_time_ratio"] > 0


def test_matmul_flops_count_two_per_multiply_add():
    from experiments.profiling import matmul_flops

    assert matmul_flops("aten::mm", [[8, 16], [16, 4]]) == 2 * 8 * 16 * 4
    assert matmul_flops("aten::addmm", [[4], [8, 16], [16, 4]]) == 2 * 8 * 16 * 4  # the bias is not a matmul
    assert matmul_flops("aten::bmm", [[3, 8, 16], [3, 16, 4]]) == 3 * 2 * 8 * 16 * 4


def test_matmul_headroom_finds_the_steps_matmuls_with_their_layout():
    from torch.profiler import profile

    from experiments.profiling import _operands, matmul_headroom

    a, w = torch.randn(64, 16), torch.randn(32, 16)
    with profile(record_shapes=True) as prof:
        for _ in range(2):  # two "steps"
            torch.mm(a, w.t())  # a transposed operand, as Linear's weight is
            torch.bmm(torch.randn(4, 5, 6), torch.randn(4, 6, 7))
    report = matmul_headroom(prof, steps=2, repeats=2, reference_size=64)
    rows = {(r["op"], tuple(map(tuple, r["shapes"]))): r for r in report["shapes"]}
    mm = rows[("aten::mm", ((64, 16), (16, 32)))]
    assert mm["calls_per_step"] == 1 and mm["gflop"] == pytest.approx(2 * 64 * 16 * 32 / 1e9)
    assert rows[("aten::bmm", ((4, 5, 6), (4, 6, 7)))]["calls_per_step"] == 1
    assert report["gflop"] == pytest.approx(sum(r["gflop"] for r in report["shapes"]))
    assert mm["in_step_gflops"] == pytest.approx(mm["gflop"] / (mm["in_step_ms"] / 1000))
    assert min(report["in_step_ms"], report["alone_ms"], report["alone_cold_ms"], report["large_gflops"]) > 0
    rebuilt = _operands([[16, 32]], [[1, 16]])[0]  # the recorded strides of w.t()
    assert rebuilt.shape == (16, 32) and rebuilt.stride() == (1, 16)
