"""Helpers: window partitioning, window tokens, overlapping patch embedding (OPE) and CPE.

Feature maps are channels-last, (B, H, W, C), everywhere inside the backbone.
Each layer's `macs()` counts what its forward runs (`sepvit.macs`: multiply-add = 1, split by convention).
"""
from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import conv_output_size, patch_embed_geometry, window_geometry
from .macs import Macs, conv, layer_norm, resample

__all__ = ["window_geometry", "pad_map", "window_partition", "window_reverse", "WindowToken", "PatchEmbed",
           "ConditionalPositionEncoding", "trunc_normal_init", "init_by_name"]


# ---------------------------------------------------------------------------------- windows
def pad_map(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Zero-pad a (B, H, W, C) map on the bottom and right."""
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return x


def window_partition(x: torch.Tensor, window_h: int, window_w: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, num_windows, window_h * window_w, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_h, window_h, w // window_w, window_w, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, (h // window_h) * (w // window_w), window_h * window_w, c)


def window_reverse(windows: torch.Tensor, window_h: int, window_w: int, height: int, width: int) -> torch.Tensor:
    """Inverse of `window_partition` for a (padded) map of size height x width."""
    b, _, _, c = windows.shape
    gh, gw = height // window_h, width // window_w
    x = windows.view(b, gh, gw, window_h, window_w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, height, width, c)


# ---------------------------------------------------------------------------------- window token
class WindowToken(nn.Module):
    """Window token embedding (paper Sec. 3.1): one extra token per window that summarises it.

    Modes (`SepViTConfig.window_token`):
      "learnable": the authors' LWT, a zero-initialised parameter per window position (shape
          (1, gh, gw, C) for the window grid at the model's img_size), shared over the batch. On an input
          whose window grid differs, the tokens are resampled bilinearly to the new grid; a block built
          with a single window (no tokens) that meets several windows uses fixed zeros, as the authors'
          dense-prediction backbones do.
      "zero": fixed zero tokens (the paper's ablation), no parameters.
      "avgpool": each window's mean over its valid (unpadded) pixels (the paper's Table-7 alternative).
      "dwconv": a depthwise convolution with kernel and stride = the window (the paper's other Table-7
          alternative): one learnt weight per pixel position and channel, C (M^2 + 1) parameters; padded
          pixels are zeros.
    The token is normalised by the block's pre-norm like every other token (paper Eq. 1: z~ = concat(z, wt)).
    Cost: resizing learnable tokens, and the dwconv's N M^2 C (the qkv of the extra token is counted in DWA).
    """

    def __init__(self, mode: str, dim: int, grid: tuple[int, int], window: int | None = None):
        super().__init__()
        self.mode = mode
        self.dim = dim
        self.built_grid = grid
        if mode == "learnable" and grid[0] * grid[1] > 1:
            self.tokens = nn.Parameter(torch.zeros(1, grid[0], grid[1], dim))
        else:
            self.register_parameter("tokens", None)
        self.conv = None
        if mode == "dwconv":
            if window is None:
                raise ValueError("window_token='dwconv' needs the window size (its kernel and stride)")
            self.conv = nn.Conv2d(dim, dim, kernel_size=window, stride=window, groups=dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, int], window: tuple[int, int], pad: tuple[int, int]):
        """x: the block input (B, H, W, C) before norm. Returns raw tokens (B, gh * gw, C)."""
        b = x.shape[0]
        gh, gw = grid
        if self.mode == "avgpool":
            ones = x.new_ones(1, x.shape[1], x.shape[2], 1)
            sums = window_partition(pad_map(x, *pad), *window).sum(2)
            counts = window_partition(pad_map(ones, *pad), *window).sum(2)
            return sums / counts
        if self.conv is not None:
            summary = self.conv(pad_map(x, *pad).permute(0, 3, 1, 2))  # (B, C, gh, gw)
            return summary.flatten(2).transpose(1, 2)
        if self.tokens is None:
            return x.new_zeros(b, gh * gw, self.dim)
        tokens = self.tokens
        if (gh, gw) != self.built_grid:
            tokens = F.interpolate(tokens.permute(0, 3, 1, 2), size=(gh, gw), mode="bilinear", align_corners=False)
            tokens = tokens.permute(0, 2, 3, 1)
        return tokens.reshape(1, gh * gw, self.dim).expand(b, -1, -1)

    def macs(self, grid: tuple[int, int]) -> Macs:
        """Learnable tokens met on a window grid other than the built one are resized (bilinear); the dwconv
        summary costs one depthwise M x M conv output per window and channel."""
        if self.conv is not None:
            return conv(grid[0] * grid[1], self.dim, self.dim, self.conv.kernel_size[0], groups=self.dim)
        if self.tokens is not None and tuple(grid) != tuple(self.built_grid):
            return resample(grid[0] * grid[1] * self.dim)
        return Macs()

    def extra_repr(self) -> str:
        return f"mode={self.mode}, dim={self.dim}, grid={self.built_grid}"


# ---------------------------------------------------------------------------------- OPE and CPE
class PatchEmbed(nn.Module):
    """Overlapping patch embedding (OPE): conv with kernel 2*stride-1 and padding, then LayerNorm.

    With `overlapping=False` the kernel equals the stride (ViT/Swin-style patchify).
    Input (B, C_in, H, W) or channels-last (B, H, W, C_in); output channels-last (B, H', W', C_out).
    MACs: H' W' C_out C_in k^2 (+ LayerNorm, not counted by the paper's formulas).
    """

    def __init__(self, in_chans: int, dim: int, stride: int, overlapping: bool = True, channels_last_in: bool = True):
        super().__init__()
        kernel, padding = patch_embed_geometry(stride, overlapping)
        self.in_chans, self.dim, self.kernel, self.stride, self.padding = in_chans, dim, kernel, stride, padding
        self.channels_last_in = channels_last_in
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=kernel, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last_in:
            x = x.permute(0, 3, 1, 2)
        return self.norm(self.proj(x).permute(0, 2, 3, 1))

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(H', W') of the embedded map for an input of height x width."""
        return (conv_output_size(height, self.kernel, self.stride, self.padding),
                conv_output_size(width, self.kernel, self.stride, self.padding))

    def macs(self, height: int, width: int) -> Macs:
        """The conv and its LayerNorm, for an input of height x width."""
        h, w = self.output_size(height, width)
        return conv(h * w, self.in_chans, self.dim, self.kernel) + layer_norm(h * w, self.dim)


class ConditionalPositionEncoding(nn.Module):
    """Conditional position encoding (CPE, the PEG of CPVT): x + DWConv3x3(x), after a stage's first block.

    MACs: 9 H W C.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.proj = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def macs(self, height: int, width: int) -> Macs:
        return conv(height * width, self.dim, self.dim, 3, groups=self.dim)


def trunc_normal_init(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """The authors' init: Linear trunc-normal(0.02), LayerNorm 1/0, Conv normal(0, sqrt(2 / fan_out)).

    generator: draw from it instead of torch's global RNG (`init_by_name` gives each module its own).
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02, generator=generator)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out), generator=generator)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def init_by_name(model: nn.Module, seed: int) -> None:
    """Re-draw the authors' init of every module from a generator seeded by (seed, the module's name).

    Two models built with the same seed then start from the same weights in every module whose name and shape
    they share (e.g. SepViT with and without GSA differ only where their blocks differ), so a comparison of the
    two at one seed measures the change, not the luck of the draw. The distribution is the authors' init.
    """
    for name, module in model.named_modules():
        digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=8).digest()
        trunc_normal_init(module, torch.Generator().manual_seed(int.from_bytes(digest, "little") % 2**63))
