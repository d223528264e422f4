"""Measured MAC counts: fvcore and ptflops, set up so that attention is never silently missed.

Both counters report MACs (one multiply-add = 1), for one forward pass at batch 1.

fvcore (`FlopCountAnalysis`, TorchScript tracing) counts Linear, conv, matmul/bmm/einsum and LayerNorm
(5 per normalised element), and ignores softmax, GELU, adds and bias adds. Out of the box it reports
`aten::scaled_dot_product_attention` as unsupported and counts it as 0, so a model with fused attention
looks cheaper than the same model with explicit attention. `fvcore_count` registers a handle for it that
counts what the explicit path's two matmuls count: L*S*E (q k^T) + L*S*Ev (attn v) per batch and head.

ptflops 0.7.5 with `backend='aten'` (its default backend misses `@`, einsum and SDPA) counts mm/bmm/addmm/
conv at the dispatcher, including bias adds of Linear layers lowered to addmm and of convs, and no norms.
It counts fused attention as 0 unless the math kernel runs, and it leaves hooks on the model, so
`ptflops_count` counts a deep copy with `fused_attn` turned off on every module that has it and the math
SDPA kernel forced for anything left.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

# fvcore op names (as `by_operator()` reports them) that are attention matmuls rather than weights.
ATTENTION_OPS = ("matmul", "bmm", "einsum", "scaled_dot_product_attention")
NORM_OPS = ("layer_norm", "group_norm", "batch_norm", "instance_norm")
RESAMPLE_OPS = ("upsample_nearest2d", "upsample_bilinear2d", "grid_sampler", "adaptive_avg_pool2d")


def sdpa_flop_jit(inputs, outputs) -> int:
    """fvcore handle for aten::scaled_dot_product_attention: MACs of q k^T plus attn v.

    q (..., L, E), k (..., S, E), v (..., S, Ev): prod(batch dims of q) * L * S * (E + Ev), exactly what
    fvcore counts for the explicit `q @ k.transpose(-2, -1)` and `attn @ v`. Masks, scaling and softmax are
    not counted, as on the explicit path.
    """
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(value) for value in inputs[:3])
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


@dataclass
class FvcoreCount:
    """fvcore's count of one forward pass (MACs), with the parts that differ between conventions."""

    total: int
    by_operator: dict[str, int] = field(default_factory=dict)

    @property
    def norms(self) -> int:
        """LayerNorm/GroupNorm/... MACs inside `total` (fvcore: 5 per element; the paper counts none)."""
        return sum(self.by_operator.get(op, 0) for op in NORM_OPS)

    @property
    def resample(self) -> int:
        """Resizing/pooling MACs inside `total` (fvcore's elementwise estimates, e.g. 4 per bilinear output)."""
        return sum(self.by_operator.get(op, 0) for op in RESAMPLE_OPS)

    @property
    def attention_matmuls(self) -> int:
        """Attention matmul MACs inside `total` (q k^T and attn v; Twins' README leaves these out)."""
        return sum(self.by_operator.get(op, 0) for op in ATTENTION_OPS)

    @property
    def without_norms(self) -> int:
        """`total` minus norms and resizing: the paper's convention (weights + attention matmuls)."""
        return self.total - self.norms - self.resample


def fvcore_count(module: nn.Module, inputs: torch.Tensor | tuple) -> FvcoreCount:
    """Count one forward pass of `module` on `inputs` with fvcore, fused attention included."""
    module = module.eval()
    with warnings.catch_warnings(), _quiet_logger("fvcore"), torch.no_grad():
        warnings.simplefilter("ignore")  # fvcore's import scripts a function; the tracer warns on torch >= 2.x
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(module, inputs if isinstance(inputs, tuple) else (inputs,))
        analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        total = int(analysis.total())
        by_op = {op: int(n) for op, n in analysis.by_operator().items()}
    return FvcoreCount(total=total, by_operator=by_op)


def explicit_attention_copy(module: nn.Module) -> nn.Module:
    """A deep copy with `fused_attn` turned off on every module that has the attribute (ours and timm's)."""
    clone = copy.deepcopy(module)
    for sub in clone.modules():
        if hasattr(sub, "fused_attn"):
            sub.fused_attn = False
    return clone


def ptflops_count(module: nn.Module, input_shape: tuple[int, ...],
                  input_constructor: Callable[[tuple], torch.Tensor] | None = None) -> int:
    """ptflops' MACs (aten backend) for one sample of shape `input_shape` (no batch dim; batch 1 is added).

    Counts a deep copy with explicit attention and the math SDPA kernel forced, because ptflops counts a
    fused kernel as 0 and leaves hooks behind. Raises RuntimeError where ptflops returns None.
    """
    from ptflops import get_model_complexity_info
    from torch.nn.attention import SDPBackend, sdpa_kernel

    clone = explicit_attention_copy(module).eval()
    with warnings.catch_warnings(), torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        warnings.simplefilter("ignore")
        macs, _ = get_model_complexity_info(
            clone, tuple(input_shape), backend="aten", as_strings=False, print_per_layer_stat=False,
            input_constructor=input_constructor, ost=io.StringIO(), verbose=False,
        )
    if macs is None:
        raise RuntimeError(f"ptflops could not count {type(module).__name__} on input {tuple(input_shape)}")
    return int(macs)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@contextlib.contextmanager
def _quiet_logger(name: str):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
