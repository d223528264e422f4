"""SepViT workbench model package. Importing it registers the `sepvit_*` models with timm.

Layers, lowest first: geometry, macs (integers only) -> config (SepViTConfig and its block specs) ->
layers -> attention -> model (blocks, stages, SepViT, timm registry) -> summary (`python -m sepvit`).
"""
from .attention import (
    DepthwiseSeparableSelfAttention,
    DepthwiseSelfAttention,
    GroupedSelfAttention,
    PointwiseSelfAttention,
    record_attention,
)
from .config import BLOCK_PATTERNS, PATTERN_KINDS, PRESETS, WINDOW_TOKENS, BlockSpec, SepViTConfig, StageSpec
from .macs import Macs
from .model import SepViT, SepViTBlock, SepViTStage, TransformerBlock, make_block

__all__ = [
    "BLOCK_PATTERNS",
    "PATTERN_KINDS",
    "PRESETS",
    "WINDOW_TOKENS",
    "BlockSpec",
    "DepthwiseSelfAttention",
    "DepthwiseSeparableSelfAttention",
    "GroupedSelfAttention",
    "Macs",
    "PointwiseSelfAttention",
    "SepViT",
    "SepViTBlock",
    "SepViTConfig",
    "SepViTStage",
    "StageSpec",
    "TransformerBlock",
    "make_block",
    "record_attention",
]
