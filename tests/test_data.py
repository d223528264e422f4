"""Datasets: determinism, shapes, disjoint splits, size caps, refusals, and the synthetic task's semantics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments import synthetic
from experiments.data import DATASETS, DataError, DataInfo, build_datasets, check_dataset


def stack(dataset, n=None):
    n = len(dataset) if n is None else n
    xs, ys = zip(*(dataset[i] for i in range(n)))
    return torch.stack(xs), torch.tensor(ys)


# ---------------------------------------------------------------------------------- built-ins
@pytest.mark.parametrize("name,chans", [("synthetic", 3), ("digits", 1)])
def test_builtin_shapes_dtypes_labels(name, chans):
    train, val, info = build_datasets(name, train_size=64, val_size=32, seed=0)
    assert isinstance(info, DataInfo)
    assert (info.name, info.in_chans, info.img_size, info.num_classes) == (name, chans, 32, 10)
    assert (len(train), len(val), info.train_size, info.val_size) == (64, 32, 64, 32)
    x, y = stack(train)
    assert x.shape == (64, chans, 32, 32) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert y.min() >= 0 and y.max() < info.num_classes
    assert len(info.mean) == len(info.std) == chans
    assert isinstance(train[0][1], int)


def test_synthetic_is_normalised_and_labels_balanced():
    train, _, _ = build_datasets("synthetic", train_size=500, seed=3)
    x, y = stack(train)
    assert abs(float(x.mean())) < 0.2 and 0.7 < float(x.std()) < 1.3
    counts = torch.bincount(y, minlength=10)
    assert counts.min() >= 25  # uniform over 10 classes: 50 expected each


def test_synthetic_determinism_and_seed_dependence():
    a, _, _ = build_datasets("synthetic", train_size=16, val_size=4, seed=1)
    b, _, _ = build_datasets("synthetic", train_size=16, val_size=4, seed=1)
    c, _, _ = build_datasets("synthetic", train_size=16, val_size=4, seed=2)
    xa, ya = stack(a)
    xb, yb = stack(b)
    xc, _ = stack(c)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(xa, xc)
    assert torch.equal(a[5][0], a[5][0])  # random access gives the same image twice


def test_synthetic_train_and_val_are_disjoint():
    train, val, _ = build_datasets("synthetic", train_size=300, val_size=100, seed=0)
    xt, _ = stack(train)
    xv, _ = stack(val)
    distances = torch.cdist(xv.flatten(1), xt.flatten(1))
    assert distances.min() > 1.0


def test_synthetic_upsampling_keeps_the_cell_grid():
    small, _, _ = build_datasets("synthetic", train_size=2, val_size=1, seed=0)
    big, _, info = build_datasets("synthetic", img_size=64, train_size=2, val_size=1, seed=0)
    assert info.img_size == 64 and big[0][0].shape == (3, 64, 64)
    assert torch.equal(big[0][0][:, ::2, ::2], small[0][0])


def test_digits_split_is_fixed_disjoint_and_caps_are_seeded():
    train, val, info = build_datasets("digits")
    assert (len(train), len(val)) == (1437, 360) and info.in_chans == 1
    xt, _ = stack(train)
    xv, _ = stack(val)
    # no validation image appears in training (compare un-augmented pixels through the stored tensors)
    assert torch.cdist(val.images.flatten(1), train.images.flatten(1)).min() > 0
    a, _, _ = build_datasets("digits", train_size=100, val_size=50, seed=0)
    b, _, _ = build_datasets("digits", train_size=100, val_size=50, seed=0)
    c, _, _ = build_datasets("digits", train_size=100, val_size=50, seed=1)
    assert len(a) == 100 and torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert xt.shape[1:] == xv.shape[1:] == (1, 32, 32)


def test_digits_augmentation_is_reproducible_under_torch_seed():
    train, _, _ = build_datasets("digits", train_size=8, img_size=32)
    torch.manual_seed(0)
    first = stack(train)[0]
    torch.manual_seed(0)
    assert torch.equal(first, stack(train)[0])


# ---------------------------------------------------------------------------------- refusals
def test_unknown_dataset_lists_the_names():
    with pytest.raises(DataError, match="use one of synthetic, aligned-pairs, mirror-pairs, top-half, digits") as err:
        build_datasets("imagenet")
    assert "\n" not in str(err.value)
    with pytest.raises(DataError):
        check_dataset("mnist", None)
    assert set(DATASETS) == {"synthetic", "aligned-pairs", "mirror-pairs", "top-half", "digits", "cifar10", "cifar100",
                             "imagefolder"}


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagefolder"])
def test_folder_datasets_refuse_missing_folder(name, tmp_path):
    with pytest.raises(DataError, match="needs --data-dir"):
        check_dataset(name, None)
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as err:
        build_datasets(name, data_dir=str(missing))
    assert "nowhere" in str(err.value)


@pytest.mark.parametrize("name,folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_cifar_folder_without_files_is_refused_without_download(name, folder, tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(tvu, "download_and_extract_archive", no_download)
    monkeypatch.setattr(tvu, "download_url", no_download)
    (tmp_path / folder).mkdir()
    with pytest.raises(DataError, match=folder) as err:
        build_datasets(name, data_dir=str(tmp_path))
    assert "lacks" in str(err.value)
    assert list((tmp_path / folder).iterdir()) == []  # nothing was written


def test_cifar_corrupt_files_are_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / f).write_bytes(b"not a pickle")
    check_dataset("cifar10", str(folder))  # cheap check: files present (the batches folder itself is accepted)
    with pytest.raises(DataError, match="corrupt"):
        build_datasets("cifar10", data_dir=str(tmp_path))


def test_non_positive_sizes_are_refused():
    with pytest.raises(DataError, match="train-size"):
        build_datasets("synthetic", train_size=0)
    with pytest.raises(DataError, match="img-size"):
        build_datasets("digits", img_size=-1)


# ---------------------------------------------------------------------------------- imagefolder
def write_image_folder(root, classes=("cat", "dog", "fox"), per_class=(4, 2)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in zip(("train", "val"), per_class):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")


def test_imagefolder_with_timm_transforms(tmp_path):
    write_image_folder(tmp_path)
    train, val, info = build_datasets("imagefolder", data_dir=str(tmp_path), img_size=48)
    assert (info.num_classes, info.in_chans, info.img_size) == (3, 3, 48)
    assert (len(train), len(val)) == (12, 6)
    x, y = train[0]
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32 and 0 <= y < 3
    assert val[5][0].shape == (3, 48, 48)
    capped, _, info = build_datasets("imagefolder", data_dir=str(tmp_path), img_size=48, train_size=5, seed=0)
    assert len(capped) == 5 and info.train_size == 5
    assert build_datasets("imagefolder", data_dir=str(tmp_path))[2].img_size == 224


def test_imagefolder_refuses_bad_layouts(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="val"):
        check_dataset("imagefolder", str(tmp_path))
    (tmp_path / "val" / "b").mkdir(parents=True)
    with pytest.raises(DataError, match="same class folders"):
        check_dataset("imagefolder", str(tmp_path))


# ---------------------------------------------------------------------------------- synthetic semantics
RING = synthetic.task_for("ring")  # the one-cell cue: the properties below are about a single far reference
def test_synthetic_label_is_the_match_count():
    for index in range(200):
        layout = synthetic.sample_layout(0, "train", index, RING)
        assert layout["label"] == synthetic.count_matches(layout)
        cells = layout["cells"]
        assert len(set(cells.tolist())) == len(cells) == len(layout["kinds"])
        assert len(cells) == 1 + synthetic.DEFAULT_TASK.total  # the number of squares carries no information


def cell_slice(cell):
    r, c = divmod(int(cell), synthetic.GRID)
    return np.s_[r * synthetic.CELL:(r + 1) * synthetic.CELL, c * synthetic.CELL:(c + 1) * synthetic.CELL]


def test_synthetic_label_depends_on_a_distant_region():
    """Editing only the reference cell, or only one far-away copy, changes the label."""
    checked = 0
    for index in range(300):
        layout = synthetic.sample_layout(0, "train", index, RING)
        k, shapes, cells = layout["label"], layout["kinds"], layout["cells"]
        if k < 1 or len(shapes) == k + 1:
            continue  # needs a copy and a non-matching glyph
        ref_rc, copy_rc = divmod(int(cells[0]), 8), divmod(int(cells[1]), 8)
        if max(abs(ref_rc[0] - copy_rc[0]), abs(ref_rc[1] - copy_rc[1])) < 4:
            continue  # keep pairs at least 4 cells (16 px, a stage-2 group) apart
        other_shape = int(shapes[k + 1])

        # 1) give the reference a non-matching candidate's shape: only the reference cell changes,
        #    the k far-away copies stop counting and the other shape's glyphs count instead
        edited = {**layout, "kinds": shapes.copy()}
        edited["kinds"][0] = other_shape
        assert synthetic.count_matches(edited) == int((shapes[1:] == other_shape).sum())
        diff = np.abs(synthetic.render(layout, RING) - synthetic.render(edited, RING)).sum(-1) > 0
        outside = diff.copy()
        outside[cell_slice(cells[0])] = False
        assert diff.any() and not outside.any()

        # 2) alter only one distant copy: the label drops by one, the reference cell is untouched
        altered = {**layout, "kinds": shapes.copy()}
        altered["kinds"][1] = other_shape
        assert synthetic.count_matches(altered) == k - 1
        diff = np.abs(synthetic.render(layout, RING) - synthetic.render(altered, RING)).sum(-1) > 0
        assert not diff[cell_slice(cells[0])].any()

        # 3) move that copy elsewhere: the label does not depend on where it is
        moved = {**layout, "cells": cells.copy()}
        moved["cells"][1] = sorted(set(range(64)) - set(cells.tolist()))[0]
        assert synthetic.count_matches(moved) == k
        checked += 1
    assert checked >= 30


def test_synthetic_same_local_content_different_labels():
    """A white glyph counts or not depending only on the distant reference (a relation, not appearance)."""
    layout = synthetic.sample_layout(0, "train", 0, RING)
    shapes = np.array([0, 0, 1])
    counted = {**layout, "cells": np.array([0, 63, 36]), "kinds": shapes}
    not_counted = {**counted, "kinds": np.array([1, 0, 1])}
    img_a, img_b = synthetic.render(counted, RING), synthetic.render(not_counted, RING)
    for cell in (63, 36):  # the white glyphs are pixel-identical in both images
        assert np.array_equal(img_a[cell_slice(cell)], img_b[cell_slice(cell)])
    assert synthetic.count_matches(counted) == 1 and synthetic.count_matches(not_counted) == 1
    assert synthetic.count_matches({**counted, "kinds": np.array([0, 0, 0])}) == 2
    # the glyph in the far corner (cell 63) is the one that counts in the first image, not in the second
    assert shapes[1] == counted["kinds"][0] and shapes[1] != not_counted["kinds"][0]


def test_synthetic_shape_variant_and_bad_task():
    task = synthetic.TaskSpec(match="shape", n_kinds=4, total=None, cue="ring")
    for index in range(50):
        layout = synthetic.sample_layout(0, "train", index, task)
        assert layout["label"] == synthetic.count_matches(layout)
        assert 1 + layout["label"] <= len(layout["cells"]) <= 1 + layout["label"] + task.max_distractors
        assert synthetic.render(layout, task).shape == (32, 32, 3)
    with pytest.raises(ValueError, match="n_kinds"):
        synthetic.TaskSpec(n_kinds=9)
    with pytest.raises(ValueError, match="match"):
        synthetic.TaskSpec(match="size")


def test_synthetic_samples_are_random_access_whatever_ran_before():
    """Each sample is a function of (seed, split, index) alone: DataLoader workers generate any index in any order,
    and neither the global NumPy/torch generators nor earlier samples change it."""
    alone = synthetic.generate(0, "train", 199)
    np.random.seed(1)
    torch.manual_seed(1)
    for i in range(199):
        synthetic.generate(0, "train", i)
    image, label = synthetic.generate(0, "train", 199)
    assert np.array_equal(image, alone[0]) and label == alone[1]
    assert not np.array_equal(synthetic.generate(0, "val", 199)[0], image)  # the split is part of the identity


def frame_mask() -> np.ndarray:
    mask = np.zeros((synthetic.BASE_SIZE, synthetic.BASE_SIZE), dtype=bool)
    mask[[0, -1], :] = mask[:, [0, -1]] = True
    return mask


def test_frame_cue_names_the_colour_and_nothing_else_does():
    """cue="frame": recolouring only the frame flips the label (k -> 9 - k with two colours) and changes only frame
    pixels; recolouring one square changes the label by one and only that square's cell; every square is
    pixel-identical whichever colour the frame names."""
    task = synthetic.task_for("frame")
    checked = 0
    for index in range(100):
        layout = synthetic.sample_layout(0, "train", index, task)
        k, kinds, cells = layout["label"], layout["kinds"], layout["cells"]
        assert k == synthetic.count_matches(layout)
        image = synthetic.render(layout, task)

        recoloured = {**layout, "kinds": kinds.copy()}
        recoloured["kinds"][0] = 1 - kinds[0]
        assert synthetic.count_matches(recoloured) == synthetic.DEFAULT_TASK.total - k
        diff = np.abs(image - synthetic.render(recoloured, task)).sum(-1) > 0
        assert diff.any() and not (diff & ~frame_mask()).any()
        for cell in cells[1:]:  # the squares themselves are untouched
            assert not diff[cell_slice(cell)][:3, :3].any()

        if k >= 1:
            one_less = {**layout, "kinds": kinds.copy()}
            one_less["kinds"][1] = 1 - kinds[0]
            assert synthetic.count_matches(one_less) == k - 1
            diff = np.abs(image - synthetic.render(one_less, task)).sum(-1) > 0
            outside = diff.copy()
            outside[cell_slice(cells[1])] = False
            assert diff.any() and not outside.any()
            checked += 1
    assert checked >= 50


def test_frame_cue_leaves_the_reference_cell_empty_and_the_ring_cue_unchanged():
    ring, frame = synthetic.task_for("ring"), synthetic.task_for("frame")
    assert frame == synthetic.DEFAULT_TASK and ring == synthetic.TaskSpec(cue="ring")
    layout = synthetic.sample_layout(0, "train", 5, frame)
    same_draw = synthetic.sample_layout(0, "train", 5, ring)  # the cue changes the drawing, not the draw
    assert np.array_equal(layout["cells"], same_draw["cells"]) and layout["label"] == same_draw["label"]
    no_ref = {**layout, "kinds": layout["kinds"].copy()}
    without_frame_pixels = ~frame_mask()
    reference = np.zeros_like(without_frame_pixels)
    reference[cell_slice(layout["cells"][0])] = True
    with_ring = synthetic.render(layout, ring)
    with_frame = synthetic.render(no_ref, frame)
    # the ring cell holds the ring with cue="ring" and only background with cue="frame"
    assert not np.array_equal(with_ring[reference & without_frame_pixels], with_frame[reference & without_frame_pixels])
    with pytest.raises(ValueError, match="cue"):
        synthetic.TaskSpec(cue="halo")
    with pytest.raises(ValueError, match="match='colour'"):
        synthetic.TaskSpec(cue="frame", match="shape")


def test_synthetic_cue_reaches_the_dataset_and_is_refused_elsewhere():
    train, val, info = build_datasets("synthetic", train_size=8, val_size=8)  # the default cue
    assert "frame" in info.description
    expected = synthetic.generate(0, "train", 3, synthetic.task_for("frame"))
    assert train.labels[3] == expected[1]
    ring_train, _, ring_info = build_datasets("synthetic", train_size=8, val_size=8, synthetic_cue="ring")
    assert not torch.equal(train.images[3], ring_train.images[3]) and "ring" in ring_info.description
    assert ring_train.labels[3] == synthetic.generate(0, "train", 3, synthetic.task_for("ring"))[1]
    with pytest.raises(DataError, match="synthetic dataset only"):
        build_datasets("digits", synthetic_cue="ring")
    with pytest.raises(DataError, match="unknown synthetic cue"):
        build_datasets("synthetic", synthetic_cue="halo")


# ---------------------------------------------------------------------------------- pair probes
@pytest.mark.parametrize("probe", synthetic.PAIR_PROBES)
def test_pair_probe_label_changes_when_and_only_when_a_partner_changes(probe):
    """Recolouring one partner changes the label by one and only that partner's cell's pixels; recolouring both
    squares of a pair changes the halves' colour counts but keeps the label."""
    for index in range(100):
        layout = synthetic.sample_pairs(0, "train", index, probe)
        k = layout["label"]
        assert k == synthetic.count_matching_pairs(layout) and len(layout["cells"]) == 9
        image = synthetic.render_pairs(layout)
        for i, (cell, partner) in enumerate(zip(layout["cells"], layout["partners"])):
            assert partner == synthetic.partner_cell(cell, probe)
            assert divmod(int(cell), 8)[1] < 4 <= divmod(int(partner), 8)[1]  # left half -> right half
        flipped = {**layout, "right": layout["right"].copy()}
        flipped["right"][0] = 1 - flipped["right"][0]
        was_match = layout["left"][0] == layout["right"][0]
        assert synthetic.count_matching_pairs(flipped) == k + (-1 if was_match else 1)
        diff = np.abs(image - synthetic.render_pairs(flipped)).sum(-1) > 0
        outside = diff.copy()
        outside[cell_slice(layout["partners"][0])] = False
        assert diff[cell_slice(layout["partners"][0])].any() and not outside.any()
        both = {**layout, "left": layout["left"].copy(), "right": layout["right"].copy()}
        both["left"][0], both["right"][0] = 1 - both["left"][0], 1 - both["right"][0]
        assert synthetic.count_matching_pairs(both) == k  # the pooled colour counts changed, the label did not


def test_the_two_probes_differ_only_in_where_the_partner_lies():
    for cell in range(64):
        r, c = divmod(cell, 8)
        if c >= 4:
            with pytest.raises(ValueError, match="left half"):
                synthetic.partner_cell(cell, "mirror-pairs")
            continue
        assert synthetic.partner_cell(cell, "aligned-pairs") == cell + 4  # same place, next quadrant: PWA's move
        assert synthetic.partner_cell(cell, "mirror-pairs") == r * 8 + 7 - c  # column order reversed
    left = [c for c in range(64) if c % 8 < 4]
    for cells_per_window in (2, 4):  # stage-2 and stage-3 windows of sepvit_nano_32, in cells per side
        def place(cell):  # position inside its window
            return divmod(cell, 8)[0] % cells_per_window, divmod(cell, 8)[1] % cells_per_window
        # aligned partners sit at the square's place in their window (PWA's move); mirrored ones never do
        assert all(place(synthetic.partner_cell(c, "aligned-pairs")) == place(c) for c in left)
        assert all(place(synthetic.partner_cell(c, "mirror-pairs")) != place(c) for c in left)
    # the stated limit: a stage-1 window is one cell, where every square sits at the same place
    image = synthetic.render_pairs(synthetic.sample_pairs(0, "train", 0, "mirror-pairs"), noise=0.0)
    layout = synthetic.sample_pairs(0, "train", 0, "mirror-pairs")
    square, partner = cell_slice(layout["cells"][0]), cell_slice(layout["partners"][0])
    assert (image[square][:3, :3] == synthetic.PALETTE[layout["left"][0]]).all()
    assert (image[partner][:3, :3] == synthetic.PALETTE[layout["right"][0]]).all()
    # both probes draw the same layouts; only the partners' places differ
    for index in range(20):
        a, m = (synthetic.sample_pairs(0, "val", index, probe) for probe in ("aligned-pairs", "mirror-pairs"))
        assert a["label"] == m["label"] and all(np.array_equal(a[key], m[key]) for key in ("cells", "left", "right"))
        assert not np.array_equal(a["partners"], m["partners"])
    with pytest.raises(ValueError, match="unknown probe"):
        synthetic.partner_cell(0, "diagonal-pairs")


def test_pair_probe_labels_are_not_given_by_the_halves_colour_counts():
    """An ideal reader of the two halves' colour counts alone (the pooled features) stays far below the task: the
    probe needs the pairs. Estimated on 20000 layouts: the most frequent label given the counts."""
    from collections import Counter, defaultdict

    table = defaultdict(Counter)
    for index in range(20000):
        layout = synthetic.sample_pairs(0, "train", index, "mirror-pairs")
        table[(int(layout["left"].sum()), int(layout["right"].sum()))][layout["label"]] += 1
    accuracy = sum(c.most_common(1)[0][1] for c in table.values()) / 20000
    assert 0.2 < accuracy < 0.5


@pytest.mark.parametrize("probe", synthetic.PAIR_PROBES)
def test_pair_probes_are_datasets_of_the_runner(probe):
    train, val, info = build_datasets(probe, train_size=8, val_size=8)
    assert info.name == probe and info.num_classes == 10 and info.img_size == 32
    image, label = synthetic.generate_pairs(0, "train", 3, probe)
    assert train.labels[3] == label
    assert torch.allclose(train.images[3] * torch.tensor(info.std).view(3, 1, 1)
                          + torch.tensor(info.mean).view(3, 1, 1), torch.from_numpy(image).permute(2, 0, 1), atol=1e-5)
    other = "mirror-pairs" if probe == "aligned-pairs" else "aligned-pairs"
    assert not torch.equal(train.images[3], build_datasets(other, train_size=8, val_size=8)[0].images[3])
    with pytest.raises(DataError, match="not used by the built-in dataset"):
        build_datasets(probe, data_dir="/tmp")
    with pytest.raises(DataError, match="synthetic dataset only"):
        build_datasets(probe, synthetic_cue="ring")


# ---------------------------------------------------------------------------------- position probe
def test_position_probe_label_changes_when_and_only_when_a_square_crosses_the_middle():
    """Moving a square inside its half keeps the label, across the middle changes it by one; recolouring keeps it;
    swapping the halves turns k into 9 - k."""
    rng = np.random.default_rng(0)
    for index in range(100):
        layout = synthetic.sample_top_half(0, "train", index)
        k = layout["label"]
        cells = layout["cells"]
        assert k == synthetic.count_top_half(layout) and len(set(cells.tolist())) == 9
        assert (layout["gradient"] == 0).all()  # a gradient would draw the up-down direction into the pixels
        free = np.setdiff1d(np.arange(64), cells)
        same_half = [c for c in free if (c < 32) == (cells[0] < 32)]
        other_half = [c for c in free if (c < 32) != (cells[0] < 32)]
        moved = {**layout, "cells": cells.copy()}
        moved["cells"][0] = rng.choice(same_half)
        assert synthetic.count_top_half(moved) == k
        assert not np.array_equal(synthetic.render_top_half(moved), synthetic.render_top_half(layout))
        crossed = {**layout, "cells": cells.copy()}
        crossed["cells"][0] = rng.choice(other_half)
        assert synthetic.count_top_half(crossed) == k + (-1 if cells[0] < 32 else 1)
        recoloured = {**layout, "kinds": (layout["kinds"] + 1) % len(synthetic.PALETTE)}
        assert synthetic.count_top_half(recoloured) == k
        swapped = {**layout, "cells": (cells + 32) % 64}
        assert synthetic.count_top_half(swapped) == 9 - k
        clean = synthetic.render_top_half(layout, noise=0.0)
        assert np.array_equal(synthetic.swap_halves(clean), synthetic.render_top_half(swapped, noise=0.0))


def test_without_a_position_source_the_model_cannot_tell_the_halves_apart():
    """The probe's premise: with OPE, CPE and learnable window tokens all off, sepvit_nano_32 gives the same logits
    for an image and its half-swapped twin (whose label is 9 - k), so it scores at most 50 %, and for any order of
    its quadrants; each of the three sources alone breaks that symmetry."""
    from sepvit import SepViTConfig

    images = np.stack([synthetic.generate_probe(0, "val", i, "top-half")[0] for i in range(4)])
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    twins = torch.from_numpy(np.stack([synthetic.swap_halves(image) for image in images])).permute(0, 3, 1, 2)

    def gap(**changes):
        torch.manual_seed(0)
        model = SepViTConfig.preset("sepvit_nano_32", **changes).build().eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("window_token.tokens"):
                    p.normal_()  # trained tokens differ per window; their zero init would hide the source
            return float((model(x) - model(twins)).abs().max())

    blind = {"ope": False, "cpe": False}
    for token in ("zero", "avgpool", "dwconv"):
        for gsa in (True, False):
            assert gap(**blind, window_token=token, gsa=gsa) < 1e-6
    # nor can it order the quadrants at all: a cycle of them (content kept) leaves the logits as they are too
    cycled = twins.clone()
    quadrant = {(i, j): x[..., 16 * i:16 * i + 16, 16 * j:16 * j + 16] for i in (0, 1) for j in (0, 1)}
    for (i, j), source in {(0, 1): (0, 0), (1, 1): (0, 1), (1, 0): (1, 1), (0, 0): (1, 0)}.items():
        cycled[..., 16 * i:16 * i + 16, 16 * j:16 * j + 16] = quadrant[source]
    torch.manual_seed(0)
    model = SepViTConfig.preset("sepvit_nano_32", **blind, window_token="zero").build().eval()
    with torch.no_grad():
        assert float((model(x) - model(cycled)).abs().max()) < 1e-6
    floor = gap(**blind, window_token="zero")
    assert gap(**blind) > 100 * max(floor, 1e-7)  # learnable window tokens alone: one parameter per window place
    assert gap(cpe=False, window_token="zero") > 1e-3  # OPE's padding alone
    assert gap(ope=False, window_token="zero") > 1e-3  # CPE's padding alone


def test_a_reader_blind_to_the_quadrants_order_stays_far_below_the_position_probe():
    """A model without a position source cannot order the four quadrants (any permutation of them leaves it
    unchanged, as the swap of the halves does), and within a half the cells are drawn uniformly: the best it can
    do is the most frequent label given the quadrants' square counts in any order. Estimated on 20000 layouts."""
    from collections import Counter, defaultdict

    table = defaultdict(Counter)
    for index in range(20000):
        layout = synthetic.sample_top_half(0, "train", index)
        rows, cols = np.divmod(layout["cells"], 8)
        counts = np.bincount((rows // 4) * 2 + cols // 4, minlength=4)
        table[tuple(sorted(counts))][layout["label"]] += 1
    accuracy = sum(c.most_common(1)[0][1] for c in table.values()) / 20000
    assert 0.35 < accuracy < 0.45  # 0.41: below the 50 % bound of the swap alone


def test_position_probe_is_a_dataset_of_the_runner():
    train, val, info = build_datasets("top-half", train_size=200, val_size=8)
    assert info.name == "top-half" and info.num_classes == 10 and "top half" in info.description
    image, label = synthetic.generate_probe(0, "train", 3, "top-half")
    assert train.labels[3] == label
    assert torch.allclose(train.images[3] * torch.tensor(info.std).view(3, 1, 1)
                          + torch.tensor(info.mean).view(3, 1, 1), torch.from_numpy(image).permute(2, 0, 1), atol=1e-5)
    assert torch.bincount(torch.tensor(train.labels), minlength=10).min() >= 8  # uniform: 20 expected each
    with pytest.raises(DataError, match="not used by the built-in dataset"):
        build_datasets("top-half", data_dir="/tmp")
    with pytest.raises(ValueError, match="unknown probe"):
        synthetic.generate_probe(0, "train", 0, "left-half")


@pytest.mark.parametrize("img_size", [64, 48])  # an integer factor (pixel replication) and not (interpolation)
def test_generated_images_are_kept_at_32_px_and_read_at_the_asked_size_as_if_enlarged_first(img_size):
    import torch.nn.functional as F

    _, val, info = build_datasets("synthetic", img_size=img_size, train_size=4, val_size=6)
    assert val.images.shape == (6, 3, 32, 32)  # memory: the generator's size, whatever img_size is asked
    mean, std = (torch.tensor(v, dtype=torch.float32).view(3, 1, 1) for v in (info.mean, info.std))
    for index in range(6):
        image, label = synthetic.generate(0, "val", index)
        raw = torch.from_numpy(image).permute(2, 0, 1)
        enlarged = F.interpolate(raw[None], size=(img_size, img_size), mode="nearest")[0]
        read, read_label = val[index]
        assert read.shape == (3, img_size, img_size) and read_label == label
        assert torch.equal(read, (enlarged - mean) / std)  # bit for bit what enlarging before normalising gave
    assert torch.equal(val.stacked(), torch.stack([val[i][0] for i in range(6)]))
