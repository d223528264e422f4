"""Datasets for the experiment runner, all behind one call: ``build_datasets(name, ...)``.

    train, val, info = build_datasets("synthetic", train_size=4000, val_size=1000, seed=0)

Every dataset yields ``(float32 tensor C x H x W, normalised; int label)``. Nothing is ever downloaded:
  - "synthetic" (default): the built-in "distant match count" task, generated on the fly from the seed
    (see ``experiments/synthetic.py`` for what it tests; ``synthetic_cue`` picks the cue: "frame", the
    default, or "ring"). No file needed. 4000 / 1000 images by default.
  - "aligned-pairs", "mirror-pairs": the probes of one mechanism each (``experiments.synthetic``, "pair
    probes"): how many of nine square pairs share a colour, the partner at the same place in the neighbouring
    quadrant (PWA's pixel-aligned move) or at the mirrored place (cell-level attention across windows: GSA).
    Generated like "synthetic": the same sizes, background nuisances and pixel noise (their own normalisation).
  - "top-half": the position probe (``experiments.synthetic``, "position probe"): how many of nine squares lie in
    the top half; needs a source of absolute position (OPE's or CPE's zero padding, or the learnable window tokens).
  - "digits": scikit-learn's 8x8 handwritten digits (1797 images, ship with the package), one channel
    (``in_chans=1``, build the model with ``in_chans=info.in_chans``), upsampled to ``img_size``
    (default 32). A fixed stratified 80/20 split (1437 / 360) that does not depend on ``seed``, so every
    run is scored on the same images; ``seed`` only picks the subset when sizes are capped.
  - "cifar10", "cifar100": torchvision's format, read from ``data_dir`` (the folder holding
    ``cifar-10-batches-py`` / ``cifar-100-python``, or that folder itself); validation = the test batch.
  - "imagefolder": ``data_dir/train/<class>/*`` and ``data_dir/val/<class>/*`` (ImageNet style), with
    timm's ``create_transform`` (training and evaluation), ImageNet mean/std, default 224 px.

Randomness: the data themselves are a pure function of ``seed``. Training augmentation (digits: a shift
of up to 1/16 of the side; CIFAR: crop with 4 px padding + flip; imagefolder: timm's) draws from
torch's global RNG (and, for timm's crop, Python's ``random``), which the DataLoader seeds per worker
from its generator: seed the loader's generator (and ``random``/``torch`` in the main process for
``workers=0``) and an epoch is reproducible. The synthetic set has no augmentation: its images are
already random draws, and shifting them would break the alignment of cells with windows that the task
is about.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from experiments import synthetic

DATASETS = ("synthetic", "aligned-pairs", "mirror-pairs", "top-half", "digits", "cifar10", "cifar100",
            "imagefolder")
DEFAULT_IMG_SIZE = {"synthetic": 32, "aligned-pairs": 32, "mirror-pairs": 32, "top-half": 32, "digits": 32,
                    "cifar10": 32, "cifar100": 32, "imagefolder": 224}
GENERATED = synthetic.GENERATED_DATASETS  # made by experiments.synthetic from the data seed
SYNTHETIC_SIZES = synthetic.SIZES  # default train / val sizes of the generated set
# Images the final weights of a run on a generated dataset are scored on (TrainConfig.final_val_size unset). On the
# default benchmark two models disagree on a few percent of the images, so 1000 images move a seed's difference by
# 0.5-0.7 points (sd), 10000 by about 0.2 (`stats.image_noise`), for about 18 s per run on one thread (making and
# scoring the images) against about 3.5 minutes of training (docs/benchmark-log.md, 2026-12-07, ninth session).
FINAL_VAL_SIZE = 10_000

_CIFAR = {
    # name: (torchvision class name, folder, files that must exist, classes, mean, std)
    "cifar10": ("CIFAR10", "cifar-10-batches-py",
                tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"), 10,
                (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ("CIFAR100", "cifar-100-python", ("train", "test", "meta"), 100,
                 (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """Bad dataset request; the message is one line saying what to do."""


@dataclass
class DataInfo:
    name: str
    num_classes: int
    in_chans: int
    img_size: int
    mean: tuple
    std: tuple
    train_size: int
    val_size: int
    description: str
    groups: dict[str, tuple[int, int]] | None = None  # sub-task name -> [first, end) class range (probe suite)


# ---------------------------------------------------------------------------------- validation
def check_dataset(name: str, data_dir: str | None = None) -> None:
    """Refuse a bad dataset request cheaply (no image is read): raise DataError saying what to do."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
    if name in (*GENERATED, "digits"):
        if data_dir:  # silently ignoring it would train on other data than the user named
            raise DataError(f"--data-dir {data_dir} is not used by the built-in dataset {name!r} (it ships with the "
                            "workbench): drop --data-dir, or pick --dataset cifar10, cifar100 or imagefolder")
        return
    if not data_dir:
        raise DataError(f"dataset {name!r} needs --data-dir: {_layout_hint(name)}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {str(root)!r} does not exist: {_layout_hint(name)}")
    if name in _CIFAR:
        _cifar_root(name, root)
    else:
        _imagefolder_classes(root)


def check_sizes_available(info: DataInfo, train_size: int | None, val_size: int | None) -> None:
    """Refuse a --train-size/--val-size beyond what the built dataset (`info`) holds, naming the size available:
    the builders cap at the dataset's size, and a user who asked for more must hear that they got less."""
    for flag, split, asked, have in (("--train-size", "training", train_size, info.train_size),
                                     ("--val-size", "validation", val_size, info.val_size)):
        if asked is not None and int(asked) > have:
            raise DataError(f"{flag} {asked}: the {info.name} {split} set holds {have} images; give at most "
                            f"{have} (or leave {flag} unset for all of them)")


def _layout_hint(name: str) -> str:
    if name in _CIFAR:
        folder, files = _CIFAR[name][1], _CIFAR[name][2]
        return (f"give the folder that holds {folder}/ ({', '.join(files)}), the Python version of the dataset "
                "that you already have (nothing is downloaded)")
    return "give a folder with train/<class>/<images> and val/<class>/<images> (ImageNet layout)"


def _cifar_root(name: str, root: Path) -> Path:
    """The folder torchvision wants (parent of the batches folder); accepts the batches folder too."""
    folder, files = _CIFAR[name][1], _CIFAR[name][2]
    parent = root.parent if root.name == folder else root
    missing = [f for f in files if not (parent / folder / f).is_file()]
    if missing:
        raise DataError(f"{name}: {str(parent / folder)!r} lacks {', '.join(missing)}: {_layout_hint(name)}")
    return parent


def _imagefolder_classes(root: Path) -> list[str]:
    classes = {}
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"imagefolder: {str(folder)!r} is missing: {_layout_hint('imagefolder')}")
        classes[split] = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not classes[split]:
            raise DataError(f"imagefolder: {str(folder)!r} has no class subfolders: {_layout_hint('imagefolder')}")
    if classes["train"] != classes["val"]:
        only = sorted(set(classes["train"]) ^ set(classes["val"]))
        raise DataError(f"imagefolder: train/ and val/ must hold the same class folders; these are in only one: "
                        f"{', '.join(only[:5])}{' ...' if len(only) > 5 else ''}")
    return classes["train"]


# ---------------------------------------------------------------------------------- datasets
class SyntheticDataset(Dataset):
    """The "distant match count" images of ``experiments.synthetic``, generated once when the set is built.

    Every image is a pure function of (seed, split, index); generating them all up front (about 0.4 ms each, 2 s
    for the default 5000) keeps the generator out of every training epoch, where it cost about a tenth of the time.
    They are kept at the generator's 32 px and enlarged to ``img_size`` when read: nearest-neighbour enlargement
    commutes with the per-channel normalisation, so a read gives the same tensor as enlarging first, while 10000
    images take 120 MB at any ``img_size`` (at 224 px, held enlarged, they took 6 GB).
    """

    def __init__(self, seed: int, split: str, size: int, img_size: int, mean, std,
                 task: synthetic.TaskSpec | str = synthetic.DEFAULT_TASK):
        """task: the counting task's TaskSpec, or the name of a probe (synthetic.PROBES)."""
        self.seed, self.split, self.size, self.img_size = int(seed), split, int(size), int(img_size)
        mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        images, labels = [], []
        for index in range(self.size):
            image, label = _generate(self.seed, self.split, index, task)
            images.append((torch.from_numpy(image).permute(2, 0, 1) - mean) / std)
            labels.append(int(label))
        base = synthetic.BASE_SIZE
        self.images = torch.stack(images) if images else torch.empty(0, 3, base, base)
        self.labels = labels

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        if not 0 <= index < self.size:
            raise IndexError(index)
        return _resize_nearest(self.images[index], self.img_size), self.labels[index]

    def stacked(self) -> torch.Tensor:
        """Every image as read (at ``img_size``), in one tensor: for scoring a whole set at once."""
        if self.images.shape[-1] == self.img_size:
            return self.images
        return torch.stack([self[index][0] for index in range(self.size)])


class TensorImages(Dataset):
    """Images held as one [0, 1] tensor; optional random shift (zero fill) for training; normalised on read."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std, max_shift: int = 0):
        self.images, self.labels, self.max_shift = images, labels, int(max_shift)
        channels = images.shape[1]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(channels, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(channels, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        x = self.images[index]
        if self.max_shift:
            s = self.max_shift
            dy, dx = torch.randint(0, 2 * s + 1, (2,)).tolist()
            x = F.pad(x, (s, s, s, s))[:, dy:dy + x.shape[1], dx:dx + x.shape[2]]
        return (x - self.mean) / self.std, int(self.labels[index])


def _resize_nearest(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    if size % x.shape[-1] == 0:  # integer factor: exact pixel replication keeps the cell grid aligned
        f = size // x.shape[-1]
        return x.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)
    return F.interpolate(x[None], size=(size, size), mode="nearest")[0]


def _generate(seed: int, split: str, index: int, task: synthetic.TaskSpec | str) -> tuple[np.ndarray, int]:
    if isinstance(task, synthetic.TaskSpec):
        return synthetic.generate(seed, split, index, task)
    return synthetic.generate_probe(seed, split, index, task)


@functools.lru_cache(maxsize=4)
def synthetic_stats(img_size: int = 32, samples: int = 256,
                    task: synthetic.TaskSpec | str = synthetic.DEFAULT_TASK) -> tuple[tuple, tuple]:
    """Per-channel mean/std of the generated images, from a fixed reference sample (same for every seed)."""
    images = np.stack([_generate(0, "test", i, task)[0] for i in range(samples)])
    return tuple(float(v) for v in images.mean((0, 1, 2))), tuple(float(v) for v in images.std((0, 1, 2)))


def _subset_indices(n: int, cap: int | None, seed: int, salt: int) -> torch.Tensor | None:
    """A deterministic random subset of ``cap`` of ``n`` indices (sorted), or None for all."""
    if cap is None or cap >= n:
        return None
    g = torch.Generator().manual_seed(int(seed) * 1000 + salt)
    return torch.randperm(n, generator=g)[:cap].sort().values


def _cap(dataset: Dataset, cap: int | None, seed: int, salt: int) -> Dataset:
    idx = _subset_indices(len(dataset), cap, seed, salt)
    return dataset if idx is None else Subset(dataset, idx.tolist())


def _check_sizes(img_size, train_size, val_size) -> None:
    for flag, value in (("img_size", img_size), ("train_size", train_size), ("val_size", val_size)):
        if value is not None and int(value) < 1:
            raise DataError(f"{flag.replace('_', '-')} must be a positive number, got {value}")


def build_datasets(name: str, data_dir: str | None = None, img_size: int | None = None,
                   train_size: int | None = None, val_size: int | None = None,
                   seed: int = 0, verify: bool = False,
                   synthetic_cue: str = synthetic.DEFAULT_CUE) -> tuple[Dataset, Dataset, DataInfo]:
    """(train, val, info) for a dataset in DATASETS; raises DataError on a bad request, never downloads.

    verify: check that every image file the run will read decodes (ImageFolder), naming the first that does not:
    the runner does this before it opens any MLflow run.
    synthetic_cue: the built-in task's cue (``experiments.synthetic``: "frame", the default, or "ring"); other
    datasets refuse a cue other than the default.
    """
    check_dataset(name, data_dir)
    _check_sizes(img_size, train_size, val_size)
    try:
        synthetic.check_cue(synthetic_cue, name)
    except ValueError as error:
        raise DataError(str(error)) from None
    size = int(img_size or DEFAULT_IMG_SIZE[name])
    if name == "synthetic":
        return _build_synthetic(size, train_size, val_size, seed, synthetic.task_for(synthetic_cue))
    if name in synthetic.PAIR_PROBES:
        return _build_pairs(name, size, train_size, val_size, seed)
    if name == synthetic.POSITION_PROBE:
        return _build_generated(name, name, size, train_size, val_size, seed,
                                "position probe: label = how many of nine squares lie in the top half (0-9), squares "
                                "in random colours on an 8x8 grid of window-sized cells, a tint and no gradient")
    if name == "digits":
        return _build_digits(size, train_size, val_size, seed)
    if name in _CIFAR:
        return _build_cifar(name, Path(data_dir).expanduser(), size, train_size, val_size, seed)
    return _build_imagefolder(Path(data_dir).expanduser(), size, train_size, val_size, seed, verify)


# The TrainConfig fields that decide which images a run sees: build_datasets_for reads them, caches key on them.
DATA_FIELDS = ("dataset", "data_dir", "img_size", "train_size", "val_size", "data_seed", "synthetic_cue")


def data_key(train) -> tuple:
    """The values of a TrainConfig's DATA_FIELDS: equal keys, the same datasets (hashable: a cache key)."""
    return tuple(getattr(train, name) for name in DATA_FIELDS)


def build_datasets_from_key(key: tuple, img_size: int | None = None,
                            verify: bool = False) -> tuple[Dataset, Dataset, DataInfo]:
    """`build_datasets` for a `data_key`; img_size overrides the key's (e.g. the model preset's size when the config
    leaves it unset)."""
    d = dict(zip(DATA_FIELDS, key, strict=True))
    return build_datasets(d["dataset"], d["data_dir"], img_size or d["img_size"], d["train_size"], d["val_size"],
                          seed=d["data_seed"], verify=verify, synthetic_cue=d["synthetic_cue"])


def build_datasets_for(train, img_size: int | None = None, verify: bool = False) -> tuple[Dataset, Dataset, DataInfo]:
    """`build_datasets` for a `TrainConfig` (its DATA_FIELDS); img_size overrides the config's."""
    return build_datasets_from_key(data_key(train), img_size, verify)


def final_val_images(train) -> int:
    """How many validation images a run's final weights are scored on (`TrainConfig.final_val_size` resolved);
    0: none, the last epoch's score on the per-epoch images is the run's."""
    if train.final_val_size is not None:
        return int(train.final_val_size)
    if train.dataset not in GENERATED or (train.val_size or SYNTHETIC_SIZES[1]) != SYNTHETIC_SIZES[1]:
        return 0  # read from files, or a per-epoch set the user sized: its score stands
    return FINAL_VAL_SIZE


def generated_validation_set(train, images: int, img_size: int | None = None) -> Dataset:
    """The first `images` validation images of the run's generated dataset; its per-epoch images are their first
    `val_size` (each image is made from its own index). The training split is not needed: one image of it is made."""
    return build_datasets_for(train.replace(val_size=images, final_val_size=0, train_size=1), img_size)[1]


def _build_generated(name: str, task: synthetic.TaskSpec | str, size, train_size, val_size, seed,
                     description: str):
    """A dataset made by experiments.synthetic (the counting task's TaskSpec, or a pair probe's name)."""
    n_train = int(train_size or SYNTHETIC_SIZES[0])
    n_val = int(val_size or SYNTHETIC_SIZES[1])
    mean, std = synthetic_stats(task=task)
    # train and val use disjoint random streams (split is part of each image's seed)
    train = SyntheticDataset(seed, "train", n_train, size, mean, std, task)
    val = SyntheticDataset(seed, "val", n_val, size, mean, std, task)
    info = DataInfo(name, synthetic.NUM_CLASSES, 3, size, mean, std, n_train, n_val,
                    f"{description}; generated from seed {seed}")
    return train, val, info


def _build_synthetic(size, train_size, val_size, seed, task: synthetic.TaskSpec):
    cue = ("the colour of the one ring" if task.cue == "ring"
           else "the colour of the 1-px frame round the image")
    return _build_generated("synthetic", task, size, train_size, val_size, seed,
                            f"distant match count: label = how many of the nine squares share {cue} (0-9), glyphs "
                            "anywhere on an 8x8 grid of window-sized cells")


_PROBE_WORDING = {"aligned-pairs": "at the same place in the neighbouring quadrant (r, c+4)",
                  "mirror-pairs": "at the mirrored place across the vertical axis (r, 7-c)"}


def _build_pairs(probe, size, train_size, val_size, seed):
    return _build_generated(probe, probe, size, train_size, val_size, seed,
                            "pair probe: label = how many of nine square pairs share a colour (0-9), each square in "
                            f"the left half with its partner {_PROBE_WORDING[probe]}")


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    # fixed split, independent of the run seed: every run is scored on the same 360 images
    train_idx, val_idx = train_test_split(np.arange(len(images)), test_size=0.2, stratify=digits.target,
                                          random_state=0)
    return images, digits.target.astype(np.int64), np.sort(train_idx), np.sort(val_idx)


def _build_digits(size, train_size, val_size, seed):
    images, labels, train_idx, val_idx = _digits_arrays()
    x = torch.from_numpy(images)[:, None]  # N x 1 x 8 x 8 in [0, 1]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
    y = torch.from_numpy(labels)
    parts = {}
    for split, idx, cap, salt in (("train", train_idx, train_size, 1), ("val", val_idx, val_size, 2)):
        pick = _subset_indices(len(idx), cap, seed, salt)
        idx = torch.from_numpy(idx) if pick is None else torch.from_numpy(idx)[pick]
        parts[split] = (x[idx].contiguous(), y[idx].contiguous())
    mean = (float(parts["train"][0].mean()),)
    std = (float(parts["train"][0].std()),)
    shift = max(1, size // 16)
    train = TensorImages(*parts["train"], mean, std, max_shift=shift)
    val = TensorImages(*parts["val"], mean, std)
    info = DataInfo("digits", 10, 1, size, mean, std, len(train), len(val),
                    f"scikit-learn digits (8x8 grey, upsampled to {size}), fixed stratified 80/20 split, "
                    f"train shift augmentation up to {shift} px")
    return train, val, info


def _build_cifar(name, root, size, train_size, val_size, seed):
    import torchvision.datasets as tvd
    import torchvision.transforms as T

    cls_name, _, _, num_classes, mean, std = _CIFAR[name]
    root = _cifar_root(name, root)
    resize = [T.Resize(size, antialias=True)] if size != 32 else []
    pad = max(1, size // 8)
    train_tf = T.Compose(resize + [T.RandomCrop(size, padding=pad), T.RandomHorizontalFlip(), T.ToTensor(),
                                   T.Normalize(mean, std)])
    eval_tf = T.Compose(resize + [T.ToTensor(), T.Normalize(mean, std)])
    try:
        train = getattr(tvd, cls_name)(str(root), train=True, transform=train_tf, download=False)
        val = getattr(tvd, cls_name)(str(root), train=False, transform=eval_tf, download=False)
    except RuntimeError as err:  # torchvision's integrity check failed
        raise DataError(f"{name}: files under {str(root)!r} are unreadable or corrupt ({err}); "
                        f"{_layout_hint(name)}") from None
    train, val = _cap(train, train_size, seed, 1), _cap(val, val_size, seed, 2)
    info = DataInfo(name, num_classes, 3, size, mean, std, len(train), len(val),
                    f"{name.upper()} from {root} (validation = test batch), crop+flip augmentation")
    return train, val, info


def _build_imagefolder(root, size, train_size, val_size, seed, verify=False):
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
    from torchvision.datasets import ImageFolder

    classes = _imagefolder_classes(root)
    train_tf = create_transform(size, is_training=True)
    eval_tf = create_transform(size, is_training=False)
    datasets = {}
    for split, tf in (("train", train_tf), ("val", eval_tf)):
        try:
            datasets[split] = ImageFolder(str(root / split), transform=tf)
        except FileNotFoundError as err:
            raise DataError(f"imagefolder: {err}; {_layout_hint('imagefolder')} with files ending in "
                            f"{', '.join(_IMAGE_SUFFIXES[:4])} ...") from None
    train, val = _cap(datasets["train"], train_size, seed, 1), _cap(datasets["val"], val_size, seed, 2)
    if verify:
        _verify_images(datasets["train"], train)
        _verify_images(datasets["val"], val)
    info = DataInfo("imagefolder", len(classes), 3, size, tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD),
                    len(train), len(val), f"ImageFolder {root} ({len(classes)} classes), timm transforms")
    return train, val, info


def _verify_images(folder, subset: Dataset) -> None:
    """DataError naming the first image of `subset` (an ImageFolder or a Subset of one) that does not decode."""
    from PIL import Image

    indices = subset.indices if isinstance(subset, Subset) else range(len(folder.samples))
    for index in indices:
        path = folder.samples[index][0]
        try:
            with Image.open(path) as image:
                image.convert("RGB").getpixel((0, 0))
        except Exception as exc:  # noqa: BLE001  (PIL raises assorted types for broken files)
            raise DataError(f"imagefolder: {path} does not decode as an image ({type(exc).__name__}): remove or "
                            "replace it") from None
