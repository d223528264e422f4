"""The units the paper compares at one stage's shape: one SepViT block against its peers' block patterns.

`stage_units(cfg, stage, height, width)` builds, for one stage of a configuration, every unit below as a
module mapping a channels-last map (B, H, W, C) to a map of the same shape, so that a MAC counter, a
timer and a receptive-field probe can treat them alike:

    sepvit_block      one SepViT block (DSSA at window M), ours
    sepvit_gsa_block  one grouped SepViT block (window group_size * M), ours; None where the stage has none
    swin_pair         timm's SwinTransformerBlock twice: W-MSA, then SW-MSA (shift M/2)
    twins_pair        timm's Twins Block twice: LSA (window M), then GSA (sub-sampling sr)
    msa_block         timm's ViT Block: global multi-head self-attention
    ours_*            the same patterns built by our backbone (`block_pattern`), for comparison

The peers are timm's own blocks, so that the reference is nobody's strawman. MLPs (ratio `cfg.mlp_ratio`)
are included everywhere; drop path is off.
"""
from __future__ import annotations

from timm.models.swin_transformer import SwinTransformerBlock
from timm.models.twins import Block as TwinsBlock
from timm.models.vision_transformer import Block as VitBlock
from torch import nn

from sepvit.config import SepViTConfig
from sepvit.macs import Macs, total
from sepvit.model import make_block

UNITS = ("sepvit_block", "sepvit_gsa_block", "swin_pair", "twins_pair", "msa_block",
         "ours_swin_pair", "ours_twins_pair", "ours_msa_block")
TITLES = {
    "sepvit_block": "SepViT block (DSSA, window M)",
    "sepvit_gsa_block": "SepViT GSA block (window gM)",
    "swin_pair": "Swin pair (timm W-MSA + SW-MSA)",
    "twins_pair": "Twins pair (timm LSA + GSA)",
    "msa_block": "global MSA block (timm ViT)",
    "ours_swin_pair": "our swin pattern pair",
    "ours_twins_pair": "our twins pattern pair",
    "ours_msa_block": "our msa pattern block",
}


class TokenBlocks(nn.Module):
    """Blocks that take (B, H*W, C) tokens (timm's Twins and ViT blocks), behind a (B, H, W, C) interface.

    `needs_size`: the blocks' forward also takes the map size (Twins).
    """

    def __init__(self, *blocks: nn.Module, needs_size: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.needs_size = needs_size

    def forward(self, x):
        b, h, w, c = x.shape
        tokens = x.reshape(b, h * w, c)
        for block in self.blocks:
            tokens = block(tokens, (h, w)) if self.needs_size else block(tokens)
        return tokens.reshape(b, h, w, c)


class StageBlocks(nn.Module):
    """Our backbone's blocks in sequence, as `make_block` builds them from the config's block specs."""

    def __init__(self, *blocks: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x

    def macs(self, height: int, width: int) -> Macs:
        """The blocks' own counts (`sepvit.macs`) on an H x W map."""
        return total(block.macs(height, width) for block in self.blocks)


def _our_blocks(cfg: SepViTConfig, stage: int, indices) -> StageBlocks:
    """Blocks `indices` of `stage` as the pattern makes them (a pair even where the stage has one block),
    drop path off."""
    indices = list(indices)
    depths = tuple(max(d, max(indices) + 1) if s == stage else d for s, d in enumerate(cfg.depths))
    specs = cfg.replace(depths=depths, drop_path_rate=0.0).stage_spec(stage).blocks
    return StageBlocks(*(make_block(specs[i]) for i in indices))


def stage_units(cfg: SepViTConfig, stage: int, height: int, width: int) -> dict[str, nn.Module | None]:
    """name -> module (channels-last in and out) for every unit in UNITS, at one stage's shape."""
    dim, heads, window, ratio = cfg.embed_dims[stage], cfg.num_heads[stage], cfg.window_size, cfg.mlp_ratio
    sr = cfg.twins_sr_ratios[stage]
    sepvit_cfg = cfg.replace(block_pattern="sepvit")
    grouped = [spec.index for spec in sepvit_cfg.stage_spec(stage).blocks if spec.kind == "gsa"]
    units: dict[str, nn.Module | None] = {
        "sepvit_block": _our_blocks(sepvit_cfg, stage, [0]),
        "sepvit_gsa_block": _our_blocks(sepvit_cfg, stage, grouped[:1]) if grouped else None,
        "swin_pair": nn.Sequential(*(SwinTransformerBlock(dim=dim, input_resolution=(height, width), num_heads=heads,
                                                          window_size=window, shift_size=shift, mlp_ratio=ratio)
                                     for shift in (0, window // 2))),
        "twins_pair": TokenBlocks(TwinsBlock(dim=dim, num_heads=heads, mlp_ratio=ratio, ws=window, sr_ratio=sr),
                                  TwinsBlock(dim=dim, num_heads=heads, mlp_ratio=ratio, ws=1, sr_ratio=sr),
                                  needs_size=True),
        "msa_block": TokenBlocks(VitBlock(dim=dim, num_heads=heads, mlp_ratio=ratio, qkv_bias=True)),
    }
    for pattern, count in (("swin", 2), ("twins", 2), ("msa", 1)):
        name = f"ours_{pattern}_pair" if count == 2 else f"ours_{pattern}_block"
        units[name] = _our_blocks(cfg.replace(block_pattern=pattern), stage, range(count))
    return units
