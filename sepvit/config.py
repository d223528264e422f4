"""`SepViTConfig`: the one object that describes a model.

The command line, MLflow params, Optuna trials and the notebooks all read and write this object:
``SepViTConfig.from_dict(cfg.to_dict()) == cfg`` and ``cfg.build()`` returns the model.

Defaults reproduce the authors' SepViT-T at 224x224 (``liwei109/SepViT``, ``classification/sepvit.py``).
Every deviation from the authors' model is a named switch whose default is the authors' choice.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import torch

from workbench.fields import check_known, check_types

from .geometry import patch_embed_output_size, window_grid

WINDOW_TOKENS = ("learnable", "zero", "avgpool", "dwconv")
# Each block pattern is the cycle of block kinds over a stage's blocks (block i has kind cycle[i % len]).
# Adding a pattern made of existing kinds is one line here; a new kind adds its unit to `make_block`.
PATTERN_KINDS: dict[str, tuple[str, ...]] = {
    "sepvit": ("dssa", "gsa"),  # "gsa" only in GSA_STAGES with gsa on, else "dssa"; "dwa" everywhere with dssa off
    "swin": ("swin", "swin_shifted"),
    "twins": ("twins_local", "twins_global"),
    "msa": ("msa",),
    "local": ("local",),
}
BLOCK_PATTERNS = tuple(PATTERN_KINDS)
SEPVIT_KINDS = ("dssa", "gsa", "dwa")
GSA_STAGES = (1, 2)  # zero-based: the authors group windows in stages 2 and 3 only
_PER_STAGE = ("embed_dims", "depths", "num_heads", "group_size", "twins_sr_ratios")
# Fields that choose how the model is computed, not what it computes (same output within 1e-5): runs record
# them, but they do not split a model's identity (the notebooks' zoo lookup, seeds of one configuration).
EXECUTION_FIELDS = ("fused_attn",)


# ---------------------------------------------------------------------------------- the structure, stated once
@dataclass(frozen=True)
class BlockSpec:
    """One block as the configuration states it. `sepvit.model.make_block` builds it, each unit's
    `macs()` counts it, and `python -m sepvit` prints it.

    kind: "dssa" (SepViT block: window tokens, DWA, PWA), "gsa" (grouped self-attention: a DSSA block
        over groups of group_size x group_size windows), "dwa" (a SepViT block with dssa off: window
        attention only); the peers' "swin" (W-MSA), "swin_shifted" (SW-MSA), "twins_local" (LSA),
        "twins_global" (sub-sampled GSA), "msa" (global) and "local" (plain window attention).
    window: attention window side (GSA: group_size * window_size); None for kinds without windows.
    map_size: side of the stage's map at the config's img_size; token_grid: windows per side there,
        (1, 1) = one window, i.e. global attention (SepViT blocks are then built without window tokens
        or PWA, as in the authors' code).
    stride: input pixels per map pixel (recorded with attention maps).
    """

    stage: int
    index: int
    kind: str
    dim: int
    num_heads: int
    mlp_ratio: float
    window: int | None
    map_size: int
    token_grid: tuple[int, int]
    stride: int
    drop_path: float = 0.0
    proj_drop: float = 0.0
    attn_drop: float = 0.0
    fused_attn: bool = True
    group_size: int = 1
    shift: int = 0
    sr_ratio: int = 1
    window_token: str = "learnable"
    inner_shortcuts: bool = True

    @property
    def global_attention(self) -> bool:
        """One window covers the map at img_size (or the kind has no windows: MSA)."""
        return self.kind == "msa" or (self.window is not None and self.token_grid == (1, 1))

    @property
    def separable(self) -> bool:
        """Window tokens and PWA are built: a DSSA/GSA block with several windows at img_size."""
        return self.kind in ("dssa", "gsa") and not self.global_attention

    @property
    def label(self) -> str:
        """How `python -m sepvit` prints the block: window side -> windows per map, or the unit's name."""
        n = self.token_grid[0] * self.token_grid[1]
        if self.kind in SEPVIT_KINDS:
            if self.global_attention:
                return "GSA global" if self.kind == "gsa" else "global"
            name = {"dssa": "DSSA", "gsa": "GSA", "dwa": "DWA"}[self.kind]
            return f"{name} {self.window}->{n}" + (" (no PWA)" if self.kind == "dwa" else "")
        if self.kind == "twins_global":
            return f"Twins GSA sr{self.sr_ratio}"
        if self.kind == "msa":
            return "MSA"
        name = {"swin": "W-MSA", "swin_shifted": "SW-MSA", "twins_local": "LSA", "local": "local"}[self.kind]
        return f"{name} {self.window}->{n}" if not self.global_attention else f"{name} global"


@dataclass(frozen=True)
class StageSpec:
    """One stage: patch embedding (OPE), its blocks, CPE after the first block."""

    index: int
    in_chans: int
    dim: int
    embed_stride: int
    overlapping: bool
    reduction: int
    map_size: int
    cpe: bool
    proj_drop: float
    blocks: tuple[BlockSpec, ...] = field(default=())


@dataclass
class SepViTConfig:
    """A SepViT-family backbone. Field names are the switches used everywhere in the workbench.

    Paper switches (defaults = the authors' code):
      window_token: "learnable" (per-window zero-initialised parameter), "zero" (fixed zero, no
          parameters), "avgpool" (the window's mean as its summary) or "dwconv" (a depthwise conv with
          kernel = stride = window), the paper's Table-7 alternatives.
      dssa: True = DWA + window tokens + PWA (depthwise separable self-attention). False = the local-only
          model: window attention at `window_size` in every block, so windows never exchange information
          inside a block (a stage whose map fits in one window, e.g. stage 4, is still global).
      gsa: True = grouped blocks alternate with plain ones in stages 2 and 3 (grouped self-attention).
          A GSA block is a DSSA block over groups of windows (one token per group, PWA among groups),
          so gsa has no effect when dssa=False: grouping without DSSA would make bigger windows (global
          in stage 3), i.e. a model whose windows do exchange information.
      group_size: windows per side in a group, one int or one per stage (only stages 2 and 3 use it).
      block_pattern: "sepvit" (one SepViT block), "swin" (W-MSA / SW-MSA pairs), "twins" (LSA / GSA
          pairs with sub-sampling `twins_sr_ratios`), "msa" (global attention everywhere).
      ope: overlapping patch embedding (kernel 2*stride-1) instead of kernel = stride.
      cpe: conditional position encoding (3x3 depthwise conv + residual) after each stage's first block.
      inner_shortcuts: the authors' two shortcuts inside DSSA; False follows the paper's equations.
    Regularisation (defaults 0, as the authors' training):
      drop_rate: dropout before the classifier head only (timm's meaning).
      proj_drop_rate: the authors' `drop_rate`: dropout after each patch embedding, after every attention
          projection and inside the MLP (after the activation and after fc2).
      attn_drop_rate: dropout on the attention probabilities (DWA, PWA and the peers' attention; the
          fused kernel's dropout_p, applied in training only).
      drop_path_rate: stochastic depth, rising linearly from 0 over all blocks.
    Implementation switches:
      fused_attn: use F.scaled_dot_product_attention (same output as the explicit path within 1e-5).
          Default True; the CPU-scale presets (sepvit_nano_32, sepvit_micro_32, sepvit_micro_64) set it
          False because the explicit path trains faster there (see PRESETS).
    """

    # macro architecture
    embed_dims: tuple[int, ...] = (96, 192, 384, 768)
    depths: tuple[int, ...] = (1, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    mlp_ratio: float = 4.0
    stem_stride: int = 4
    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    window_size: int = 7
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    proj_drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    # paper switches
    window_token: str = "learnable"
    dssa: bool = True
    gsa: bool = True
    group_size: int | tuple[int, ...] = 2
    block_pattern: str = "sepvit"
    ope: bool = True
    cpe: bool = True
    inner_shortcuts: bool = True
    twins_sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    # implementation
    fused_attn: bool = True

    def __post_init__(self) -> None:
        for name in _PER_STAGE:
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ValueError with a message that says what to change (a wrong type included: gsa='false')."""
        check_types(self)
        n = len(self.depths)
        if n < 1:
            raise ValueError("depths must name at least one stage, e.g. depths=(1, 2, 6, 2)")
        for name in ("embed_dims", "num_heads"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries but depths has {n}: give one per stage")
        if any(d < 1 for d in self.depths):
            raise ValueError(f"every stage needs at least one block, got depths={self.depths}")
        for i, (dim, heads) in enumerate(zip(self.embed_dims, self.num_heads)):
            if heads < 1 or dim < 1:
                raise ValueError(f"stage {i + 1}: embed_dims and num_heads must be positive, got {dim} and {heads}")
            if dim % heads:
                raise ValueError(
                    f"stage {i + 1}: num_heads={heads} does not divide embed_dims={dim}; "
                    f"choose heads among {[h for h in range(1, dim + 1) if dim % h == 0 and h <= 64]}"
                )
        if self.window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {self.window_size}")
        if self.stem_stride < 1:
            raise ValueError(f"stem_stride must be >= 1, got {self.stem_stride}")
        if self.img_size < 1 or self.in_chans < 1 or self.num_classes < 0:
            raise ValueError("img_size and in_chans must be >= 1 and num_classes >= 0")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        for name in ("drop_rate", "drop_path_rate", "proj_drop_rate", "attn_drop_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.window_token not in WINDOW_TOKENS:
            raise ValueError(f"unknown window_token {self.window_token!r}: use one of {', '.join(WINDOW_TOKENS)}")
        if self.block_pattern not in PATTERN_KINDS:
            raise ValueError(f"unknown block_pattern {self.block_pattern!r}: use one of {', '.join(PATTERN_KINDS)}")
        if not self.dssa and self.window_token != "learnable":
            raise ValueError(
                f"window_token={self.window_token!r} has no effect with dssa=False (no window tokens without PWA): "
                "drop the window_token switch or keep dssa=True"
            )
        if self.block_pattern != "sepvit":
            for name, default in (("window_token", "learnable"), ("dssa", True), ("inner_shortcuts", True)):
                if getattr(self, name) != default:
                    raise ValueError(
                        f"{name}={getattr(self, name)!r} only applies to block_pattern='sepvit', "
                        f"not {self.block_pattern!r}: drop it or use block_pattern='sepvit'"
                    )
        if len(self.twins_sr_ratios) != n or any(r < 1 for r in self.twins_sr_ratios):
            raise ValueError(f"twins_sr_ratios needs {n} ratios >= 1, got {self.twins_sr_ratios}")
        groups = self.group_sizes
        if len(groups) != n:
            raise ValueError(f"group_size has {len(groups)} entries but the model has {n} stages: give one int or {n}")
        if any(g < 1 for g in groups):
            raise ValueError(f"group_size must be >= 1 (1 = plain windows), got {self.group_size}")
        for stage in self.gsa_stages:
            windows_per_side = self.windows_per_side(stage)
            if groups[stage] > windows_per_side:
                raise ValueError(
                    f"group_size={groups[stage]} does not fit stage {stage + 1}: its "
                    f"{self.stage_resolution(stage)}x{self.stage_resolution(stage)} map holds "
                    f"{windows_per_side}x{windows_per_side} windows of {self.window_size}; "
                    f"the largest group size that fits is {windows_per_side}"
                )

    # ------------------------------------------------------------------ derived geometry
    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def group_sizes(self) -> tuple[int, ...]:
        if isinstance(self.group_size, int):
            return (self.group_size,) * self.num_stages
        return tuple(self.group_size)

    @property
    def gsa_stages(self) -> tuple[int, ...]:
        """Stages (zero-based) in which grouped blocks alternate with plain ones: none unless the model
        has SepViT blocks with DSSA and GSA on (a GSA block is a DSSA block over groups of windows)."""
        if not (self.block_pattern == "sepvit" and self.dssa and self.gsa):
            return ()
        return tuple(s for s in GSA_STAGES if s < self.num_stages)

    def stage_resolution(self, stage: int, img_size: int | None = None) -> int:
        """Side of the stage's feature map for a square input (conv arithmetic of the patch embeddings)."""
        size = self.img_size if img_size is None else img_size
        return self.stage_sizes(size, size)[stage][0]

    def stage_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(H, W) of every stage's map for an input of height x width."""
        sizes = []
        for stage in range(self.num_stages):
            stride = self.embed_stride(stage)
            height = patch_embed_output_size(height, stride, self.ope)
            width = patch_embed_output_size(width, stride, self.ope)
            sizes.append((height, width))
        return sizes

    def embed_stride(self, stage: int) -> int:
        """Stride of the stage's patch embedding: stem_stride, then 2."""
        return self.stem_stride if stage == 0 else 2

    def windows_per_side(self, stage: int) -> int:
        return window_grid(self.stage_resolution(stage), self.window_size)[0]

    def block_window_sizes(self, stage: int) -> tuple[int | None, ...]:
        """Window side of every block of a stage (grouped blocks: group_size * window_size)."""
        return tuple(spec.window for spec in self.stage_spec(stage).blocks)

    # ------------------------------------------------------------------ the per-block specification
    def block_kind(self, stage: int, index: int) -> str:
        """The kind of block `index` of `stage` (see BlockSpec.kind), from the pattern's cycle of kinds."""
        cycle = PATTERN_KINDS[self.block_pattern]
        kind = cycle[index % len(cycle)]
        if self.block_pattern == "sepvit":
            if not self.dssa:
                return "dwa"
            if kind == "gsa" and (stage not in self.gsa_stages or self.group_sizes[stage] == 1):
                return "dssa"
        return kind

    def stage_specs(self) -> tuple[StageSpec, ...]:
        """Every stage with its blocks: the one statement of the model's structure."""
        # float32 rates exactly as torch computes them (the runner's seeded results depend on them)
        rates = torch.linspace(0, self.drop_path_rate, sum(self.depths), device="cpu").tolist()
        stages, start = [], 0
        for stage, depth in enumerate(self.depths):
            stages.append(self._stage_spec(stage, rates[start:start + depth]))
            start += depth
        return tuple(stages)

    def stage_spec(self, stage: int) -> StageSpec:
        return self.stage_specs()[stage]

    def block_spec(self, stage: int, index: int) -> BlockSpec:
        return self.stage_spec(stage).blocks[index]

    def _stage_spec(self, stage: int, drop_paths: list[float]) -> StageSpec:
        side = self.stage_resolution(stage)
        reduction = self.stem_stride * 2**stage
        blocks = tuple(self._block_spec(stage, i, side, reduction, rate) for i, rate in enumerate(drop_paths))
        return StageSpec(index=stage, in_chans=self.in_chans if stage == 0 else self.embed_dims[stage - 1],
                         dim=self.embed_dims[stage], embed_stride=self.embed_stride(stage), overlapping=self.ope,
                         reduction=reduction, map_size=side, cpe=self.cpe, proj_drop=self.proj_drop_rate,
                         blocks=blocks)

    def _block_spec(self, stage: int, index: int, side: int, stride: int, drop_path: float) -> BlockSpec:
        kind = self.block_kind(stage, index)
        group = self.group_sizes[stage] if kind == "gsa" else 1
        window = None if kind in ("msa", "twins_global") else self.window_size * group
        return BlockSpec(
            stage=stage, index=index, kind=kind, dim=self.embed_dims[stage], num_heads=self.num_heads[stage],
            mlp_ratio=self.mlp_ratio, window=window, map_size=side,
            token_grid=window_grid(side, window) if window is not None else (1, 1), stride=stride,
            drop_path=drop_path, proj_drop=self.proj_drop_rate, attn_drop=self.attn_drop_rate,
            fused_attn=self.fused_attn, group_size=group,
            shift=self.window_size // 2 if kind == "swin_shifted" else 0,
            sr_ratio=self.twins_sr_ratios[stage] if kind == "twins_global" else 1,
            window_token=self.window_token, inner_shortcuts=self.inner_shortcuts,
        )

    # ------------------------------------------------------------------ conversion
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SepViTConfig":
        check_known(cls, list(data))
        return cls(**data)

    def replace(self, **changes: Any) -> "SepViTConfig":
        """A validated copy with some fields changed."""
        check_known(type(self), list(changes))
        return dataclasses.replace(self, **changes)

    def diff(self, other: "SepViTConfig | None" = None) -> dict[str, Any]:
        """Fields whose value differs from `other` (default: the reference SepViT-T)."""
        ref = (other or SepViTConfig()).to_dict()
        return {k: v for k, v in self.to_dict().items() if ref.get(k) != v}

    def build(self):
        """Build the model this config describes (`sepvit.model.SepViT`, which registers itself as the
        builder when the package is imported: the configuration does not import the model)."""
        if _BUILDER is None:
            raise RuntimeError("no model builder registered: import sepvit (its package import registers SepViT)")
        return _BUILDER(self)

    @classmethod
    def preset(cls, name: str, **changes: Any) -> "SepViTConfig":
        """A named preset (see PRESETS) with optional field changes."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **changes})


_BUILDER: Callable[[SepViTConfig], Any] | None = None


def register_builder(builder: Callable[[SepViTConfig], Any]) -> None:
    """Make `SepViTConfig.build()` call `builder(config)` (the model module registers its class)."""
    global _BUILDER
    _BUILDER = builder


# The authors' variants at 224x224 (head_dim 32 everywhere) and small presets for 32-64 px on a CPU.
# The small presets mirror the 224 window schedule: stage maps are 8, 4, 2, 1 windows per side, so
# stage-1 PWA mixes 64 windows, stage-2 GSA blocks mix 4 groups of 2x2 windows, and stage-3 grouped
# blocks cover the whole map (full attention), exactly as SepViT-T does at 224.
# The small presets compute attention on the explicit path (fused_attn=False, same output within 1e-5):
# on a CPU, the fused kernel's backward is slow for thousands of 17-token windows, and the runner's
# training step measured 1.03-1.17x faster explicit (README, "Benchmarks"). The 224 presets keep the fused
# kernel, which is faster there (forward 1.12x on sepvit_tiny).
_CPU_SCALE = dict(fused_attn=False)
PRESETS: dict[str, dict[str, Any]] = {
    "sepvit_lite": dict(embed_dims=(32, 64, 128, 256), depths=(1, 2, 6, 2), num_heads=(1, 2, 4, 8)),
    "sepvit_tiny": dict(embed_dims=(96, 192, 384, 768), depths=(1, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "sepvit_small": dict(embed_dims=(96, 192, 384, 768), depths=(1, 2, 14, 2), num_heads=(3, 6, 12, 24)),
    "sepvit_base": dict(embed_dims=(128, 256, 512, 1024), depths=(1, 2, 14, 2), num_heads=(4, 8, 16, 32)),
    # 32x32 input, stem stride 1, window 4: maps 32/16/8/4.
    "sepvit_micro_32": dict(
        embed_dims=(32, 64, 128, 256), depths=(1, 2, 2, 1), num_heads=(1, 2, 4, 8),
        img_size=32, stem_stride=1, window_size=4, num_classes=10, **_CPU_SCALE,
    ),
    # sepvit_micro_32 at half the widths (0.45 M params): the runner's default, about 3x faster on a CPU.
    "sepvit_nano_32": dict(
        embed_dims=(16, 32, 64, 128), depths=(1, 2, 2, 1), num_heads=(1, 1, 2, 4),
        img_size=32, stem_stride=1, window_size=4, num_classes=10, **_CPU_SCALE,
    ),
    # 64x64 input, stem stride 2, window 4: maps 32/16/8/4.
    "sepvit_micro_64": dict(
        embed_dims=(32, 64, 128, 256), depths=(1, 2, 2, 1), num_heads=(1, 2, 4, 8),
        img_size=64, stem_stride=2, window_size=4, num_classes=10, **_CPU_SCALE,
    ),
}
