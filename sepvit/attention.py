"""Attention units of every block pattern, and the recording path for their attention maps.

Each unit is one concept of the paper (or of a peer) and counts its own cost: `macs(...)` returns a
`sepvit.macs.Macs` for the geometry its forward runs (padding, single windows, window tokens).

All units compute attention through `attend`: the fused kernel (F.scaled_dot_product_attention) when
`fused_attn` is on and nobody is recording, otherwise the explicit softmax path, whose probabilities pass
through an `AttentionProbe` (a named, hookable module) so that `record_attention` can collect them.

FX: units whose structure depends on the input's shape (padding, one window or several) are timm
"notrace" modules, i.e. leaves of a symbolic trace (`timm.layers.register_notrace_module`).
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import nn

from .layers import WindowToken, pad_map, window_geometry, window_partition, window_reverse
from .macs import Macs, attention_matmuls, layer_norm, linear, total

__all__ = [
    "AttentionProbe", "record_attention", "attend", "DepthwiseSelfAttention", "PointwiseSelfAttention",
    "DepthwiseSeparableSelfAttention", "GroupedSelfAttention", "WindowMultiHeadAttention",
    "GlobalSubsampledAttention", "GlobalMultiHeadAttention",
]


# ---------------------------------------------------------------------------------- recording
class AttentionProbe(nn.Module):
    """Identity on the softmax probabilities of one attention call; records them while recording.

    It is called on the explicit path only, with the probabilities and the geometry that places them on
    the image (`meta`), so forward hooks on `*.probe` see every attention map.
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.block_name = ""
        self.records: list[dict[str, Any]] | None = None

    @property
    def recording(self) -> bool:
        return self.records is not None

    def forward(self, attn: torch.Tensor, meta: dict[str, Any]) -> torch.Tensor:
        if self.records is not None:
            self.records.append({"block": self.block_name, "kind": self.kind, "attn": attn.detach(), **meta})
        return attn


_BLOCK_PATH = re.compile(r"^(.*\bblocks\.\d+)\.")


@contextlib.contextmanager
def record_attention(model: nn.Module) -> Iterator[list[dict[str, Any]]]:
    """Record every attention map of a forward pass, in forward order.

        with record_attention(model) as maps:
            model(x)

    Each record has `block` (the enclosing `...blocks.<i>` module's name; "" for a unit recorded on its
    own), `kind` ("dwa", "pwa", "msa", "swin", "twins_local", "twins_global", "local"), `attn` (softmax
    probabilities) and the geometry needed to place the map on the image: `map_size` (H, W of the
    feature map), `window` (window h, w), `grid` (windows per side), `padding` (bottom, right), `shift`
    (Swin), `stride` (input pixels per feature-map pixel).
    Fused attention is bypassed while recording; the output is the same within float tolerance.
    """
    probes = [(name, m) for name, m in model.named_modules() if isinstance(m, AttentionProbe)]
    records: list[dict[str, Any]] = []
    for name, probe in probes:
        match = _BLOCK_PATH.match(name)
        probe.block_name = match.group(1) if match else ""
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
    attn_drop: nn.Dropout,
    mask: torch.Tensor | None = None,
    record_shape: tuple[int, ...] | None = None,
    meta: dict[str, Any] | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v, fused or explicit, with dropout on the probabilities in training.
    q, k: (..., L, d); v: (..., S, d_v)."""
    if fused and not probe.recording:
        dropout_p = attn_drop.p if attn_drop.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if mask is not None:
        attn = attn + mask
    attn = attn.softmax(dim=-1)
    if probe.recording:
        probe(attn.reshape(record_shape) if record_shape else attn, meta or {})
    return attn_drop(attn) @ v


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
    Linear(C -> 3C) for q, k, v of every token. No output projection of its own (DSSA's projection
    comes after PWA).
    MACs (paper Eq. 5): 3 HW C^2 + 3 N C^2 + 2 N (M^2 + 1)^2 C, with N windows (without window tokens:
    3 HW C^2 + 2 N M^4 C).
    """

    def __init__(self, dim: int, num_heads: int, fused_attn: bool = True, attn_drop: float = 0.0):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.fused_attn = fused_attn
        self.qkv = nn.Linear(dim, dim * 3)
        self.attn_drop = nn.Dropout(attn_drop)
        self.probe = AttentionProbe("dwa")

    def forward(self, windows: torch.Tensor, meta: dict[str, Any] | None = None) -> torch.Tensor:
        """windows: (B, N, T, C) normalised tokens (window token first when present) -> (B, N, T, C)."""
        b, n, t, c = windows.shape
        qkv = self.qkv(windows).reshape(b * n, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = attend(*qkv.unbind(0), self.probe, self.fused_attn, self.attn_drop,
                     record_shape=(b, n, self.num_heads, t, t), meta=meta)
        return _merge_heads(out).reshape(b, n, t, c)

    def macs(self, windows: int, tokens: int) -> Macs:
        """`windows` windows of `tokens` tokens each (M^2 pixels, + 1 with a window token)."""
        return linear(windows * tokens, self.dim, 3 * self.dim) + attention_matmuls(windows, tokens, tokens,
                                                                                   self.dim, self.dim)


class PointwiseSelfAttention(nn.Module):
    """PWA (paper Eq. 3, "pointwise self-attention"; PSA in the authors' code).

    Attention across windows: each window token gives a query and a key (LayerNorm -> GELU ->
    Linear(C -> 2C)), one N x N map per head. The values are the DWA outputs of the windows, one
    M^2 * head_dim vector per window and head (no value projection), so output window i at pixel p is
    sum_j A[i, j] * DWA(window j)[p]: the same relative position mixed across windows.
    MACs (paper Eq. 6, the projection excluded: DSSA counts it): 2 N C^2 + N^2 C + N HW C (+ its LayerNorm).
    """

    def __init__(self, dim: int, num_heads: int, fused_attn: bool = True, attn_drop: float = 0.0):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.fused_attn = fused_attn
        self.norm = nn.LayerNorm(dim)
        self.act = nn.GELU()
        self.qk = nn.Linear(dim, dim * 2)
        self.attn_drop = nn.Dropout(attn_drop)
        self.probe = AttentionProbe("pwa")

    def forward(self, window_tokens: torch.Tensor, pixels: torch.Tensor,
                meta: dict[str, Any] | None = None) -> torch.Tensor:
        """window_tokens: (B, N, C); pixels: (B, N, T, C) -> (B, N, T, C) mixed across windows."""
        b, n, t, c = pixels.shape
        h, d = self.num_heads, c // self.num_heads
        q, k = self.qk(self.act(self.norm(window_tokens))).reshape(b, n, 2, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        v = pixels.reshape(b, n, t, h, d).permute(0, 3, 1, 2, 4).reshape(b, h, n, t * d)
        out = attend(q, k, v, self.probe, self.fused_attn, self.attn_drop, meta=meta)  # (B, h, N, T * d)
        return out.reshape(b, h, n, t, d).permute(0, 2, 3, 1, 4).reshape(b, n, t, c)

    def macs(self, windows: int, pixels: int) -> Macs:
        """`windows` windows of `pixels` pixels each (N HW C with HW = N * pixels)."""
        return (layer_norm(windows, self.dim) + linear(windows, self.dim, 2 * self.dim)
                + attention_matmuls(1, windows, windows, self.dim, pixels * self.dim))


# ---------------------------------------------------------------------------------- SepViT: DSSA and GSA
class DepthwiseSeparableSelfAttention(nn.Module):
    """DSSA (paper Sec. 3.1-3.2, Fig. 2; `SeparableAttention` in the authors' code): window tokens, DWA
    inside every window, PWA across windows, and the output projection.

    Authors' code (inner_shortcuts=True), on the block's normalised input:
        z~ = concat(wt, windows(z));  d = DWA(LN(z~)) + LN(z~);  (t, p) = split(d)
        out = proj(PWA(t, p) + p)
    Paper equations (inner_shortcuts=False): d = DWA(LN(z~)), out = proj(PWA(t, p)).
    `norm` (forward) is the block's pre-norm LN: paper Eq. 1 normalises the window tokens together with
    the pixels, so DSSA applies it to both (the `avgpool` token summarises the un-normalised pixels).
    With `pwa=False` (the dssa=False switch) there are no window tokens and no PWA: window attention only.
    Built with `token_grid == (1, 1)` (the window covers the map at the model's img_size), it has no
    window-token or PWA parameters, as in the authors' code, and is global attention at any input size
    (the authors' stage 4 and stage-3 GSA blocks at 224). A built DSSA that meets a map fitting one
    window runs without tokens and PWA.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        token_grid: tuple[int, int],
        window_token: str = "learnable",
        pwa: bool = True,
        inner_shortcuts: bool = True,
        fused_attn: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        stride: int = 1,
    ):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.global_attention = tuple(token_grid) == (1, 1)
        self.separable = pwa and not self.global_attention
        self.inner_shortcuts = inner_shortcuts
        self.stride = stride
        self.window_token = WindowToken(window_token, dim, tuple(token_grid), window_size) if self.separable else None
        self.dwa = DepthwiseSelfAttention(dim, num_heads, fused_attn=fused_attn, attn_drop=attn_drop)
        self.pwa = PointwiseSelfAttention(dim, num_heads, fused_attn=fused_attn, attn_drop=attn_drop) \
            if self.separable else None
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _geometry(self, height: int, width: int) -> tuple[int, int, int, int]:
        window = max(height, width) if self.global_attention else self.window_size
        return window_geometry(height, width, window)

    def forward(self, x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        """x: the block input (B, H, W, C), not yet normalised; norm: the block's pre-norm. -> (B, H, W, C)."""
        b, height, width, c = x.shape
        wh, ww, ph, pw = self._geometry(height, width)
        windows = window_partition(pad_map(norm(x), ph, pw), wh, ww)
        grid = ((height + ph) // wh, (width + pw) // ww)
        use_tokens = self.separable and windows.shape[1] > 1
        if use_tokens:
            tokens = norm(self.window_token(x, grid, (wh, ww), (ph, pw)))
            windows = torch.cat([tokens.unsqueeze(2), windows], dim=2)
        meta = dict(map_size=(height, width), window=(wh, ww), grid=grid, padding=(ph, pw), shift=0,
                    stride=self.stride, window_token=use_tokens)
        mixed = self.dwa(windows, dict(meta, kind="dwa" if windows.shape[1] > 1 else "msa"))
        if self.inner_shortcuts:
            mixed = mixed + windows
        if use_tokens:
            tokens, pixels = mixed[:, :, 0], mixed[:, :, 1:]
            mixed = self.pwa(tokens, pixels, meta)
            if self.inner_shortcuts:
                mixed = mixed + pixels
        out = window_reverse(mixed, wh, ww, height + ph, width + pw)[:, :height, :width]
        return self.proj_drop(self.proj(out))

    def macs_parts(self, height: int, width: int) -> dict[str, Macs]:
        """MACs of each step on an H x W map: norm (the pre-norm of pixels and tokens), window_tokens
        (resizing), dwa, pwa (with its LayerNorm), proj (on the cropped map, the paper's PWA term HW C^2)."""
        wh, ww, ph, pw = self._geometry(height, width)
        grid = ((height + ph) // wh, (width + pw) // ww)
        windows, pixels = grid[0] * grid[1], wh * ww
        use_tokens = self.separable and windows > 1
        tokens = height * width
        return dict(
            norm=layer_norm(tokens, self.dim) + (layer_norm(windows, self.dim) if use_tokens else Macs()),
            window_tokens=self.window_token.macs(grid) if use_tokens else Macs(),
            dwa=self.dwa.macs(windows, pixels + int(use_tokens)),
            pwa=self.pwa.macs(windows, pixels) if use_tokens else Macs(),
            proj=linear(tokens, self.dim, self.dim),
        )

    def macs(self, height: int, width: int) -> Macs:
        return total(self.macs_parts(height, width).values())


class GroupedSelfAttention(DepthwiseSeparableSelfAttention):
    """GSA (paper Sec. 3.3, "grouped self-attention"): DSSA whose windows are groups of
    group_size x group_size neighbouring windows, one window token per group and PWA among groups
    (the authors' window 14 = 2 x 2 windows of 7). A group covering the map is global attention.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, group_size: int,
                 token_grid: tuple[int, int], **kwargs: Any):
        super().__init__(dim, num_heads, window_size * group_size, token_grid, **kwargs)
        self.group_size = group_size


# ---------------------------------------------------------------------------------- peers
class WindowMultiHeadAttention(nn.Module):
    """Windowed multi-head attention with output projection: Swin's W-MSA / SW-MSA (`shift`, with the
    shift mask), Twins' locally-grouped self-attention (LSA) and the plain local pattern. A map that
    fits in one window is global MSA.
    MACs (Swin, paper Eq. 4): 4 HW C^2 + 2 M^2 HW C (the same for SW-MSA).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: bool = False, kind: str = "swin",
                 fused_attn: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0, stride: int = 1):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift = shift
        self.fused_attn = fused_attn
        self.stride = stride
        self.qkv = nn.Linear(dim, dim * 3)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.probe = AttentionProbe(kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
                    shift=shift, stride=self.stride)
        if single:
            meta["kind"] = "msa"
        out = attend(*qkv.unbind(0), self.probe, self.fused_attn, self.attn_drop, mask=mask,
                     record_shape=(b, n, self.num_heads, t, t), meta=meta)
        x = window_reverse(_merge_heads(out).reshape(b, n, t, c), wh, ww, hp, wp)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return self.proj_drop(self.proj(x[:, :height, :width].contiguous()))

    def macs(self, height: int, width: int) -> Macs:
        """qkv and attention run on the padded map, the projection after cropping to height x width."""
        wh, ww, ph, pw = window_geometry(height, width, self.window_size)
        padded, tokens = (height + ph) * (width + pw), wh * ww
        return (linear(padded, self.dim, 3 * self.dim)
                + attention_matmuls(padded // tokens, tokens, tokens, self.dim, self.dim)
                + linear(height * width, self.dim, self.dim))


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

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, fused_attn: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, stride: int = 1):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.fused_attn = fused_attn
        self.stride = stride
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)
        else:
            self.sr = None
            self.norm = None
        self.probe = AttentionProbe("twins_global")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
        meta = dict(map_size=(height, width), kv_size=tuple(kv_size), sr_ratio=self.sr_ratio, stride=self.stride)
        out = attend(q, _split_heads(k, h), _split_heads(v, h), self.probe, self.fused_attn, self.attn_drop, meta=meta)
        return self.proj_drop(self.proj(_merge_heads(out).reshape(b, height, width, c)))

    def macs(self, height: int, width: int) -> Macs:
        tokens, r = height * width, self.sr_ratio
        kv = -(-height // r) * -(-width // r)
        out = (linear(tokens, self.dim, self.dim) + linear(kv, self.dim, 2 * self.dim)
               + attention_matmuls(1, tokens, kv, self.dim, self.dim) + linear(tokens, self.dim, self.dim))
        if r > 1:  # the sr x sr stride-sr conv and its LayerNorm
            out = out + Macs(paper=kv * self.dim * self.dim * r * r, biases=kv * self.dim) + layer_norm(kv, self.dim)
        return out


class GlobalMultiHeadAttention(WindowMultiHeadAttention):
    """Global multi-head self-attention (MSA) over the whole map.
    MACs (paper Eq. 4): 4 HW C^2 + 2 (HW)^2 C.
    """

    def __init__(self, dim: int, num_heads: int, fused_attn: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, stride: int = 1):
        super().__init__(dim, num_heads, window_size=1 << 30, shift=False, kind="msa", fused_attn=fused_attn,
                         attn_drop=attn_drop, proj_drop=proj_drop, stride=stride)


# Their structure depends on the input's shape (padding, one window or several): leaves of an FX trace.
for _unit in (WindowMultiHeadAttention, GlobalSubsampledAttention, GlobalMultiHeadAttention):
    register_notrace_module(_unit)
