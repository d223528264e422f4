"""MAC counts (multiply-add = 1), split by counting convention, and the elementary pieces units add up.

Every unit of the model has a `macs(...)` method built from these pieces, so that a count follows the
code's own geometry. The split keeps counters comparable:
  paper     Linear/conv weights and the attention matmuls (q k^T, attn v): the paper's formulas.
  norms     LayerNorm as fvcore counts it (5 per normalised element); the paper counts none.
  resample  bilinear resizing of learnable window tokens (input grid != built grid), fvcore: 4 per output.
  biases    bias adds of Linear/conv layers: ptflops counts those lowered to addmm/conv; fvcore and the
            paper count none.
Softmax, GELU, dropout and residual adds are counted by nobody here.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterable

NORM_MACS_PER_ELEMENT = 5  # fvcore's LayerNorm estimate (affine); the paper counts 0
RESAMPLE_MACS_PER_ELEMENT = 4  # fvcore's aten::upsample_bilinear2d estimate


@dataclass(frozen=True)
class Macs:
    """MACs of one piece of network, split by counting convention (see the module docstring)."""

    paper: int = 0
    norms: int = 0
    resample: int = 0
    biases: int = 0

    def __add__(self, other: "Macs") -> "Macs":
        return Macs(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __mul__(self, factor: int) -> "Macs":
        return Macs(*(getattr(self, f.name) * factor for f in fields(self)))

    __rmul__ = __mul__

    @property
    def fvcore(self) -> int:
        """What fvcore counts: paper + norms + window-token resizing."""
        return self.paper + self.norms + self.resample

    @property
    def with_biases(self) -> int:
        """paper + bias adds: what ptflops' aten backend counts where every Linear lowers to addmm."""
        return self.paper + self.biases


def total(parts: Iterable[Macs]) -> Macs:
    out = Macs()
    for part in parts:
        out = out + part
    return out


def layer_norm(tokens: int, dim: int) -> Macs:
    """One LayerNorm over `tokens` x `dim`: 0 in the paper, 5 per element for fvcore."""
    return Macs(norms=NORM_MACS_PER_ELEMENT * tokens * dim)


def linear(tokens: int, dim_in: int, dim_out: int, bias: bool = True) -> Macs:
    """A Linear layer applied to `tokens` tokens."""
    return Macs(paper=tokens * dim_in * dim_out, biases=tokens * dim_out if bias else 0)


def conv(out_pixels: int, in_chans: int, out_chans: int, kernel: int, groups: int = 1, bias: bool = True) -> Macs:
    """A k x k convolution producing `out_pixels` pixels of `out_chans` channels."""
    return Macs(paper=out_pixels * out_chans * (in_chans // groups) * kernel * kernel,
                biases=out_pixels * out_chans if bias else 0)


def attention_matmuls(batch: int, queries: int, keys: int, qk_dim: int, v_dim: int) -> Macs:
    """q k^T (queries x keys x qk_dim) and attn v (queries x keys x v_dim), `batch` times (heads folded in)."""
    return Macs(paper=batch * queries * keys * (qk_dim + v_dim))


def resample(elements: int) -> Macs:
    """Bilinear resizing to `elements` output values (fvcore: 4 each)."""
    return Macs(resample=RESAMPLE_MACS_PER_ELEMENT * elements)


def mlp(tokens: int, dim: int, hidden: int) -> Macs:
    """The block MLP: fc1 (dim -> hidden) + fc2 (hidden -> dim); GELU not counted. Paper: 2 * tokens * dim * hidden."""
    return linear(tokens, dim, hidden) + linear(tokens, hidden, dim)
