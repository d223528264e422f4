"""SepViT workbench model package. Importing it registers the `sepvit_*` models with timm."""
from .attention import record_attention
from .config import BLOCK_PATTERNS, PRESETS, WINDOW_TOKENS, SepViTConfig
from .model import SepViT, SepViTBlock, SepViTStage, TransformerBlock

__all__ = [
    "BLOCK_PATTERNS",
    "PRESETS",
    "WINDOW_TOKENS",
    "SepViT",
    "SepViTBlock",
    "SepViTConfig",
    "SepViTStage",
    "TransformerBlock",
    "record_attention",
]
