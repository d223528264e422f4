"""The MAC tables of `sepvit-complexity` (analysis/complexity.py) as text: plain-text grids, CSV and JSON.

The rows are those of `analysis.model_counts.model_table` (whole models) and `analysis.block_counts.block_comparison`
(one block or pair per stage); `CONVENTIONS` says what each column counts. Every figure is MACs
(multiply-add = 1), batch 1.
"""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterable

from analysis.units import TITLES, UNITS

CONVENTIONS = """\
All counts are MACs (one multiply-add = 1), batch 1, one forward pass. 1 GMAC = 1e9 MACs (= 2e9 FLOPs).
Columns:
  analytic        the paper's formulas, composed from the units' macs() over the code's real geometry
                  (padding, single windows, window tokens): Linear/conv weights + attention matmuls;
                  no LayerNorm, softmax, GELU, bias or residual adds. Empty for timm models.
  analytic+norms  analytic + LayerNorm at fvcore's 5 MACs per element (+ window-token resizing): fvcore's
                  convention; equals fvcore exactly for our models.
  fvcore          fvcore FlopCountAnalysis with a handle for aten::scaled_dot_product_attention
                  (L*S*E + L*S*Ev per batch-head), so fused attention counts like explicit attention.
  fvcore-norms    fvcore minus its LayerNorm (and resizing) MACs: the paper's convention, measured, for
                  every model.
  norms           the LayerNorm MACs inside fvcore's count.
  attn matmuls    the attention matmul MACs inside fvcore's count (Twins' README leaves them out).
  ptflops         ptflops 0.7.5, backend='aten', on a deep copy with explicit attention and the math SDPA
                  kernel: counts bias adds of Linear/conv, no norms.
Published numbers are not counted alike: Swin's README includes attention matmuls, Twins' leaves them out."""


def _gmacs(value: int | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value / 1e9:.{digits}f}"


def _mmacs(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.1f}"


def format_model_table(rows: list[dict[str, Any]]) -> str:
    header = ["model", "px", "params (M)", "analytic", "analytic+norms", "fvcore", "norms", "fvcore-norms",
              "attn matmuls", "ptflops"]
    body = [[r["model"], str(r["img_size"]), f"{r['params'] / 1e6:.2f}", _gmacs(r["macs_analytic"]),
             _gmacs(r["macs_analytic_norms"]), _gmacs(r["macs_fvcore"]), _gmacs(r["fvcore_norms"]),
             _gmacs(r["macs_fvcore_no_norms"]), _gmacs(r["fvcore_attention_matmuls"]), _gmacs(r["macs_ptflops"])]
            for r in rows]
    notes = [f"note: {r['model']}: {r['note']}" for r in rows if r.get("note")]
    title = ("GMACs (multiply-add = 1, 1e9), batch 1; counters: analytic (paper formulas), fvcore (+SDPA handle), "
             "ptflops (aten)")
    return "\n".join([title, _grid(header, body), *notes])


def format_block_table(rows: list[dict[str, Any]]) -> str:
    header = ["stage", "map", "C", "unit", "fvcore", "analytic", "analytic+norms", "/ Swin pair"]
    body = []
    for r in rows:
        for name in UNITS:
            if r[f"{name}_analytic"] is None:
                continue
            ratio = r[f"{name}_analytic"] / r["swin_pair_analytic"]
            body.append([str(r["stage"]), f"{r['height']}x{r['width']}", str(r["dim"]), TITLES[name],
                         _mmacs(r[name]), _mmacs(r[f"{name}_analytic"]), _mmacs(r[f"{name}_analytic_norms"]),
                         f"{ratio:.3f}"])
    title = ("MMACs (multiply-add = 1, 1e6) of one block or pair, MLP included, batch 1; fvcore (+SDPA handle) "
             "counts LayerNorm, analytic (paper formulas) does not; ratio = analytic / analytic Swin pair")
    ratios = ["SepViT block / Swin pair (analytic | attention only | fvcore): "
              + "; ".join(f"stage {r['stage']}: {r['ratio_to_swin_pair_analytic']:.3f} | "
                          f"{r['ratio_to_swin_pair_attention_only']:.3f} | "
                          + (f"{r['ratio_to_swin_pair_fvcore']:.3f}" if r["ratio_to_swin_pair_fvcore"] else "-")
                          for r in rows)]
    notes = sorted({f"note: {r['note']}" for r in rows if r.get("note")})
    return "\n".join([title, _grid(header, body, left=(0, 1, 3)), *ratios, *notes])


def _grid(header: list[str], body: list[list[str]], left: Iterable[int] = (0,)) -> str:
    """Plain-text table: columns in `left` left-aligned (names), the others right-aligned (numbers)."""
    left = set(left)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in body)])


def to_csv(rows: list[dict[str, Any]]) -> str:
    """One line per row under a header; a list or tuple cell (e.g. per-round ratios) is written as JSON. The
    analysis commands' --format csv all come through here."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: json.dumps(v) if isinstance(v, (list, tuple)) else v for k, v in row.items()} for row in rows)
    return out.getvalue().rstrip("\n")


def render(rows: list[dict[str, Any]], kind: str, fmt: str) -> str:
    """`rows` of `kind` ("models" or "blocks") as `fmt`: "table", "json" or "csv"."""
    if fmt == "json":
        return json.dumps(rows, indent=1)
    if fmt == "csv":
        return to_csv(rows)
    return format_block_table(rows) if kind == "blocks" else format_model_table(rows)
