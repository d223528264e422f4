"""SepViT backbone: blocks -> stage -> model -> timm registry (the layout of timm's swin_transformer.py).

One backbone, several block patterns (`SepViTConfig.block_pattern`) with the same stem, stages, widths,
CPE and head, so that the attention pattern is the only difference between them. The structure comes
from the configuration's block specs (`SepViTConfig.stage_specs()`); `make_block` is the one dispatch
from a block kind to modules.
"""
from __future__ import annotations

import re
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, register_notrace_function, register_notrace_module
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import (
    DepthwiseSeparableSelfAttention,
    GlobalMultiHeadAttention,
    GlobalSubsampledAttention,
    GroupedSelfAttention,
    WindowMultiHeadAttention,
)
from .config import PRESETS, BlockSpec, SepViTConfig, StageSpec, register_builder
from .layers import ConditionalPositionEncoding, PatchEmbed, trunc_normal_init
from .macs import Macs, layer_norm, linear, mlp, total

__all__ = ["SepViT", "SepViTBlock", "TransformerBlock", "SepViTStage", "make_block", "checkpoint_filter_fn"]


# ---------------------------------------------------------------------------------- blocks
@register_notrace_module  # DSSA's structure (tokens and PWA or not) depends on the input's window grid
class SepViTBlock(nn.Module):
    """The SepViT block (paper Eq. 1-3, Fig. 2), a pre-norm block around DSSA (or GSA):
    z' = z + DropPath(DSSA(z; LN)),  out = z' + DropPath(MLP(LN(z'))).

    DSSA receives the pre-norm rather than a normalised map because it normalises the window tokens
    with the pixels (paper Eq. 1: LN(concat(z, wt))).
    """

    def __init__(self, dim: int, attn: DepthwiseSeparableSelfAttention, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = attn
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(x, self.norm1))
        return x + self.drop_path2(self.mlp(self.norm2(x)))

    def macs(self, height: int, width: int) -> Macs:
        """DSSA (with the pre-norm it applies), LN, MLP on an H x W map."""
        tokens = height * width
        return (self.attn.macs(height, width) + layer_norm(tokens, self.norm2.normalized_shape[0])
                + mlp(tokens, self.mlp.fc1.in_features, self.mlp.fc1.out_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before DSSA became a module keep its parts directly under the block.
        for part in ("window_token.", "dwa.", "pwa.", "proj."):
            for key in [k for k in state_dict if k.startswith(prefix + part)]:
                state_dict[prefix + "attn." + key[len(prefix):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class TransformerBlock(nn.Module):
    """A pre-norm transformer block around one of the peers' attention units (Swin W-MSA / SW-MSA,
    Twins LSA / GSA, global MSA, plain window attention): out = z' + MLP(LN(z')), z' = z + Attn(LN(z)).
    """

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = attn
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))

    def macs(self, height: int, width: int) -> Macs:
        tokens, dim = height * width, self.norm1.normalized_shape[0]
        return (layer_norm(tokens, dim) + self.attn.macs(height, width) + layer_norm(tokens, dim)
                + mlp(tokens, dim, self.mlp.fc1.out_features))


def make_block(spec: BlockSpec) -> nn.Module:
    """The block a spec describes: the one dispatch from a block kind to its modules."""
    common = dict(fused_attn=spec.fused_attn, attn_drop=spec.attn_drop, proj_drop=spec.proj_drop, stride=spec.stride)
    dim, heads = spec.dim, spec.num_heads
    if spec.kind in ("dssa", "dwa"):
        attn = DepthwiseSeparableSelfAttention(dim, heads, spec.window, spec.token_grid, window_token=spec.window_token,
                                               pwa=spec.kind == "dssa", inner_shortcuts=spec.inner_shortcuts, **common)
    elif spec.kind == "gsa":
        attn = GroupedSelfAttention(dim, heads, spec.window // spec.group_size, spec.group_size, spec.token_grid,
                                    window_token=spec.window_token, inner_shortcuts=spec.inner_shortcuts, **common)
    elif spec.kind in ("swin", "swin_shifted", "twins_local", "local"):
        attn = WindowMultiHeadAttention(dim, heads, spec.window, shift=spec.shift > 0,
                                        kind="swin" if spec.kind == "swin_shifted" else spec.kind, **common)
    elif spec.kind == "twins_global":
        attn = GlobalSubsampledAttention(dim, heads, spec.sr_ratio, **common)
    elif spec.kind == "msa":
        attn = GlobalMultiHeadAttention(dim, heads, **common)
    else:
        raise ValueError(f"no unit for block kind {spec.kind!r}")
    block = SepViTBlock if isinstance(attn, DepthwiseSeparableSelfAttention) else TransformerBlock
    return block(dim, attn, mlp_ratio=spec.mlp_ratio, drop_path=spec.drop_path, proj_drop=spec.proj_drop)


# ---------------------------------------------------------------------------------- stage
class SepViTStage(nn.Module):
    """Patch embedding (OPE), then the stage's blocks, with CPE after the first block (as in Twins)."""

    def __init__(self, spec: StageSpec):
        super().__init__()
        self.stride = spec.reduction
        self.patch_embed = PatchEmbed(spec.in_chans, spec.dim, spec.embed_stride, overlapping=spec.overlapping,
                                      channels_last_in=spec.index > 0)
        self.pos_drop = nn.Dropout(spec.proj_drop)
        self.blocks = nn.ModuleList(make_block(block) for block in spec.blocks)
        self.cpe = ConditionalPositionEncoding(spec.dim) if spec.cpe else None
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_drop(self.patch_embed(x))
        for i, block in enumerate(self.blocks):
            if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if i == 0 and self.cpe is not None:
                x = self.cpe(x)
        return x


# ---------------------------------------------------------------------------------- model
class SepViT(nn.Module):
    """SepViT backbone and classifier (timm interface). Build with a `SepViTConfig`, field overrides, or both:
    `SepViT(SepViTConfig(gsa=False))`, `SepViT(gsa=False)`, `timm.create_model("sepvit_tiny", gsa=False)`.

    Inputs of any size work: maps are zero-padded to whole windows, and learnable window tokens are
    resampled to the input's window grid (see `WindowToken`).
    """

    def __init__(self, config: SepViTConfig | None = None, global_pool: str = "avg", **overrides: Any):
        super().__init__()
        if "img_size" in overrides and isinstance(overrides["img_size"], (tuple, list)):
            overrides["img_size"] = _square_size(overrides["img_size"])
        cfg = config.replace(**overrides) if config is not None else SepViTConfig(**overrides)
        self.config = cfg
        self.in_chans = cfg.in_chans
        self.num_classes = cfg.num_classes
        self.num_features = self.head_hidden_size = cfg.embed_dims[-1]
        self.global_pool = _check_pool(global_pool)
        self.output_fmt = "NHWC"  # forward_features and the stages return channels-last maps
        self.grad_checkpointing = False

        specs = cfg.stage_specs()
        self.stages = nn.Sequential(*(SepViTStage(spec) for spec in specs))
        self.feature_info = [dict(num_chs=spec.dim, reduction=spec.reduction, module=f"stages.{spec.index}")
                             for spec in specs]
        self.norm = nn.LayerNorm(self.num_features, eps=1e-6)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.apply(trunc_normal_init)

    # ----- timm interface
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Window tokens and CPE parameters are excluded from weight decay."""
        return {name for name, _ in self.named_parameters() if ".window_token." in name or ".cpe." in name}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^stages\.0\.patch_embed",
            blocks=r"^stages\.(\d+)" if coarse else [
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^stages\.(\d+)\.(?:patch_embed|cpe)", (0,)),
                (r"^norm", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self.global_pool = _check_pool(global_pool)
        self.num_classes = num_classes
        self.config = self.config.replace(num_classes=num_classes)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            trunc_normal_init(self.head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> normalised final map, channels-last (B, H/32, W/32, C)."""
        return self.norm(self.stages(validate_images(x, self.in_chans)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(1, 2))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """Stage outputs (NCHW or NHWC) and, unless intermediates_only, the final normalised map."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        x = validate_images(x, self.in_chans)
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages if not stop_early else self.stages[: max_index + 1]
        intermediates = []
        last = len(self.stages) - 1
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                feat = self.norm(x) if (norm and i == last) else x
                intermediates.append(feat.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else feat)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    # ----- cost
    def macs_breakdown(self, height: int, width: int) -> list[tuple[str, Macs]]:
        """(module name, MACs) of every part, in forward order, for one image of height x width (batch 1):
        each part counts itself (`sepvit.macs`) on the map size the model gives it."""
        parts = []
        for s, stage in enumerate(self.stages):
            parts.append((f"stages.{s}.patch_embed", stage.patch_embed.macs(height, width)))
            height, width = stage.patch_embed.output_size(height, width)
            for i, block in enumerate(stage.blocks):
                parts.append((f"stages.{s}.blocks.{i}", block.macs(height, width)))
                if i == 0 and stage.cpe is not None:
                    parts.append((f"stages.{s}.cpe", stage.cpe.macs(height, width)))
        parts.append(("norm", layer_norm(height * width, self.num_features)))
        if self.num_classes > 0:
            parts.append(("head", linear(1, self.num_features, self.num_classes)))
        return parts

    def macs(self, height: int, width: int) -> Macs:
        """MACs of one image of height x width (batch 1)."""
        return total(macs for _, macs in self.macs_breakdown(height, width))


@register_notrace_function  # a check on the input's shape: a leaf of FX traces (public: FX wraps no _names)
def validate_images(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise ValueError(f"expected images of shape (batch, {in_chans}, height, width), got {tuple(x.shape)}")
    return x


def _check_pool(global_pool: str) -> str:
    if global_pool not in ("avg", ""):
        raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
    return global_pool


def _square_size(size) -> int:
    size = tuple(size)
    if len(size) == 3:
        size = size[1:]
    if len(size) != 2 or size[0] != size[1]:
        raise ValueError(f"img_size must be one int or a square (h, w), got {size}")
    return int(size[0])


register_builder(SepViT)


# ---------------------------------------------------------------------------------- registry
_AUTHORS_KEYS = (  # the authors' classification/sepvit.py names -> ours
    (re.compile(r"^patch_embeds\.(\d+)\.(proj|norm)\."), r"stages.\1.patch_embed.\2."),
    (re.compile(r"^pos_block\.(\d+)\.proj\.0\."), r"stages.\1.cpe.proj."),
    (re.compile(r"^blocks\.(\d+)\.(\d+)\.win_tokens$"), r"stages.\1.blocks.\2.attn.window_token.tokens"),
    (re.compile(r"^blocks\.(\d+)\.(\d+)\.attn\.DSA_qkv\."), r"stages.\1.blocks.\2.attn.dwa.qkv."),
    (re.compile(r"^blocks\.(\d+)\.(\d+)\.attn\.win_tokens_norm\."), r"stages.\1.blocks.\2.attn.pwa.norm."),
    (re.compile(r"^blocks\.(\d+)\.(\d+)\.attn\.PSA_qk\."), r"stages.\1.blocks.\2.attn.pwa.qk."),
    (re.compile(r"^blocks\.(\d+)\.(\d+)\.attn\.proj\."), r"stages.\1.blocks.\2.attn.proj."),
    (re.compile(r"^blocks\.(\d+)\.(\d+)\.(norm1|norm2|mlp)\."), r"stages.\1.blocks.\2.\3."),
)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: SepViT) -> dict[str, torch.Tensor]:
    """Workbench checkpoints ({'model': state_dict, ...} or a bare state dict) pass through; the authors'
    state dicts (`classification/sepvit.py`: `patch_embeds.*`, `pos_block.*`, `blocks.S.B.*`) are renamed,
    and their window tokens, (1, N, 1, C) with N windows row-major, become our (1, rows, cols, C)."""
    state_dict = state_dict.get("model", state_dict)
    if "patch_embeds.0.proj.weight" not in state_dict:
        return state_dict
    ours = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        for pattern, replacement in _AUTHORS_KEYS:
            if pattern.match(key):
                key = pattern.sub(replacement, key)
                break
        if key.endswith(".window_token.tokens") and key in ours and value.dim() == 4 and value.shape[2] == 1:
            value = value.reshape(ours[key].shape)  # (1, N, 1, C) -> (1, rows, cols, C): N = row * cols + col
        out[key] = value
    return out


def _create_sepvit(variant: str, pretrained: bool = False, **kwargs: Any) -> SepViT:
    merged = {**PRESETS[variant], **kwargs}
    return build_model_with_cfg(
        SepViT,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=tuple(range(len(merged["depths"]))), feature_cls="getter"),
        **merged,
    )


def _cfg(variant: str, **kwargs: Any) -> dict[str, Any]:
    cfg = SepViTConfig.preset(variant)
    side = cfg.stage_resolution(cfg.num_stages - 1)
    return dict(
        url="", num_classes=cfg.num_classes, input_size=(cfg.in_chans, cfg.img_size, cfg.img_size),
        pool_size=(side, side), crop_pct=0.875 if cfg.img_size == 224 else 1.0, interpolation="bicubic",
        fixed_input_size=False, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        first_conv="stages.0.patch_embed.proj", classifier="head",
        paper_ids="arXiv:2203.15380", paper_name="SepViT: Separable Vision Transformer",
        origin_url="https://github.com/liwei109/SepViT", **kwargs,
    )


default_cfgs = generate_default_cfgs({name: _cfg(name) for name in PRESETS})


@register_model
def sepvit_lite(pretrained: bool = False, **kwargs: Any) -> SepViT:
    """SepViT-Lite: 32/64/128/256, depths 1/2/6/2 (3.66 M params, 0.57 G MACs at 224)."""
    return _create_sepvit("sepvit_lite", pretrained, **kwargs)


@register_model
def sepvit_tiny(pretrained: bool = False, **kwargs: Any) -> SepViT:
    """SepViT-T: 96/192/384/768, depths 1/2/6/2 (31.18 M params, 4.53 G MACs at 224)."""
    return _create_sepvit("sepvit_tiny", pretrained, **kwargs)


@register_model
def sepvit_small(pretrained: bool = False, **kwargs: Any) -> SepViT:
    """SepViT-S: 96/192/384/768, depths 1/2/14/2 (46.57 M params, 7.48 G MACs at 224)."""
    return _create_sepvit("sepvit_small", pretrained, **kwargs)


@register_model
def sepvit_base(pretrained: bool = False, **kwargs: Any) -> SepViT:
    """SepViT-B: 128/256/512/1024, depths 1/2/14/2 (82.38 M params, 13.08 G MACs at 224)."""
    return _create_sepvit("sepvit_base", pretrained, **kwargs)


@register_model
def sepvit_micro_32(pretrained: bool = False, **kwargs: Any) -> SepViT:
    """Workbench preset for 32x32 images (stem stride 1, window 4): the window schedule of SepViT at 224."""
    return _create_sepvit("sepvit_micro_32", pretrained, **kwargs)


@register_model
def sepvit_micro_64(pretrained: bool = False, **kwargs: Any) -> SepViT:
    """Workbench preset for 64x64 images (stem stride 2, window 4): the window schedule of SepViT at 224."""
    return _create_sepvit("sepvit_micro_64", pretrained, **kwargs)


@register_model
def sepvit_nano_32(pretrained: bool = False, **kwargs: Any) -> SepViT:
    """sepvit_micro_32 at half the widths (16/32/64/128, heads 1/1/2/4): the runner's default on a CPU."""
    return _create_sepvit("sepvit_nano_32", pretrained, **kwargs)
