"""Statistics of recorded attention: mean distance and entropy per block, PWA/GSA collapse, accuracy against chance,
and the conclusions computed from them (the `*_markdown` functions).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis.attention.maps import (Record, WINDOW_KINDS, block_label, block_names, block_stage, select, short_block,
                                     token_offset, window_labels, window_origins, window_pixel_positions)


# ---------------------------------------------------------------------------------- (e) statistics
def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-30, None))).sum(axis=axis)


def _valid_pixels(record: Record) -> np.ndarray:
    """(windows, window pixels) True where the pixel lies on the map (not padding)."""
    pos = window_pixel_positions(record)
    h, w = record["map_size"]
    return (pos[..., 0] < h) & (pos[..., 1] < w)


def _window_stats(record: Record) -> dict[str, np.ndarray]:
    """Per-head mean distance (feature pixels), entropy, token share over valid pixel queries."""
    attn = record["attn"].detach().double().cpu().numpy()  # (B, N, heads, T, T)
    offset = token_offset(record)
    full_rows = attn[:, :, :, offset:, :]  # pixel queries
    keys = full_rows[..., offset:]
    token_share = full_rows[..., 0] if offset else np.full(keys.shape[:-1], np.nan)
    probs = keys / np.clip(keys.sum(-1, keepdims=True), 1e-30, None)  # the token has no position
    pos = window_pixel_positions(record).astype(np.float64)  # (N, T, 2)
    dist = np.linalg.norm(pos[:, :, None, :] - pos[:, None, :, :], axis=-1)  # (N, T, T)
    mean_dist = np.einsum("bnhqk,nqk->bnhq", probs, dist)
    entropy = _entropy(full_rows)
    valid = _valid_pixels(record)[None, :, None, :]  # (1, N, 1, T)
    weight = np.broadcast_to(valid, mean_dist.shape).astype(np.float64)

    def average(values: np.ndarray) -> np.ndarray:
        return (values * weight).sum((0, 1, 3)) / weight.sum((0, 1, 3))

    return dict(mean_distance=average(mean_dist), entropy=average(entropy), token_share=average(token_share),
                keys=np.full(attn.shape[2], attn.shape[-1]))


def _pwa_stats(record: Record) -> dict[str, np.ndarray]:
    """PWA mixes the same relative position across windows, so query and key lie one window offset apart."""
    attn = record["attn"].detach().double().cpu().numpy()  # (B, heads, N, N)
    origins = window_origins(record).astype(np.float64)
    dist = np.linalg.norm(origins[:, None, :] - origins[None, :, :], axis=-1)
    mean_dist = np.einsum("bhij,ij->bhi", attn, dist)
    entropy = _entropy(attn)
    weight = _valid_pixels(record).sum(1).astype(np.float64)  # pixels per window
    average = lambda v: (v * weight).sum((0, 2)) / (weight.sum() * v.shape[0])  # noqa: E731
    return dict(mean_distance=average(mean_dist), entropy=average(entropy),
                token_share=np.full(attn.shape[1], np.nan), keys=np.full(attn.shape[1], attn.shape[-1]))


def _twins_global_stats(record: Record) -> dict[str, np.ndarray]:
    attn = record["attn"].detach().double().cpu().numpy()  # (B, heads, HW, kv)
    h, w = record["map_size"]
    kh, kw = record["kv_size"]
    r = record["sr_ratio"]
    qy, qx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    ky, kx = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    q = np.stack([qy, qx], -1).reshape(-1, 2).astype(np.float64)
    k = (np.stack([ky, kx], -1).reshape(-1, 2) * r + (r - 1) / 2).astype(np.float64)  # key cell centres
    dist = np.linalg.norm(q[:, None] - k[None], axis=-1)
    mean_dist = np.einsum("bhqk,qk->bhq", attn, dist)
    return dict(mean_distance=mean_dist.mean((0, 2)), entropy=_entropy(attn).mean((0, 2)),
                token_share=np.full(attn.shape[1], np.nan), keys=np.full(attn.shape[1], attn.shape[-1]))


def _dssa_stats(dwa: Record, pwa: Record) -> dict[str, np.ndarray]:
    """DWA then PWA as one attention path (inner shortcuts left out): query pixel p of window i reaches
    pixel k of window j with weight A_pwa[i, j] * A_dwa(j)[p, k] (DWA rows renormalised over pixels)."""
    a_dwa = dwa["attn"].detach().double().cpu().numpy()  # (B, N, heads, T, T)
    a_pwa = pwa["attn"].detach().double().cpu().numpy()  # (B, heads, N, N)
    o = token_offset(dwa)
    keys = a_dwa[:, :, :, o:, o:]
    probs = keys / np.clip(keys.sum(-1, keepdims=True), 1e-30, None)
    pos = window_pixel_positions(dwa).astype(np.float64)  # (N, T, 2)
    # distance from (window i, pixel p) to (window j, pixel k)
    dist = np.linalg.norm(pos[:, :, None, None, :] - pos[None, None, :, :, :], axis=-1)  # (N, T, N, T)
    inner = np.einsum("bjhpk,ipjk->bhipj", probs, dist)  # expected distance given window j
    mean_dist = np.einsum("bhij,bhipj->bhip", a_pwa, inner)
    h_dwa = _entropy(probs).transpose(0, 2, 1, 3)  # (B, heads, N, T)
    entropy = _entropy(a_pwa)[..., None] + np.einsum("bhij,bhjp->bhip", a_pwa, h_dwa)  # chain rule
    valid = _valid_pixels(dwa)[None, None].astype(np.float64)  # (1, 1, N, T)
    average = lambda v: (v * valid).sum((0, 2, 3)) / (valid.sum() * v.shape[0])  # noqa: E731
    return dict(mean_distance=average(mean_dist), entropy=average(entropy),
                token_share=np.full(a_pwa.shape[1], np.nan),
                keys=np.full(a_pwa.shape[1], probs.shape[-1] * a_pwa.shape[-1]))


def record_statistics(record: Record) -> dict[str, np.ndarray]:
    """Per-head statistics of one record, averaged over the batch and the valid (unpadded) queries:
    mean_distance (feature pixels; multiply by `stride` for image pixels), entropy (nats, over the
    recorded row), token_share (DWA: pixel queries' attention to the window token), keys (row length)."""
    kind = record["kind"]
    if kind in WINDOW_KINDS:
        return _window_stats(record)
    if kind == "pwa":
        return _pwa_stats(record)
    if kind == "twins_global":
        return _twins_global_stats(record)
    raise ValueError(f"unknown record kind {kind!r}")


def mean_attention_distance(record: Record) -> np.ndarray:
    """(heads,) expected query-key distance in input pixels, weighted by attention (see record_statistics)."""
    return record_statistics(record)["mean_distance"] * record["stride"]


def attention_entropy(record: Record) -> np.ndarray:
    """(heads,) mean attention entropy in nats (see record_statistics)."""
    return record_statistics(record)["entropy"]


def _entropy_ratio(entropy: float, keys: int) -> float:
    return entropy / math.log(keys) if keys > 1 else float("nan")


def attention_statistics(records: Sequence[Record], compose_dssa: bool = True, **labels: Any) -> pd.DataFrame:
    """A tidy table, one row per (record, head): block, kind, stage, head, mean_distance_px, entropy,
    token_share, keys, entropy_ratio (entropy / log(keys): 1 = uniform over the keys, 0 = one key), plus any
    `labels` as constant columns (e.g. variant="zero tokens").

    With `compose_dssa`, each SepViT block with both DWA and PWA also gets rows of kind "dwa+pwa": the
    two maps chained into one query-to-pixel path (how far a whole DSSA block reaches).
    """
    rows = []

    def add(block: str, kind: str, stride: int, stats: dict[str, np.ndarray]) -> None:
        for head, dist in enumerate(stats["mean_distance"]):
            rows.append(dict(block=block, kind=kind, stage=block_stage(block), head=head,
                             mean_distance_px=float(dist) * stride, entropy=float(stats["entropy"][head]),
                             token_share=float(stats["token_share"][head]), keys=int(stats["keys"][head]),
                             entropy_ratio=_entropy_ratio(float(stats["entropy"][head]), int(stats["keys"][head])),
                             **labels))

    last_dwa: Record | None = None
    for record in records:
        add(record["block"], record["kind"], record["stride"], record_statistics(record))
        if record["kind"] == "dwa":
            last_dwa = record
        elif record["kind"] == "pwa" and compose_dssa and last_dwa is not None and last_dwa["block"] == record["block"]:
            add(record["block"], "dwa+pwa", record["stride"], _dssa_stats(last_dwa, record))
    columns = ["block", "kind", "stage", "head", "mean_distance_px", "entropy", "token_share", "keys", "entropy_ratio",
               *labels]
    return pd.DataFrame(rows, columns=columns)


def block_summary(stats: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Mean over heads per (labels..., block, kind), in forward order."""
    keys = [*by, "block", "kind", "stage"]
    values = [c for c in ("mean_distance_px", "entropy", "entropy_ratio", "token_share") if c in stats]
    return stats.groupby(keys, sort=False)[values].mean().reset_index()


def block_reach(stats: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (labels..., block): how far the block's attention reaches, mean over heads. A SepViT block
    with DWA and PWA counts as its chained "dwa+pwa" path; any other block has one attention kind."""
    summary = block_summary(stats, by)
    keys = [*by, "block"]
    composed = summary.groupby(keys, sort=False)["kind"].transform(lambda kinds: (kinds == "dwa+pwa").any())
    chosen = summary[(summary["kind"] == "dwa+pwa") | (~composed & (summary["kind"] != "pwa"))]
    return chosen.reset_index(drop=True)


def trained_vs_untrained(stats: pd.DataFrame, model: str = "model", state: str = "state") -> pd.DataFrame:
    """One row per (model, block) in forward order: the block's label and its mean attention distance (input
    px) and normalised entropy trained and untrained (`block_reach`: DSSA blocks as their chained path, mean over
    heads), with the changes. `stats` holds both states (column `state`: "trained" / "untrained")."""
    reach = block_reach(stats, by=[model, state])
    wide = reach.pivot_table(index=[model, "block", "stage"], columns=state, sort=False,
                             values=["mean_distance_px", "entropy_ratio"])
    wide.columns = [f"{metric}_{which}" for metric, which in wide.columns]
    missing = {f"{m}_{w}" for m in ("mean_distance_px", "entropy_ratio") for w in ("trained", "untrained")} \
        - set(wide.columns)
    if missing:
        raise ValueError(f"statistics of both states are needed, missing {', '.join(sorted(missing))}")
    wide = wide.reset_index()
    wide.insert(2, "unit", wide["block"].map(short_block))
    wide["distance_change_px"] = wide["mean_distance_px_trained"] - wide["mean_distance_px_untrained"]
    wide["entropy_ratio_change"] = wide["entropy_ratio_trained"] - wide["entropy_ratio_untrained"]
    return wide


# ---------------------------------------------------------------------------------- (f) PWA / GSA collapse
COLLAPSE_THRESHOLD = 0.9  # a query window "reads one key window/group" when one key holds more than this
COLLAPSE_MAJORITY = 0.5  # a map has collapsed when more than this share of its queries read one key


def pwa_collapse(records: Sequence[Record], threshold: float = COLLAPSE_THRESHOLD,
                 majority: float = COLLAPSE_MAJORITY, unit: str = "group") -> dict[str, Any]:
    """Whether PWA attention (of DSSA windows or GSA groups) has collapsed onto single keys, over every
    (image, head, query window) row of the 'pwa' `records` (attn (B, heads, N, N)):

      one_key_share   share of rows putting more than `threshold` of their weight on one key
      same_key_share  share of rows whose largest weight falls on `top_key`, the key most often largest
                      ("every group reads from the same group" when both shares are near 1)
      entropy_ratio   mean row entropy / log N (1: uniform over the N keys, 0: one key)
      collapsed       one_key_share > `majority`
      sentence        the verdict with its numbers, e.g. "collapsed: 97 % of queries read one group ..."
    `unit` names the keys in the sentence ("group" for GSA, "window" for DSSA).
    """
    if not records:
        raise ValueError("no PWA record to read: record a model with PWA blocks (record_attention)")
    rows, grids = [], set()
    for record in records:
        if record["kind"] != "pwa":
            raise ValueError(f"expected 'pwa' records, got kind {record['kind']!r} in {record['block']}")
        attn = record["attn"].detach().double().cpu().numpy()
        rows.append(attn.reshape(-1, attn.shape[-1]))
        grids.add(tuple(record["grid"]))
    if len(grids) != 1:
        raise ValueError(f"records of one key grid only (one block, or blocks of one shape), got grids {sorted(grids)}")
    grid = grids.pop()
    probs = np.concatenate(rows)
    keys = probs.shape[-1]
    if keys < 2:
        raise ValueError("one key window: attention over a single key cannot collapse")
    largest = probs.argmax(-1)
    top_key = int(np.bincount(largest, minlength=keys).argmax())
    one_key = float((probs.max(-1) > threshold).mean())
    same_key = float((largest == top_key).mean())
    entropy_ratio = float(_entropy(probs).mean() / math.log(keys))
    collapsed = one_key > majority
    label = window_labels(grid)[top_key]
    sentence = (f"{'collapsed' if collapsed else 'not collapsed'}: {100 * one_key:.0f} % of queries read one {unit} "
                f"(> {100 * threshold:.0f} % of their attention on it); the most read, {unit} {label}, is the largest "
                f"for {100 * same_key:.0f} %; mean normalised entropy {entropy_ratio:.2f} (1 = uniform over {keys} "
                f"{unit}s)")
    return dict(rows=len(probs), keys=keys, one_key_share=one_key, same_key_share=same_key, top_key=label,
                entropy_ratio=entropy_ratio, collapsed=collapsed, sentence=sentence)


def collapse_table(records: Sequence[Record], base_window: int, threshold: float = COLLAPSE_THRESHOLD,
                   majority: float = COLLAPSE_MAJORITY, **labels: Any) -> pd.DataFrame:
    """One row per block with PWA, in forward order: its `block_label`, whether its keys are GSA groups
    (window wider than `base_window`) or DSSA windows, and `pwa_collapse` of its maps; plus `labels` columns."""
    out = []
    for block in block_names(records):
        pwa = select(records, "pwa", block)
        if not pwa:
            continue
        grouped = pwa[0]["window"][0] > base_window
        found = pwa_collapse(pwa, threshold, majority, unit="group" if grouped else "window")
        out.append(dict(**labels, block=block, unit=short_block(block),
                        label=block_label(select(records, block=block), base_window),
                        attention="GSA" if grouped else "DSSA", **found))
    return pd.DataFrame(out)


def collapse_sentences(table: pd.DataFrame, by: str = "seed", attention: str | None = "GSA") -> list[str]:
    """One sentence per block of `collapse_table` rows gathered over `by` (a column, e.g. the seed or the input):
    whether its PWA collapse is present, absent or present in some, with every row's share of queries reading one
    key and its normalised entropy. `attention`: only blocks of that kind ("GSA", "DSSA"; None: all)."""
    rows = table if attention is None else table[table["attention"] == attention]
    lines = []
    for block, part in rows.groupby("block", sort=False):
        collapsed = int(part["collapsed"].sum())
        state = "present" if collapsed == len(part) else "absent" if collapsed == 0 else "present in some"
        unit = "group" if part["attention"].iloc[0] == "GSA" else "window"
        shares = "; ".join(f"{by} {value}: {100 * one:.0f} % of queries, the most read {unit} {top} largest for "
                           f"{100 * same:.0f} %, entropy {entropy:.2f}"
                           for value, one, top, same, entropy in zip(part[by], part["one_key_share"], part["top_key"],
                                                                      part["same_key_share"], part["entropy_ratio"]))
        lines.append(f"{part['label'].iloc[0]}: collapse {state} ({collapsed} of {len(part)} {by}s with more than "
                     f"{100 * COLLAPSE_MAJORITY:.0f} % of their queries putting over {100 * COLLAPSE_THRESHOLD:.0f} % "
                     f"of their attention on one of {int(part['keys'].iloc[0])} {unit}s: {shares})")
    return lines


def attention_vs_reach(comparison: pd.DataFrame, reach: dict[str, dict[str, Sequence[Any]]], img_size: int,
                       model: str = "model") -> pd.DataFrame:
    """The two distance figures of one block side by side, in input pixels: the mean attention distance of
    `trained_vs_untrained` (attention probabilities over keys, Euclidean, a SepViT block as DWA then PWA chained,
    shortcuts left out; the mean over the unit's blocks for a pair) and the spatial reach of `analysis.reach`
    (the off-query gradient mass of the whole unit, shortcuts, projections and MLP included; Chebyshev; feature
    pixels times the stage's stride). `reach`: state ("trained", "untrained") -> model -> its ReachResults."""
    rows = []
    for name, results in reach.get("trained", {}).items():
        untrained = {(r.stage, r.unit): r for r in reach.get("untrained", {}).get(name, [])}
        for r in results:
            indices = [int(i) for i in r.blocks.split(" ")[0].split("+")]
            blocks = [f"stages.{r.stage - 1}.blocks.{i}" for i in indices]
            part = comparison[(comparison[model] == name) & comparison["block"].isin(blocks)]
            if len(part) != len(blocks):
                continue
            stride = img_size / r.height
            u = untrained.get((r.stage, r.unit))
            rows.append(dict(model=name, stage=r.stage, unit=r.unit, blocks=r.blocks,
                             attention_px_trained=float(part["mean_distance_px_trained"].mean()),
                             attention_px_untrained=float(part["mean_distance_px_untrained"].mean()),
                             reach_px_trained=float(r.values["off_mean_distance"].mean()) * stride,
                             reach_px_untrained=(float(u.values["off_mean_distance"].mean()) * stride
                                                 if u is not None else float("nan")),
                             self_share_trained=float(r.values["self_share"].mean())))
    return pd.DataFrame(rows)


def reconcile_markdown(table: pd.DataFrame, name: str = "sepvit", model: str = "model") -> str:
    """Markdown bullets from `attention_vs_reach` for one model: per unit both figures trained and untrained,
    how much training moved each, and how often the attention figure is the larger."""
    part = table[table[model] == name]
    if part.empty:
        return f"- {name}: no unit with both figures."
    lines = [f"- stage {r.stage}, {r.unit} (block{'s' if '+' in r.blocks else ''} {r.blocks}): attention distance "
             f"{r.attention_px_untrained:.1f} → {r.attention_px_trained:.1f} px with training, reach "
             f"{r.reach_px_untrained:.1f} → {r.reach_px_trained:.1f} px (self share {100 * r.self_share_trained:.0f} %)"
             for r in part.itertuples()]
    larger = int((part["attention_px_trained"] > part["reach_px_trained"]).sum())
    moved_attention = (part["attention_px_trained"] - part["attention_px_untrained"]).abs().max()
    moved_reach = (part["reach_px_trained"] - part["reach_px_untrained"]).abs().max()
    lines.append(f"- {name}: the attention distance is the larger figure in {larger} of {len(part)} units; training "
                 f"moved it by at most {moved_attention:.1f} px, the reach by at most {moved_reach:.1f} px.")
    return "\n".join(lines)


def nearer_stages(comparison: pd.DataFrame, table: pd.DataFrame, name: str, other: str,
                  model: str = "model") -> list[dict[str, Any]]:
    """The stages where model `name`'s trained blocks attend nearer than `other`'s (mean attention distance, mean
    over the stage's blocks, input px): [{stage (one-based), name_px, other_px}]; none when either is at chance."""
    if table.loc[name, "at_chance"] or table.loc[other, "at_chance"]:
        return []
    means = comparison[comparison[model].isin([name, other])].groupby([model, "stage"])["mean_distance_px_trained"].mean()
    return [dict(stage=int(stage) + 1, name_px=float(means[(name, stage)]), other_px=float(means[(other, stage)]))
            for stage in sorted({s for _, s in means.index}) if (name, stage) in means and (other, stage) in means
            and means[(name, stage)] < means[(other, stage)]]


# ---------------------------------------------------------------------------------- accuracy and chance
def chance_table(top1: dict[str, float], chance: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """One row per model (in the given order): top1 (percent), the 95 % interval of guessing (chance_low,
    chance_high) and at_chance: top-1 within or below that interval (the reporting rule of experiments.report)."""
    rows = [dict(model=name, top1=float(value), chance_low=float(chance[name][0]), chance_high=float(chance[name][1]),
                 at_chance=bool(value <= chance[name][1])) for name, value in top1.items()]
    return pd.DataFrame(rows).set_index("model")


def model_label(table: pd.DataFrame, name: str) -> str:
    """"swin · top-1 48.2 %", with "· AT CHANCE" where the model is at chance."""
    row = table.loc[name]
    return f"{name} · top-1 {row.top1:.1f} %" + (" · AT CHANCE" if row.at_chance else "")


def chance_markdown(table: pd.DataFrame, names: Sequence[str] | None = None) -> str:
    """A Markdown statement, from `chance_table`, on whether the models (default all) can be interpreted:
    a warning naming every model at chance (its maps mean nothing), or that all are above chance."""
    part = table.loc[list(names) if names is not None else table.index]
    low, high = part["chance_low"].min(), part["chance_high"].max()
    band = f"the 95 % interval of guessing is {low:.1f}–{high:.1f} % top-1"
    stuck = part[part["at_chance"]]
    if stuck.empty:
        listed = ", ".join(f"{name} {row.top1:.1f} %" for name, row in part.iterrows())
        return f"All {len(part)} models are above chance ({band}): {listed}."
    listed = ", ".join(f"**{name}** ({row.top1:.1f} %)" for name, row in stuck.iterrows())
    return (f"⚠️ **At chance, not interpreted:** {listed}: top-1 within or below chance ({band}). "
            f"Their maps are drawn for completeness but mean nothing: a model that has not learnt the task "
            f"attends like an untrained one, and nothing below draws a conclusion from it.")


def _signed(value: float) -> str:
    text = f"{value:+.1f}"
    return "+0.0" if text == "-0.0" else text


def training_effect_markdown(comparison: pd.DataFrame, table: pd.DataFrame, model: str = "model") -> str:
    """Markdown bullets, one per model, computed from `trained_vs_untrained`: how training changed the mean
    attention distance and the normalised entropy of its blocks; models at chance are named, not interpreted."""
    lines = []
    for name, rows in comparison.groupby(model, sort=False):
        if table.loc[name, "at_chance"]:
            lines.append(f"- **{name}**: at chance ({table.loc[name, 'top1']:.1f} %), not interpreted.")
            continue
        focused = int((rows["entropy_ratio_change"] < 0).sum())
        largest = rows.loc[rows["distance_change_px"].abs().idxmax()]
        lines.append(
            f"- **{name}** ({table.loc[name, 'top1']:.1f} %): training lowered the normalised entropy in {focused} of "
            f"{len(rows)} blocks (mean over blocks {rows['entropy_ratio_untrained'].mean():.2f} → "
            f"{rows['entropy_ratio_trained'].mean():.2f}); mean distance changed by "
            f"{_signed(rows['distance_change_px'].min())} to {_signed(rows['distance_change_px'].max())} px, most in "
            f"{largest['unit']} ({largest['mean_distance_px_untrained']:.1f} → "
            f"{largest['mean_distance_px_trained']:.1f} px).")
    return "\n".join(lines)


def reach_markdown(comparison: pd.DataFrame, table: pd.DataFrame, model: str = "model") -> str:
    """Markdown bullets, one per stage: the trained models above chance ranked by mean attention distance
    (mean over the stage's blocks, input px), farthest first ("- stage 1: a 16.8, b 2.1 px")."""
    usable = [name for name in comparison[model].unique() if not table.loc[name, "at_chance"]]
    if not usable:
        return "- No model is above chance: there is no trained attention to compare."
    part = comparison[comparison[model].isin(usable)]
    lines = []
    for stage, rows in part.groupby("stage", sort=True):
        ranked = rows.groupby(model, sort=False)["mean_distance_px_trained"].mean().sort_values(ascending=False)
        lines.append(f"- stage {stage + 1}: " + ", ".join(f"{name} {value:.1f}" for name, value in ranked.items())
                     + " px")
    return "\n".join(lines)


