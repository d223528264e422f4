"""Attention units of every block pattern, and the recording path for their attention maps.

Each unit is one concept of the paper (or of a peer), with its analytic MAC formula beside it
(multiply-add = 1; norms, softmax, GELU, biases and adds are left out, as in the paper).

All units compute attention through `attend`: the fused kernel (F.scaled_dot_product_attention) when
`fused_attn` is on and nobody is recording, otherwise the explicit softmax path, whose probabilities pass
through an `AttentionProbe` (a named, hookable module) so that `record_attention` can collect them.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .layers import pad_map, window_geometry, window_partition, window_reverse


# ---------------------------------------------------------------------------------- recording
class AttentionProbe(nn.Module):
    """Identity on the softmax probabilities of one attention call; records them while recording.

    It is called on the explicit path only, so forward hooks on `*.probe` see every attention map.
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.block_name = ""
        self.records: list[dict[str, Any]] | None = None

    @property
    def recording(self) -> bool:
        return self.records is not None

    def forward(self, attn: torch.Tensor, **meta: Any) -> torch.Tensor:
        if self.records is not None:
            self.records.append(dict(block=self.block_name, kind=meta.pop("kind", self.kind), attn=attn.detach(), **meta))
        return attn


@contextlib.contextmanager
def record_attention(model: nn.Module) -> Iterator[list[dict[str, Any]]]:
    """Record every attention map of a forward pass, in forward order.

        with record_attention(model) as maps:
            model(x)

    Each record has `block` (the owning module's name), `kind` ("dwa", "pwa", "msa", "swin",
    "twins_local", "twins_global"), `attn` (softmax probabilities) and the geometry needed to place the
    map on the image: `map_size` (H, W of the feature map), `window` (window h, w), `grid` (windows per
    side), `padding` (bottom, right), `shift` (Swin), `stride` (input pixels per feature-map pixel).
    Fused attention is bypassed while recording; the output is the same within float tolerance.
    """
    probes = [(name, m) for name, m in model.named_modules() if isinstance(m, AttentionProbe)]
    records: list[dict[str, Any]] = []
    for name, probe in probes:
        probe.block_name = ".".join(name.split(".")[:-2])  # "<block>.<unit>.probe" -> "<block>"
        probe.records = records
    try:
        yield records
    finally:
        for _, probe in probes:
            probe.records = None


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    probe: AttentionProbe,
    fused: bool,
    mask: torch.Tensor | None = None,
    record_shape: tuple[int, ...] | None = None,
    **meta: Any,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v, fused or explicit. q, k: (..., L, d); v: (..., S, d_v)."""
    if fused and not probe.recording:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if mask is not None:
        attn = attn + mask
    attn = attn.softmax(dim=-1)
    if probe.recording:
        probe(attn.reshape(record_shape) if record_shape else attn, **meta)
    return attn @ v


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., T, C) -> (..., heads, T, C / heads)."""
    *lead, t, c = x.shape
    return x.reshape(*lead, t, heads, c // heads).transpose(-3, -2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(..., heads, T, d) -> (..., T, heads * d)."""
    *lead, h, t, d = x.shape
    return x.transpose(-3, -2).reshape(*lead, t, h * d)


# ---------------------------------------------------------------------------------- SepViT: DWA and PWA
class DepthwiseSelfAttention(nn.Module):
    """DWA (paper Eq. 2, "depthwise self-attention"; DSA in the authors' code).

    Multi-head attention inside each window over its M^2 pixels plus the window token, with one
    Linear(C -> 3C) for q, k, v of every token. No output projection of its own (the block's projection
    comes after PWA).
    MACs (paper Eq. 5): 3 HW C^2 + 3 N C^2 + 2 N (M^2 + 1)^2 C, with N windows (without window tokens:
    3 HW C^2 + 2 N M^4 C).
    """

    def __init__(self, dim: int, num_heads: int, fused_attn: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.fused_attn = fused_attn
        self.qkv = nn.Linear(dim, dim * 3)
        self.probe = AttentionProbe("dwa")

    def forward(self, windows: torch.Tensor, **meta: Any) -> torch.Tensor:
        """windows: (B, N, T, C) normalised tokens (window token first when present) -> (B, N, T, C)."""
        b, n, t, c = windows.shape
        qkv = self.qkv(windows).reshape(b * n, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = attend(*qkv.unbind(0), self.probe, self.fused_attn, record_shape=(b, n, self.num_heads, t, t), **meta)
        return _merge_heads(out).reshape(b, n, t, c)

    @staticmethod
    def macs(height: int, width: int, dim: int, window_h: int, window_w: int, window_token: bool) -> int:
        """height, width: the map padded to whole windows."""
        windows = (height // window_h) * (width // window_w)
        tokens = window_h * window_w + int(window_token)
        return 3 * height * width * dim**2 + 3 * windows * dim**2 * int(window_token) + 2 * windows * tokens**2 * dim


class PointwiseSelfAttention(nn.Module):
    """PWA (paper Eq. 3, "pointwise self-attention"; PSA in the authors' code).

    Attention across windows: each window token gives a query and a key (LayerNorm -> GELU ->
    Linear(C -> 2C)), one N x N map per head. The values are the DWA outputs of the windows, one
    M^2 * head_dim vector per window and head (no value projection), so output window i at pixel p is
    sum_j A[i, j] * DWA(window j)[p]: the same relative position mixed across windows.
    MACs (paper Eq. 6, projection excluded here and counted by the block): 2 N C^2 + N^2 C + N HW C.
    """

    def __init__(self, dim: int, num_heads: int, fused_attn: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.fused_attn = fused_attn
        self.norm = nn.LayerNorm(dim)
        self.act = nn.GELU()
        self.qk = nn.Linear(dim, dim * 2)
        self.probe = AttentionProbe("pwa")

    def forward(self, window_tokens: torch.Tensor, pixels: torch.Tensor, **meta: Any) -> torch.Tensor:
        """window_tokens: (B, N, C); pixels: (B, N, T, C) -> (B, N, T, C) mixed across windows."""
        b, n, t, c = pixels.shape
        h, d = self.num_heads, c // self.num_heads
        q, k = self.qk(self.act(self.norm(window_tokens))).reshape(b, n, 2, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        v = pixels.reshape(b, n, t, h, d).permute(0, 3, 1, 2, 4).reshape(b, h, n, t * d)
        out = attend(q, k, v, self.probe, self.fused_attn, **meta)  # (B, h, N, T * d)
        return out.reshape(b, h, n, t, d).permute(0, 2, 3, 1, 4).reshape(b, n, t, c)

    @staticmethod
    def macs(height: int, width: int, dim: int, window_h: int, window_w: int) -> int:
        """height, width: the map padded to whole windows."""
        windows = (height // window_h) * (width // window_w)
        return 2 * windows * dim**2 + windows**2 * dim + windows * height * width * dim


# ---------------------------------------------------------------------------------- peers
class WindowMultiHeadAttention(nn.Module):
    """Windowed multi-head attention with output projection: Swin's W-MSA / SW-MSA (`shift` > 0, with
    the shift mask) and Twins' locally-grouped self-attention (LSA). A map that fits in one window is
    global MSA.
    MACs (Swin, paper Eq. 4): 4 HW C^2 + 2 M^2 HW C (the same for SW-MSA).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: bool = False, kind: str = "swin",
                 fused_attn: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift = shift
        self.fused_attn = fused_attn
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.probe = AttentionProbe(kind)

    def forward(self, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
        b, height, width, c = x.shape
        wh, ww, ph, pw = window_geometry(height, width, self.window_size)
        single = (wh, ww) == (height, width) and not (ph or pw)
        shift = self.window_size // 2 if (self.shift and not single) else 0
        x = pad_map(x, ph, pw)
        hp, wp = x.shape[1], x.shape[2]
        mask = None
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            mask = _shift_mask(hp, wp, wh, shift, x.device, x.dtype)
        windows = window_partition(x, wh, ww)
        n, t = windows.shape[1], windows.shape[2]
        qkv = self.qkv(windows).reshape(b * n, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        if mask is not None:
            mask = mask.unsqueeze(1).unsqueeze(0).expand(b, -1, -1, -1, -1).reshape(b * n, 1, t, t)
        meta = dict(map_size=(height, width), window=(wh, ww), grid=(hp // wh, wp // ww), padding=(ph, pw),
                    shift=shift, stride=stride)
        if single:
            meta["kind"] = "msa"
        out = attend(*qkv.unbind(0), self.probe, self.fused_attn, mask=mask,
                     record_shape=(b, n, self.num_heads, t, t), **meta)
        x = window_reverse(_merge_heads(out).reshape(b, n, t, c), wh, ww, hp, wp)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return self.proj(x[:, :height, :width].contiguous())

    @staticmethod
    def macs(height: int, width: int, dim: int, window_h: int, window_w: int, pad_h: int = 0, pad_w: int = 0) -> int:
        """qkv and attention run on the padded map, the projection after cropping to height x width."""
        padded = (height + pad_h) * (width + pad_w)
        return 3 * padded * dim**2 + height * width * dim**2 + 2 * window_h * window_w * padded * dim


def _shift_mask(height: int, width: int, window: int, shift: int, device, dtype) -> torch.Tensor:
    """Swin's SW-MSA mask (num_windows, T, T): -100 between tokens that were not neighbours before the roll."""
    region = torch.zeros(1, height, width, 1, device=device)
    label = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            region[:, hs, ws, :] = label
            label += 1
    ids = window_partition(region, window, window).squeeze(0).squeeze(-1)  # (N, T)
    mask = ids.unsqueeze(1) - ids.unsqueeze(2)
    return mask.ne(0).to(dtype) * -100.0


class GlobalSubsampledAttention(nn.Module):
    """Twins' global sub-sampled attention (GSA in Twins' sense; PVT's SRA): queries from all HW tokens,
    keys/values from an sr x sr stride-sr conv of the map (+ LayerNorm). At sr = 1 it is global MSA.
    The map is zero-padded to a multiple of sr (Twins itself would floor it).
    MACs: 2 HW C^2 (q, proj) + 2 (HW/sr^2) C^2 (kv) + (HW/sr^2) C^2 sr^2 (conv) + 2 HW (HW/sr^2) C.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, fused_attn: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.fused_attn = fused_attn
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)
        else:
            self.sr = None
            self.norm = None
        self.probe = AttentionProbe("twins_global")

    def forward(self, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
        b, height, width, c = x.shape
        h = self.num_heads
        q = _split_heads(self.q(x).reshape(b, height * width, c), h)
        if self.sr is not None:
            r = self.sr_ratio
            ph, pw = (-height) % r, (-width) % r
            kv_in = self.sr(pad_map(x, ph, pw).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            kv_size = kv_in.shape[1:3]
            kv_in = self.norm(kv_in).reshape(b, -1, c)
        else:
            kv_in, kv_size = x.reshape(b, height * width, c), (height, width)
        k, v = self.kv(kv_in).reshape(b, -1, 2, c).permute(2, 0, 1, 3).unbind(0)
        meta = dict(map_size=(height, width), kv_size=tuple(kv_size), sr_ratio=self.sr_ratio, stride=stride)
        out = attend(q, _split_heads(k, h), _split_heads(v, h), self.probe, self.fused_attn, **meta)
        return self.proj(_merge_heads(out).reshape(b, height, width, c))

    @staticmethod
    def macs(height: int, width: int, dim: int, sr_ratio: int) -> int:
        kv_tokens = -(-height // sr_ratio) * -(-width // sr_ratio)
        conv = kv_tokens * dim * dim * sr_ratio**2 if sr_ratio > 1 else 0
        return 2 * height * width * dim**2 + 2 * kv_tokens * dim**2 + conv + 2 * height * width * kv_tokens * dim


class GlobalMultiHeadAttention(WindowMultiHeadAttention):
    """Global multi-head self-attention (MSA) over the whole map.
    MACs (paper Eq. 4): 4 HW C^2 + 2 (HW)^2 C.
    """

    def __init__(self, dim: int, num_heads: int, fused_attn: bool = True):
        super().__init__(dim, num_heads, window_size=1 << 30, shift=False, kind="msa", fused_attn=fused_attn)

    @staticmethod
    def macs(height: int, width: int, dim: int) -> int:  # type: ignore[override]
        return 4 * height * width * dim**2 + 2 * (height * width) ** 2 * dim
