"""The authors' checkpoints load through timm (`checkpoint_filter_fn`) and reproduce the authors' logits.

Fixture: `../shared/fixtures/authors_sepvit_lite/` beside the repository (its README): a SepViT-Lite state
dict saved by the authors' `classification/sepvit.py` (random weights, seed 0), a fixed input and the
logits their code computes for it.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

import sepvit  # noqa: F401  (registers the models with timm)

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "authors_sepvit_lite"
pytestmark = pytest.mark.skipif(
    not (FIXTURE / "state_dict.pth").is_file(),
    reason=f"the authors' SepViT-Lite fixture is not at {FIXTURE} (../shared/fixtures beside the repository)",
)


def _authors_model(**kwargs) -> torch.nn.Module:
    return timm.create_model("sepvit_lite", pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(FIXTURE / "state_dict.pth")), **kwargs).eval()


@pytest.mark.parametrize("fused", [True, False])
def test_authors_checkpoint_reproduces_their_logits(fused):
    data = torch.load(FIXTURE / "input_logits.pth", weights_only=True)
    model = _authors_model(fused_attn=fused)
    with torch.no_grad():
        logits = model(data["input"])
    torch.testing.assert_close(logits, data["logits"], rtol=0, atol=1e-4)


def test_window_tokens_keep_the_authors_row_major_window_order():
    """Their token (1, N, 1, C) for window n is ours at grid position (n // columns, n % columns)."""
    theirs = torch.load(FIXTURE / "state_dict.pth", weights_only=True)["blocks.0.0.win_tokens"]
    ours = _authors_model().stages[0].blocks[0].attn.window_token.tokens
    rows, cols = ours.shape[1:3]
    assert theirs.shape == (1, rows * cols, 1, ours.shape[-1])
    for n in (1, cols, rows * cols - 2):
        torch.testing.assert_close(ours[0, n // cols, n % cols], theirs[0, n, 0], rtol=0, atol=0)


def test_every_authors_tensor_is_used():
    state = torch.load(FIXTURE / "state_dict.pth", weights_only=True)
    mapped = sepvit.model.checkpoint_filter_fn(state, timm.create_model("sepvit_lite"))
    assert len(mapped) == len(state)
    assert set(mapped) == set(timm.create_model("sepvit_lite").state_dict())
