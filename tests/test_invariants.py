"""What refactoring the model must not change: the weights `torch.manual_seed(0); cfg.build()` draws and
the function those weights compute, for every preset and switch combination.

`tests/data/model_invariants.pt` was written by `python tests/test_invariants.py --write` from the model
as it was before the block-spec refactor (issue 15); it holds, per case, a fingerprint of every parameter
in creation order (names are not compared, so modules may move) and the logits of fixed inputs with
fused and explicit attention. A changed parameter order or initialisation changes the fingerprints; a
changed function changes the logits. (On the machine that wrote the file the explicit path matched
bit for bit; the tolerances here absorb other CPUs' rounding.)
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import sepvit  # noqa: F401  (registers the models with timm)
from sepvit import SepViTConfig

DATA = Path(__file__).parent / "data" / "model_invariants.pt"

SWITCHES = [
    {}, dict(block_pattern="swin"), dict(block_pattern="twins"), dict(block_pattern="msa"),
    dict(window_token="zero"), dict(window_token="avgpool"), dict(dssa=False), dict(gsa=False),
    dict(group_size=(1, 4, 2, 1)), dict(inner_shortcuts=False), dict(ope=False), dict(cpe=False),
    dict(window_token="avgpool", inner_shortcuts=False, ope=False), dict(window_size=3),
]
CASES = {
    **{"nano_32" + "".join(f":{k}={v}" for k, v in ch.items()): ("sepvit_nano_32", ch, (32, 37, 17))
       for ch in SWITCHES},
    "micro_32": ("sepvit_micro_32", {}, (32, 45)),
    "micro_64": ("sepvit_micro_64", {}, (64,)),
    "lite": ("sepvit_lite", {}, (224,)),
    "tiny": ("sepvit_tiny", {}, ()),
}
SLOW_CASES = {"small": ("sepvit_small", {}, ()), "base": ("sepvit_base", {}, ())}


def _fingerprint(tensor: torch.Tensor) -> torch.Tensor:
    """(sum, position-weighted sum) in float64: sensitive to every value and to their order."""
    flat = tensor.detach().double().flatten()
    return torch.stack([flat.sum(), (flat * torch.linspace(-1, 1, flat.numel(), dtype=torch.float64)).sum()])


def _set_fused(model: torch.nn.Module, fused: bool) -> None:
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused


def _input(size: int) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


def observe(preset: str, changes: dict, sizes) -> dict:
    torch.manual_seed(0)
    model = SepViTConfig.preset(preset, **changes).build().eval()
    out = dict(shapes=[tuple(p.shape) for p in model.parameters()],
               fingerprints=torch.stack([_fingerprint(p) for p in model.parameters()]), logits={})
    with torch.no_grad():
        for size in sizes:
            x = _input(size)
            _set_fused(model, True)
            fused = model(x)
            _set_fused(model, False)
            out["logits"][size] = (fused, model(x))
    return out


def training_losses() -> torch.Tensor:
    """Three AdamW steps of sepvit_nano_32 with drop path from fixed seeds: what the runner's seed fixes."""
    torch.manual_seed(0)
    model = SepViTConfig.preset("sepvit_nano_32", drop_path_rate=0.2).build().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.manual_seed(5)
    x, y = _input(32), torch.tensor([3, 7])
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses)


@pytest.fixture(scope="module")
def recorded():
    return torch.load(DATA, weights_only=True)


def _check(case: str, spec, recorded) -> None:
    want, got = recorded["cases"][case], observe(*spec)
    assert got["shapes"] == [tuple(s) for s in want["shapes"]], "parameters changed shape or order"
    torch.testing.assert_close(got["fingerprints"], want["fingerprints"], rtol=1e-6, atol=1e-6,
                               msg=lambda m: f"{case}: initial weights changed (values or creation order)\n{m}")
    for size, (fused, explicit) in want["logits"].items():
        got_fused, got_explicit = got["logits"][size]
        torch.testing.assert_close(got_explicit, explicit, rtol=0, atol=1e-6)
        torch.testing.assert_close(got_fused, fused, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_weights_and_logits_are_unchanged(case, recorded):
    _check(case, CASES[case], recorded)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SLOW_CASES))
def test_large_presets_draw_unchanged_weights(case, recorded):
    _check(case, SLOW_CASES[case], recorded)


def test_seeded_training_is_unchanged(recorded):
    torch.testing.assert_close(training_losses(), recorded["training_losses"], rtol=0, atol=1e-6)


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    torch.set_num_threads(1)
    cases = {name: observe(*spec) for name, spec in {**CASES, **SLOW_CASES}.items()}
    torch.save(dict(cases=cases, training_losses=training_losses()), DATA)
    print(f"wrote {DATA} ({DATA.stat().st_size / 1e3:.0f} kB)")
