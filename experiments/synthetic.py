"""The built-in dataset "distant match count": a label that is a relation between windows; and the probes.

The probes are datasets of their own, at the end of this module (``PROBES``, ``generate_probe``):
  - the pair probes ("aligned-pairs", "mirror-pairs") relate each square to one partner whose place decides which
    mechanism can carry the relation (PWA's aligned move, or GSA);
  - the position probe ("top-half") counts the squares in the top half, which needs a source of absolute position
    (OPE's or CPE's zero padding, or the learnable window tokens).

Two cues name the colour to count (below): by default a frame round the image, or one ring in one cell; the
layout is described for the ring, the cue the task started with.

One image (32x32 RGB) is a pure function of ``(seed, split, index)`` and takes well under a millisecond:
  - The image is an 8x8 grid of 4x4-pixel cells. Cells coincide with the stage-1 windows of the runner's
    presets (stem stride 1, window 4); 2x2 cells make a stage-2 window, 4x4 cells (a quadrant) a
    stage-2 group / stage-3 window.
  - One cell holds the *reference*, a hollow 3x3 ring in one of ``task.n_kinds`` colours. Nine other
    cells (``task.total``) hold filled 3x3 squares: ``k`` of them in the reference's colour, the other
    ``9 - k`` in other colours. All cells are distinct and drawn uniformly, so the squares lie anywhere,
    on average about 15 px from the reference and often in the opposite quadrant.
  - Nuisances: a random background tint and linear gradient, Gaussian pixel noise (``task.noise``),
    optionally faint single-pixel specks.

Label: ``k`` (10 classes, uniform, chance 10 %): how many squares share the reference's colour.

The cue (``TaskSpec.cue``, the runner's ``--synthetic-cue``) is what names the colour to count:
  - "frame" (the default, ``DEFAULT_CUE``): a 1-pixel frame round the whole image in the colour to count;
    the reference cell is left empty, and squares are drawn over the frame, so every square is
    pixel-identical whichever colour counts. Still a relation between windows: no interior cell, and no
    stage-1 or stage-2 window of the interior, holds a frame pixel, so an interior square learns whether it
    counts only from the border windows. But the cue lies in 28 of the 64 cells, so attention that mixes
    windows evenly already carries it: every seed learns it within a few epochs (the reference's seed
    standard deviation at the default budget: docs/results.md). Why the default changed: docs/benchmark-log.md.
  - "ring" (the default until 2026-12-06): one hollow ring in one cell, the relation with a single far cell
    described above. A model has to find that cell before it can use it; on ``sepvit_nano_32`` at the
    runner's default budget the runs find it at different epochs, so the reference's seed standard
    deviation was 8.9 points (docs/benchmark-log.md): a harder but imprecise task.

What it tests and why:
  - Whether a square counts is decided by a *distant* cell: the same square, pixel for pixel in the same
    place, counts in one image and not in another whose ring (far away) differs. Changing only the ring,
    or only one far-away square, changes the label (``tests/test_data.py``).
  - No local or pooled cue gives the answer: the number of squares is always nine, and with two colours
    the label is ``n_red`` when the ring is red and ``9 - n_red`` when it is green. Global-average
    pooling followed by the linear head (SepViT's head) sees ``n_red`` and the ring's colour separately
    and cannot combine them; some block must let the squares meet the ring before pooling.
  - SepViT with DSSA exchanges information between windows in every block from stage 1 on (window tokens
    summarise each cell, PWA brings the ring's cell, pixel-aligned, to every other cell). The local-only
    model (``dssa=False``: window attention at the base window in every block, no grouped windows) first
    sees the whole image in stage 4, whose 4x4 map holds one token per 2x2 cells; before that only the
    3x3 convolutions of OPE and CPE leak a pixel or two across window borders. A model that does not
    make the relation can still count, i.e. know the label up to ``n_red`` versus ``9 - n_red``: at most
    50 % top-1 with top-5 near 100 %: the plateau where the local-only model stays in our budget.
    (Window attention with GSA's grouped, bigger windows would be global in stage 3's second block at one
    token per cell, where the relation is learnable: that hybrid, measured at 7 epochs, was only about an
    epoch behind the full model, 45.8 +- 23.8 % vs 58.6 +- 18.4 %, within seed noise.)

``TaskSpec(match="shape", cue="ring")`` is the harder variant (red reference glyph among white glyphs, matched by
shape, optionally with a variable number of candidates): in our 6-epoch CPU budget no variant rose above
the glyph-counting plateau (~25 %), so it is not the default.

Larger ``img_size`` values come from nearest-neighbour upsampling of the 32 px image (done by
``experiments.data``), which keeps cells aligned with the windows of ``sepvit_micro_64``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID = 8  # cells per side
CELL = 4  # pixels per cell side
BASE_SIZE = GRID * CELL  # 32
NUM_CLASSES = 10  # k = 0..9 copies

# 3x3 shapes with five lit pixels each (every pair differs in at least two pixels).
_GLYPH_ROWS = {
    "plus": ("010", "111", "010"),
    "cross": ("101", "010", "101"),
    "tee": ("111", "010", "010"),
    "ell": ("100", "100", "111"),
    "vee": ("101", "101", "010"),
    "zed": ("110", "010", "011"),
    "ess": ("011", "010", "110"),
    "gamma": ("111", "100", "100"),
}
GLYPHS = np.array([[[c == "1" for c in row] for row in rows] for rows in _GLYPH_ROWS.values()], dtype=np.float32)

# match="shape": a red reference glyph among white candidates
REFERENCE_COLOUR = np.array([1.0, 0.12, 0.12], dtype=np.float32)
WHITE = np.array([0.9, 0.9, 0.9], dtype=np.float32)
# match="colour" (default): a hollow ring is the reference, filled squares are the candidates
PALETTE = np.array([[1.0, 0.15, 0.15], [0.15, 0.9, 0.15], [0.25, 0.45, 1.0], [0.95, 0.9, 0.2],
                    [0.9, 0.3, 0.95], [0.2, 0.9, 0.9]], dtype=np.float32)
RING = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=bool)
SQUARE = np.ones((3, 3), dtype=bool)
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
CUES = ("frame", "ring")
DEFAULT_CUE = "frame"


@dataclass(frozen=True)
class TaskSpec:
    """Difficulty knobs. The defaults are the setting measured in the workbench notes."""

    match: str = "colour"  # the attribute a candidate shares with the reference: "colour" or "shape"
    n_kinds: int = 2  # colours (2..6) or shapes (2..8) in play
    total: int | None = 9  # candidates per image (k matches + total-k others); None: k + 0..max_distractors
    max_distractors: int = 5  # only when total is None
    noise: float = 0.04  # std of Gaussian pixel noise
    specks: float = 0.0  # probability of a faint speck in each empty cell
    cue: str = DEFAULT_CUE  # what names the colour to count: "frame" (the image's border) or "ring" (one cell)

    def __post_init__(self) -> None:
        limit = {"colour": len(PALETTE), "shape": len(GLYPHS)}
        if self.match not in limit:
            raise ValueError(f"match must be 'colour' or 'shape', got {self.match!r}")
        if self.cue not in CUES:
            raise ValueError(f"cue must be one of {', '.join(CUES)}, got {self.cue!r}")
        if self.cue == "frame" and self.match != "colour":
            raise ValueError("cue='frame' names a colour: use it with match='colour'")
        if not 2 <= self.n_kinds <= limit[self.match]:
            raise ValueError(f"n_kinds must be in 2..{limit[self.match]} for match={self.match!r}, got {self.n_kinds}")
        if self.total is not None and not NUM_CLASSES - 1 <= self.total <= GRID * GRID - 1:
            raise ValueError(f"total must be in {NUM_CLASSES - 1}..{GRID * GRID - 1} or None, got {self.total}")


DEFAULT_TASK = TaskSpec()


def check_cue(cue: str, dataset: str = "synthetic") -> None:
    """ValueError saying what to do when `cue` is unknown, or set away from the default for another dataset."""
    if cue not in CUES:
        raise ValueError(f"unknown synthetic cue {cue!r}: use one of {', '.join(CUES)}")
    if dataset != "synthetic" and cue != DEFAULT_CUE:
        raise ValueError(f"--synthetic-cue {cue} applies to the built-in synthetic dataset only: drop it, or use "
                         "--dataset synthetic")


def task_for(cue: str = DEFAULT_CUE) -> TaskSpec:
    """The built-in task with the given cue (every other knob at its default)."""
    return TaskSpec(cue=cue)


def sample_layout(seed: int, split: str, index: int, task: TaskSpec = DEFAULT_TASK) -> dict:
    """The symbolic content of one image: cells, the matched attribute ("kinds"), nuisances and the label."""
    rng = np.random.default_rng([int(seed), _SPLIT_IDS[split], int(index)])
    k = int(rng.integers(NUM_CLASSES))
    d = task.total - k if task.total is not None else int(rng.integers(task.max_distractors + 1))
    cells = rng.choice(GRID * GRID, size=1 + k + d, replace=False)
    reference = int(rng.integers(task.n_kinds))
    others = rng.integers(task.n_kinds - 1, size=d)
    others = others + (others >= reference)  # uniform over the kinds that differ from the reference
    return {
        "label": k,
        "cells": cells.astype(np.int64),  # cells[0] holds the reference (left empty with cue="frame")
        "kinds": np.concatenate([[reference], np.full(k, reference), others]).astype(np.int64),
        "tint": rng.uniform(0.0, 0.25, size=3).astype(np.float32),
        "gradient": rng.uniform(-0.15, 0.15, size=2).astype(np.float32),
        "specks": rng.random(GRID * GRID) < task.specks,
        "speck_pos": rng.integers(CELL, size=(GRID * GRID, 2)),
        "noise_seed": int(rng.integers(2**31)),
    }


def _glyph(layout_index: int, kind: int, task: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
    """(3x3 lit mask, RGB colour) of glyph number `layout_index` (0 = the reference) of the given kind."""
    if task.match == "colour":
        return (RING if layout_index == 0 else SQUARE), PALETTE[kind]
    return GLYPHS[kind] > 0, (REFERENCE_COLOUR if layout_index == 0 else WHITE)


def _background(layout: dict) -> np.ndarray:
    """The nuisance background every generated image starts from: a tinted linear gradient (HxWx3)."""
    ramp = (np.arange(BASE_SIZE, dtype=np.float32) / (BASE_SIZE - 1)) - 0.5
    gy, gx = layout["gradient"]
    background = 0.15 + gy * ramp[:, None] + gx * ramp[None, :]
    return background[:, :, None] + layout["tint"][None, None, :]


def _finish(image: np.ndarray, layout: dict, noise: float) -> np.ndarray:
    """Add the layout's Gaussian pixel noise (std `noise`) and clip to a float32 image in [0, 1]."""
    if noise > 0:
        image = image + np.random.default_rng(layout["noise_seed"]).normal(0.0, noise, image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def render(layout: dict, task: TaskSpec = DEFAULT_TASK) -> np.ndarray:
    """Draw a layout as a float32 HxWx3 image in [0, 1]."""
    image = _background(layout)
    occupied = np.zeros(GRID * GRID, dtype=bool)
    occupied[layout["cells"]] = True
    for cell in np.flatnonzero(layout["specks"] & ~occupied):
        r, c = divmod(int(cell), GRID)
        dy, dx = layout["speck_pos"][cell]
        image[r * CELL + dy, c * CELL + dx] += 0.3
    if task.cue == "frame":
        frame = np.zeros((BASE_SIZE, BASE_SIZE), dtype=bool)
        frame[[0, -1], :] = frame[:, [0, -1]] = True
        image[frame] = PALETTE[layout["kinds"][0]]
    for i, (cell, kind) in enumerate(zip(layout["cells"], layout["kinds"])):
        if i == 0 and task.cue == "frame":
            continue  # the frame, drawn above, is the reference
        r, c = divmod(int(cell), GRID)
        lit, colour = _glyph(i, int(kind), task)
        patch = image[r * CELL:r * CELL + 3, c * CELL:c * CELL + 3]
        image[r * CELL:r * CELL + 3, c * CELL:c * CELL + 3] = np.where(lit[:, :, None], colour[None, None, :], patch)
    return _finish(image, layout, task.noise)


def generate(seed: int, split: str, index: int, task: TaskSpec = DEFAULT_TASK) -> tuple[np.ndarray, int]:
    """(HxWx3 float32 image in [0, 1], label) for one sample."""
    layout = sample_layout(seed, split, index, task)
    return render(layout, task), layout["label"]


def count_matches(layout: dict) -> int:
    """The label recomputed from a layout's content (tests use it after editing a layout)."""
    kinds = np.asarray(layout["kinds"])
    return int((kinds[1:] == kinds[0]).sum())


# ---------------------------------------------------------------------------------- pair probes
# Two generated probes that share everything but where a square's partner lies (datasets "mirror-pairs" and
# "aligned-pairs" of experiments.data). Nine squares are drawn in cells of the image's left half, each with a
# partner square in the right half; ``k`` of the nine pairs share a colour (two colours), the others do not.
# Label: ``k`` (0-9, uniform). The background tint, gradient and pixel noise are the counting task's.
#   - "aligned-pairs" (the PWA probe): the partner of cell (r, c) is (r, c + 4), the same position in the
#     horizontally neighbouring quadrant. The quadrants are the stage-3 windows of ``sepvit_nano_32``, so the
#     relation is pixel-aligned between two windows: what PWA does (window i receives window j's map, position
#     for position), in the DSSA blocks of stages 1-3.
#   - "mirror-pairs" (the GSA probe): the partner of (r, c) is its mirror image (r, 7 - c) across the vertical
#     axis. In the windows of stages 2 and 3 (2x2 and 4x4 cells) the partner sits at another position of its
#     window than the square (the column order is reversed), so PWA's position-for-position move cannot carry
#     the relation there; attention that sees both cells as tokens of one window can: GSA's grouped block,
#     global at one token per cell in stage 3. Without GSA, all cells meet only in stage 4 (one token per 2x2
#     cells). The limit of this argument: a stage-1 window is one cell and every square sits at the same place
#     in its cell, so stage-1 PWA could move a partner onto its square, but only if the window tokens, which set
#     PWA's weights, knew each cell's mirror: a function of absolute position, which only the zero padding of
#     OPE's and CPE's convolutions supplies.
# Both are relations between far windows; neither is given by pooled counts: the two halves' colour counts
# bound ``k`` and give its parity (they are equal when ``k`` = 9) but leave it open (an ideal reader of the counts
# alone gets about 40 %; ``tests/test_data.py`` checks that the label changes when one partner's colour changes
# and only then). The two probes draw the same layouts (cells, colours, label) and differ only in where the
# partners are drawn.
PAIR_PROBES = ("aligned-pairs", "mirror-pairs")
_PAIRS_SALT = 12  # the probes' stream of layouts, apart from the counting task's; shared by both probes


def partner_cell(cell: int, probe: str) -> int:
    """The cell (row-major on the 8x8 grid) that holds the partner of a square in `cell` (left half)."""
    r, c = divmod(int(cell), GRID)
    if not 0 <= c < GRID // 2:
        raise ValueError(f"cell {cell} is not in the left half")
    if probe == "aligned-pairs":
        return r * GRID + c + GRID // 2
    if probe == "mirror-pairs":
        return r * GRID + (GRID - 1 - c)
    raise ValueError(f"unknown probe {probe!r}: use one of {', '.join(PAIR_PROBES)}")


def sample_pairs(seed: int, split: str, index: int, probe: str) -> dict:
    """The symbolic content of one probe image: nine left cells, their partners, both colours, nuisances, label."""
    partner_cell(0, probe)  # an unknown probe is refused before anything is drawn
    rng = np.random.default_rng([int(seed), _SPLIT_IDS[split], int(index), _PAIRS_SALT])
    k = int(rng.integers(NUM_CLASSES))
    left_cells = [r * GRID + c for r in range(GRID) for c in range(GRID // 2)]
    cells = rng.choice(left_cells, size=NUM_CLASSES - 1, replace=False)
    same = np.zeros(cells.size, dtype=bool)
    same[rng.choice(cells.size, size=k, replace=False)] = True
    left = rng.integers(2, size=cells.size)
    return {
        "label": k,
        "cells": cells.astype(np.int64),
        "partners": np.array([partner_cell(c, probe) for c in cells], dtype=np.int64),
        "left": left.astype(np.int64),  # colour index (into PALETTE) of each left square
        "right": np.where(same, left, 1 - left).astype(np.int64),  # and of its partner
        "tint": rng.uniform(0.0, 0.25, size=3).astype(np.float32),
        "gradient": rng.uniform(-0.15, 0.15, size=2).astype(np.float32),
        "noise_seed": int(rng.integers(2**31)),
    }


def _render_squares(layout: dict, squares, noise: float) -> np.ndarray:
    """The layout's background with a filled 3x3 square of PALETTE[kind] in each (cell, kind), then its noise."""
    image = _background(layout)
    for cell, kind in squares:
        r, c = divmod(int(cell), GRID)
        image[r * CELL:r * CELL + 3, c * CELL:c * CELL + 3] = PALETTE[int(kind)]
    return _finish(image, layout, noise)


def render_pairs(layout: dict, noise: float = DEFAULT_TASK.noise) -> np.ndarray:
    """Draw a pair-probe layout as a float32 HxWx3 image in [0, 1]."""
    squares = [*zip(layout["cells"], layout["left"]), *zip(layout["partners"], layout["right"])]
    return _render_squares(layout, squares, noise)


def generate_pairs(seed: int, split: str, index: int, probe: str) -> tuple[np.ndarray, int]:
    """(HxWx3 float32 image in [0, 1], label) for one sample of a pair probe."""
    layout = sample_pairs(seed, split, index, probe)
    return render_pairs(layout), layout["label"]


def count_matching_pairs(layout: dict) -> int:
    """The pair probes' label recomputed from a layout's content (tests use it after editing a layout)."""
    return int((np.asarray(layout["left"]) == np.asarray(layout["right"])).sum())


# ---------------------------------------------------------------------------------- position probe
# "top-half" (the OPE / CPE / LWT probe): nine squares, each in a random colour of the palette, ``k`` of them in
# cells of the top half and ``9 - k`` in the bottom half; label ``k`` (0-9, uniform): how many squares lie in the
# top half. Nothing but a square's absolute place decides whether it counts, so the probe needs position, and
# SepViT has exactly three sources of it: the zero padding of OPE's convolutions, the zero padding of CPE's
# depthwise convolutions, and the learnable window tokens, which are one parameter per window *position*.
# Without all three (``ope=False, cpe=False, window_token`` not "learnable") ``sepvit_nano_32`` computes the same
# function of an image and of the image with its halves swapped (every convolution then works inside a window,
# and attention inside and across windows does not know their order), while the swap turns ``k`` into ``9 - k``:
# such a model scores at most 50 % (``tests/test_data.py`` checks both). The background has a tint and no
# gradient: a gradient's brightness would say which half is up, a cue to position drawn in the pixels.
POSITION_PROBE = "top-half"
_TOP_HALF_SALT = 13  # the position probe's stream of layouts, apart from the other generated tasks'


def sample_top_half(seed: int, split: str, index: int) -> dict:
    """The symbolic content of one position-probe image: nine cells (``k`` in the top half), colours, nuisances."""
    rng = np.random.default_rng([int(seed), _SPLIT_IDS[split], int(index), _TOP_HALF_SALT])
    k = int(rng.integers(NUM_CLASSES))
    half = GRID * GRID // 2
    top = rng.choice(half, size=k, replace=False)
    bottom = half + rng.choice(half, size=NUM_CLASSES - 1 - k, replace=False)
    return {
        "label": k,
        "cells": np.concatenate([top, bottom]).astype(np.int64),
        "kinds": rng.integers(len(PALETTE), size=NUM_CLASSES - 1).astype(np.int64),
        "tint": rng.uniform(0.0, 0.25, size=3).astype(np.float32),
        "gradient": np.zeros(2, dtype=np.float32),
        "noise_seed": int(rng.integers(2**31)),
    }



def render_top_half(layout: dict, noise: float = DEFAULT_TASK.noise) -> np.ndarray:
    """Draw a position-probe layout as a float32 HxWx3 image in [0, 1]."""
    return _render_squares(layout, zip(layout["cells"], layout["kinds"]), noise)


def count_top_half(layout: dict) -> int:
    """The position probe's label recomputed from a layout's cells (tests use it after moving squares)."""
    return int((np.asarray(layout["cells"]) < GRID * GRID // 2).sum())


def swap_halves(image: np.ndarray) -> np.ndarray:
    """The image with its top and bottom halves exchanged (rows 0-15 <-> 16-31): what a model without a position
    source cannot tell from the image itself, while it turns the position probe's label ``k`` into ``9 - k``."""
    return np.roll(image, image.shape[0] // 2, axis=0)


# ---------------------------------------------------------------------------------- the generated probes
PROBES = (*PAIR_PROBES, POSITION_PROBE)
GENERATED_DATASETS = ("synthetic", *PROBES)  # every dataset this module makes (as many images as asked)
SIZES = (4000, 1000)  # default train / per-epoch validation sizes of a generated dataset


def generate_probe(seed: int, split: str, index: int, probe: str) -> tuple[np.ndarray, int]:
    """(HxWx3 float32 image in [0, 1], label) for one sample of a probe in PROBES."""
    if probe == POSITION_PROBE:
        layout = sample_top_half(seed, split, index)
        return render_top_half(layout), layout["label"]
    if probe in PAIR_PROBES:
        return generate_pairs(seed, split, index, probe)
    raise ValueError(f"unknown probe {probe!r}: use one of {', '.join(PROBES)}")
