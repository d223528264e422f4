"""SepViT backbone: blocks -> stage -> model -> timm registry (the layout of timm's swin_transformer.py).

One backbone, four block patterns (`SepViTConfig.block_pattern`) with the same stem, stages, widths, CPE
and head, so that the attention pattern is the only difference between them.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from .attention import (
    DepthwiseSelfAttention,
    GlobalMultiHeadAttention,
    GlobalSubsampledAttention,
    PointwiseSelfAttention,
    WindowMultiHeadAttention,
)
from .config import PRESETS, SepViTConfig
from .layers import (
    ConditionalPositionEncoding,
    PatchEmbed,
    WindowToken,
    pad_map,
    trunc_normal_init,
    window_geometry,
    window_partition,
    window_reverse,
)

__all__ = ["SepViT", "SepViTBlock", "TransformerBlock", "SepViTStage"]


# ---------------------------------------------------------------------------------- blocks
class SepViTBlock(nn.Module):
    """The SepViT block (paper Eq. 1-3, Fig. 2): window tokens + DWA + PWA + projection, then MLP.

    Authors' code (inner_shortcuts=True):
        z~ = concat(wt, windows(z));  d = DWA(LN(z~)) + LN(z~);  (t, p) = split(d)
        z' = z + proj(PWA(t, p) + p);  out = z' + MLP(LN(z'))
    Paper equations (inner_shortcuts=False): d = DWA(LN(z~)), z' = z + proj(PWA(t, p)).
    With dssa=False there are no window tokens and no PWA (window attention only; the config then
    gives every block the base window, since GSA groups belong to DSSA).
    A block whose window covers the whole map at the model's img_size (token_grid == (1, 1)) is built
    as in the authors' code, without window token or PWA parameters: global MSA plus the inner shortcut
    (the authors' stage 4 and stage-3 GSA blocks at 224). It stays global at any input size.
    A GSA block (paper Sec. 3.3) is this block with a window of group_size x window_size.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        token_grid: tuple[int, int],
        window_token: str = "learnable",
        dssa: bool = True,
        inner_shortcuts: bool = True,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        fused_attn: bool = True,
    ):
        super().__init__()
        self.global_attention = tuple(token_grid) == (1, 1)
        self.window_size = window_size
        self.dssa = dssa and not self.global_attention
        self.inner_shortcuts = inner_shortcuts
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.window_token = WindowToken(window_token, dim, token_grid) if self.dssa else None
        self.dwa = DepthwiseSelfAttention(dim, num_heads, fused_attn=fused_attn)
        self.pwa = PointwiseSelfAttention(dim, num_heads, fused_attn=fused_attn) if self.dssa else None
        self.proj = nn.Linear(dim, dim)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
        x = x + self.drop_path1(self.separable_attention(x, stride))
        return x + self.drop_path2(self.mlp(self.norm2(x)))

    def separable_attention(self, x: torch.Tensor, stride: int) -> torch.Tensor:
        b, height, width, c = x.shape
        window = max(height, width) if self.global_attention else self.window_size
        wh, ww, ph, pw = window_geometry(height, width, window)
        windows = window_partition(pad_map(self.norm1(x), ph, pw), wh, ww)
        grid = ((height + ph) // wh, (width + pw) // ww)
        use_tokens = self.dssa and windows.shape[1] > 1
        if use_tokens:
            tokens = self.norm1(self.window_token(x, grid, (wh, ww), (ph, pw)))
            windows = torch.cat([tokens.unsqueeze(2), windows], dim=2)
        meta = dict(map_size=(height, width), window=(wh, ww), grid=grid, padding=(ph, pw), shift=0,
                    stride=stride, window_token=use_tokens)
        kind = "dwa" if windows.shape[1] > 1 else "msa"
        mixed = self.dwa(windows, kind=kind, **meta)
        if self.inner_shortcuts:
            mixed = mixed + windows
        if use_tokens:
            tokens, pixels = mixed[:, :, 0], mixed[:, :, 1:]
            mixed = self.pwa(tokens, pixels, **meta)
            if self.inner_shortcuts:
                mixed = mixed + pixels
        out = window_reverse(mixed, wh, ww, height + ph, width + pw)[:, :height, :width]
        return self.proj(out)


class TransformerBlock(nn.Module):
    """A pre-norm transformer block around one of the peers' attention units:
    Swin W-MSA / SW-MSA, Twins LSA / GSA, or global MSA. out = z' + MLP(LN(z')), z' = z + Attn(LN(z)).
    """

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = attn
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), stride=stride))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


def make_block(cfg: SepViTConfig, stage: int, index: int, drop_path: float) -> nn.Module:
    """The block at (stage, index) for the configured block pattern."""
    dim, heads = cfg.embed_dims[stage], cfg.num_heads[stage]
    common = dict(mlp_ratio=cfg.mlp_ratio, drop_path=drop_path)
    if cfg.block_pattern == "sepvit":
        window = cfg.block_window_sizes(stage)[index]
        side = cfg.stage_resolution(stage)
        grid = (1, 1) if side <= window else (math.ceil(side / window),) * 2
        return SepViTBlock(dim, heads, window, grid, window_token=cfg.window_token, dssa=cfg.dssa,
                           inner_shortcuts=cfg.inner_shortcuts, fused_attn=cfg.fused_attn, **common)
    if cfg.block_pattern == "swin":
        attn = WindowMultiHeadAttention(dim, heads, cfg.window_size, shift=index % 2 == 1, kind="swin",
                                        fused_attn=cfg.fused_attn)
    elif cfg.block_pattern == "twins":
        if index % 2 == 0:
            attn = WindowMultiHeadAttention(dim, heads, cfg.window_size, kind="twins_local", fused_attn=cfg.fused_attn)
        else:
            attn = GlobalSubsampledAttention(dim, heads, cfg.twins_sr_ratios[stage], fused_attn=cfg.fused_attn)
    else:
        attn = GlobalMultiHeadAttention(dim, heads, fused_attn=cfg.fused_attn)
    return TransformerBlock(dim, attn, **common)


# ---------------------------------------------------------------------------------- stage
class SepViTStage(nn.Module):
    """Patch embedding (OPE), then the stage's blocks, with CPE after the first block (as in Twins)."""

    def __init__(self, cfg: SepViTConfig, stage: int, drop_paths: list[float]):
        super().__init__()
        self.stride = cfg.stem_stride * 2**stage
        in_chans = cfg.in_chans if stage == 0 else cfg.embed_dims[stage - 1]
        self.patch_embed = PatchEmbed(in_chans, cfg.embed_dims[stage], cfg.stem_stride if stage == 0 else 2,
                                      overlapping=cfg.ope, channels_last_in=stage > 0)
        self.blocks = nn.ModuleList(make_block(cfg, stage, i, dp) for i, dp in enumerate(drop_paths))
        self.cpe = ConditionalPositionEncoding(cfg.embed_dims[stage]) if cfg.cpe else None
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for i, block in enumerate(self.blocks):
            if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
                x = checkpoint(block, x, self.stride, use_reentrant=False)
            else:
                x = block(x, self.stride)
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

    def __init__(self, config: SepViTConfig | None = None, **overrides: Any):
        super().__init__()
        if "img_size" in overrides and isinstance(overrides["img_size"], (tuple, list)):
            overrides["img_size"] = _square_size(overrides["img_size"])
        cfg = config.replace(**overrides) if config is not None else SepViTConfig(**overrides)
        self.config = cfg
        self.num_classes = cfg.num_classes
        self.num_features = self.head_hidden_size = cfg.embed_dims[-1]
        self.global_pool = "avg"
        self.grad_checkpointing = False

        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        stages, start = [], 0
        self.feature_info = []
        for s, depth in enumerate(cfg.depths):
            stages.append(SepViTStage(cfg, s, rates[start:start + depth]))
            start += depth
            self.feature_info.append(dict(num_chs=cfg.embed_dims[s], reduction=stages[-1].stride, module=f"stages.{s}"))
        self.stages = nn.Sequential(*stages)
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
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.config = self.config.replace(num_classes=num_classes)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            trunc_normal_init(self.head)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.config.in_chans:
            raise ValueError(
                f"expected images of shape (batch, {self.config.in_chans}, height, width), got {tuple(x.shape)}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> normalised final map, channels-last (B, H/32, W/32, C)."""
        self._check_input(x)
        return self.norm(self.stages(x))

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
        self._check_input(x)
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


def _square_size(size) -> int:
    size = tuple(size)
    if len(size) == 3:
        size = size[1:]
    if len(size) != 2 or size[0] != size[1]:
        raise ValueError(f"img_size must be one int or a square (h, w), got {size}")
    return int(size[0])


# ---------------------------------------------------------------------------------- registry
def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: SepViT) -> dict[str, torch.Tensor]:
    """Accept workbench checkpoints saved as {'model': state_dict, ...} or a bare state dict."""
    return state_dict.get("model", state_dict) if isinstance(state_dict, dict) else state_dict


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


def _cfg(input_size: int = 224, num_classes: int = 1000, **kwargs: Any) -> dict[str, Any]:
    return dict(
        url="", num_classes=num_classes, input_size=(3, input_size, input_size), pool_size=None,
        crop_pct=0.875 if input_size == 224 else 1.0, interpolation="bicubic",
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        first_conv="stages.0.patch_embed.proj", classifier="head", **kwargs,
    )


default_cfgs = generate_default_cfgs({
    "sepvit_lite": _cfg(),
    "sepvit_tiny": _cfg(),
    "sepvit_small": _cfg(),
    "sepvit_base": _cfg(),
    "sepvit_micro_32": _cfg(input_size=32, num_classes=10),
    "sepvit_micro_64": _cfg(input_size=64, num_classes=10),
    "sepvit_nano_32": _cfg(input_size=32, num_classes=10),
})


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
