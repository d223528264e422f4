"""The throughput benchmark's bookkeeping (not its timings: benchmarks are not timed tests)."""
import torch

from analysis.benchmark import compare_throughput, format_table


def test_interleaved_rounds_give_medians_and_per_round_ratios():
    fast, slow = torch.nn.Identity(), torch.nn.Identity()
    seconds = {id(fast): iter([0.1] * 10), id(slow): iter([0.4, 0.4, 0.4, 0.4, 0.8] + [0.4] * 5)}
    calls = []

    def timer(model, batch):
        calls.append(id(model))
        return next(seconds[id(model)])

    results = compare_throughput({"fast": fast, "slow": slow}, img_size=8, batch_size=4, rounds=4, warmup=1,
                                 timer=timer)
    assert calls[:2] == [id(fast), id(slow)] and calls[2:4] == [id(fast), id(slow)]
    assert calls[4:6] == [id(slow), id(fast)]  # order rotates every round
    by_name = {r.model: r for r in results}
    assert by_name["fast"].median_img_s == 40.0 and by_name["fast"].ratio_to_first == 1.0
    assert by_name["slow"].median_img_s == 10.0 and by_name["slow"].ratio_to_first == 0.25
    assert "x vs fast" in format_table(results)
