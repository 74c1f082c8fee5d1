r"""Offline image datasets for training small pixel-space flow-matching models.

Every dataset ships with an installed package, so nothing is downloaded. Images are returned as
float32 tensors in ``[-1, 1]`` of shape ``(K, C, S, S)``, resized to the requested side ``S``
(bilinear with antialiasing, then clamped to ``[-1, 1]``):

- ``digits``: scikit-learn's ``load_digits`` (1797 grey 8 x 8 digits, values ``0..16`` mapped
  to ``v / 8 - 1``), ``C = 1``, with class labels ``0..9``.
- ``faces``: the 100 *face* images of scikit-image's ``data.lfw_subset()`` (grey 25 x 25,
  values in ``[0, 1]`` mapped to ``2 v - 1``; the subset's other 100 images are non-faces and
  are not used), ``C = 1``.
- ``patches``: random square patches cut from scikit-image's bundled colour photographs
  (``astronaut``, ``coffee``, ``chelsea``, ``rocket``, ``immunohistochemistry``), ``C = 3``.
  Grey-level photographs (``camera``, ``coins``, ...) are skipped so that every patch is a
  genuine RGB image. A patch covers ``max(S, 32)`` source pixels (so small sizes see
  down-sampled texture, not single flat pixels) and is resized to ``S``.

Train / held-out split (deterministic given ``seed``):

- ``digits``, ``faces``: a seeded permutation ``pi`` of all image indices; the held-out images
  are ``pi[:H]`` and the training images ``pi[H:H + K]``, so the held-out set does not change
  when ``K`` changes.
- ``patches``: each photograph's columns are split once: the right-most quarter is the
  held-out region, the rest the training region, so held-out and training patches never share a
  pixel. Distinct patch positions are drawn without replacement (seeded) from each region,
  the photograph chosen in proportion to its number of positions.

``Dataset.split`` records this definition (JSON-serialisable), and ``dataset_from_split``
rebuilds the very same images from it, so a study can take the held-out images as its ``p_r``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from largemodel.training.datasets import DATASETS, DEFAULT_SIZE  # re-exported

__all__ = [
    "DATASETS",
    "DEFAULT_SIZE",
    "NATIVE_SIZE",
    "PATCH_PHOTOS",
    "Dataset",
    "available_images",
    "dataset_from_split",
    "load_dataset",
    "resize_images",
    "resolve_counts",
]


#: native side of each dataset's images (patches: none, the default size)
NATIVE_SIZE = {"digits": 8, "faces": 25, "patches": 16}

#: default number of held-out images per dataset
DEFAULT_HELDOUT = {"digits": 256, "faces": 20, "patches": 256}

#: default number of training images of ``patches`` (there is no natural "all" for it)
DEFAULT_PATCH_TRAIN = 4096

#: scikit-image colour photographs the ``patches`` dataset cuts from
PATCH_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")

#: smallest number of source pixels a patch covers (see the module docstring)
PATCH_MIN_SOURCE = 32

#: fraction of each photograph's columns (right-most) reserved for held-out patches
PATCH_HELDOUT_FRACTION = 0.25

MIN_SIZE, MAX_SIZE = 2, 128

#: number of faces at the start of ``lfw_subset()`` (the next 100 are non-faces)
LFW_FACES = 100


@dataclass
class Dataset:
    """A train / held-out split of one offline dataset.

    Attributes:
        train: training images ``(K, C, S, S)``, float32 in ``[-1, 1]``.
        heldout: held-out images ``(H, C, S, S)``, float32 in ``[-1, 1]``.
        labels_train: class labels ``(K,)`` (int64) for ``digits``, else ``None``.
        labels_heldout: class labels ``(H,)`` for ``digits``, else ``None``.
        channels: ``C`` (1 for grey, 3 for RGB).
        name: the dataset's name.
        split: the split's definition (JSON-serialisable; see ``dataset_from_split``).
    """

    train: Tensor
    heldout: Tensor
    labels_train: Tensor | None
    labels_heldout: Tensor | None
    channels: int
    name: str
    split: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Image side ``S`` in pixels."""
        return int(self.train.shape[-1])


# ---- validation ---------------------------------------------------------------------------
def _check_int(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_name(name: Any) -> str:
    if name not in DATASETS:
        raise ValueError(f"data must be one of {', '.join(DATASETS)}, got {name!r}")
    return str(name)


def _check_size(size: Any) -> int:
    s = _check_int(size, "size", minimum=MIN_SIZE)
    if s > MAX_SIZE:
        raise ValueError(f"size must be at most {MAX_SIZE} pixels, got {s}")
    return s


# ---- resizing -----------------------------------------------------------------------------
def resize_images(images: Tensor, size: int) -> Tensor:
    """Resize ``(K, C, h, w)`` images in ``[-1, 1]`` to ``(K, C, size, size)``.

    Bilinear interpolation with antialiasing (a convex combination of pixels, so the range is
    kept; the result is clamped to ``[-1, 1]`` against rounding). Same size: a float32 copy.
    """
    x = images.to(torch.float32)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(-1.0, 1.0).contiguous()


# ---- raw sources --------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.asarray(d.images, dtype=np.float32) / 8.0 - 1.0
    labels = np.asarray(d.target, dtype=np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _digits_raw() -> tuple[Tensor, Tensor]:
    """All 1797 digits as ``(1797, 1, 8, 8)`` in ``[-1, 1]`` and their labels (fresh copies)."""
    images, labels = _digits_arrays()
    return torch.tensor(images)[:, None], torch.tensor(labels)


def _faces_raw() -> Tensor:
    """The 100 LFW faces as ``(100, 1, 25, 25)`` in ``[-1, 1]``."""
    from skimage.data import lfw_subset

    faces = np.asarray(lfw_subset()[:LFW_FACES], dtype=np.float32)
    return torch.from_numpy(2.0 * faces - 1.0)[:, None]


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    """A bundled scikit-image colour photograph as float32 ``(H, W, 3)`` in ``[-1, 1]`` (cached; read-only)."""
    from skimage import data as skdata

    img = np.asarray(getattr(skdata, name)())
    if img.ndim != 3 or img.shape[2] < 3:
        raise RuntimeError(f"skimage.data.{name} is not a colour photograph: shape {img.shape}")
    out = img[..., :3].astype(np.float32) / 127.5 - 1.0
    out.setflags(write=False)
    return out


def available_images(name: str, size: int) -> int:
    """Total number of distinct images of dataset ``name`` at side ``size`` (train + held-out).

    For ``patches`` this is the number of distinct patch positions in the training region
    plus those in the held-out region.
    """
    name, size = _check_name(name), _check_size(size)
    if name == "digits":
        return 1797
    if name == "faces":
        return LFW_FACES
    train_pos, held_pos = _patch_positions(size)
    return int(train_pos.sum() + held_pos.sum())


# ---- patches ------------------------------------------------------------------------------
def _patch_source(size: int) -> int:
    return max(size, PATCH_MIN_SOURCE)


def _photo_shapes() -> list[tuple[int, int]]:
    return [tuple(_photo(n).shape[:2]) for n in PATCH_PHOTOS]  # type: ignore[misc]


def _regions(width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Column ranges ``[a, b)`` of the training and held-out regions of a photograph."""
    cut = int(round(width * (1.0 - PATCH_HELDOUT_FRACTION)))
    return (0, cut), (cut, width)


def _patch_positions(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per photograph, the number of patch positions in its training and held-out regions.

    Raises:
        ValueError: a patch of ``size`` (``max(size, 32)`` source pixels) does not fit in some
            photograph's held-out region.
    """
    src = _patch_source(size)
    train, held = [], []
    for name, (h, w) in zip(PATCH_PHOTOS, _photo_shapes()):
        counts = []
        for a, b in _regions(w):
            if src > h or src > b - a:
                raise ValueError(
                    f"size {size} too large for patches: a {src}-pixel patch does not fit in the "
                    f"{b - a} x {h} region of photograph {name!r}"
                )
            counts.append((h - src + 1) * (b - a - src + 1))
        train.append(counts[0])
        held.append(counts[1])
    return np.asarray(train, dtype=np.int64), np.asarray(held, dtype=np.int64)


def _cut_patches(region: int, count: int, size: int, rng: np.random.Generator) -> Tensor:
    """``count`` distinct patches from region ``region`` (0 = training, 1 = held-out)."""
    src = _patch_source(size)
    counts = _patch_positions(size)[region]
    flat = np.sort(rng.choice(int(counts.sum()), size=count, replace=False))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    out = []
    for p, name in enumerate(PATCH_PHOTOS):
        idx = flat[(flat >= bounds[p]) & (flat < bounds[p + 1])] - bounds[p]
        if idx.size == 0:
            continue
        img = _photo(name)
        a, b = _regions(img.shape[1])[region]
        cols = b - a - src + 1
        rows, offs = idx // cols, idx % cols + a
        crops = np.stack([img[r:r + src, c:c + src] for r, c in zip(rows, offs)])
        out.append(resize_images(torch.from_numpy(crops).permute(0, 3, 1, 2), size))
    patches = torch.cat(out)
    # interleave photographs (the draw order above is sorted by photograph)
    perm = torch.from_numpy(rng.permutation(patches.shape[0]))
    return patches[perm].contiguous()


# ---- the public loader --------------------------------------------------------------------
def resolve_counts(name: str, size: int, train_images: Any, heldout_images: Any) -> tuple[int, int]:
    """Validated ``(K, H)`` = (training, held-out) image counts; ``None`` means the default.

    Raises:
        ValueError: see ``load_dataset``.
    """
    name, size = _check_name(name), _check_size(size)
    held = DEFAULT_HELDOUT[name] if heldout_images is None else _check_int(heldout_images, "heldout_images", minimum=0)
    total = available_images(name, size)
    if name == "patches":
        train_pos, held_pos = (int(c.sum()) for c in _patch_positions(size))
        if held > held_pos:
            raise ValueError(f"heldout_images={held} but the held-out region has only {held_pos} patch positions")
        train = DEFAULT_PATCH_TRAIN if train_images is None else _check_int(train_images, "train_images", minimum=1)
        if train > train_pos:
            raise ValueError(f"train_images={train} but the training region has only {train_pos} patch positions")
        return train, held
    if held >= total:
        raise ValueError(f"heldout_images={held} leaves no training images: {name} has {total} images")
    train = total - held if train_images is None else _check_int(train_images, "train_images", minimum=1)
    if train + held > total:
        raise ValueError(
            f"train_images={train} + heldout_images={held} = {train + held} exceeds the {total} images of {name}"
        )
    return train, held


def load_dataset(
    name: str,
    size: int,
    *,
    train_images: int | None = None,
    heldout_images: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Load dataset ``name`` at side ``size`` with a seeded train / held-out split.

    Args:
        name: ``"digits"``, ``"faces"`` or ``"patches"``.
        size: image side ``S`` in pixels (2 to 128; for ``patches`` also small enough for a
            patch to fit in every photograph's held-out region).
        train_images: number ``K`` of training images; ``None`` = all images not held out
            (``digits``, ``faces``) or 4096 (``patches``).
        heldout_images: number ``H`` of held-out images; ``None`` = 256 (``digits``,
            ``patches``) or 20 (``faces``).
        seed: seed of the split (and of the patch positions).

    Returns:
        The ``Dataset``; its ``split`` holds the arguments and, for ``digits`` and ``faces``,
        the source indices of both parts.

    Raises:
        ValueError: unknown ``name``; ``size`` not an integer in range; ``train_images`` or
            ``heldout_images`` not a valid count or more than the dataset holds.
    """
    name, size = _check_name(name), _check_size(size)
    seed = _check_int(seed, "seed", minimum=0)
    k, h = resolve_counts(name, size, train_images, heldout_images)
    split: dict[str, Any] = {"data": name, "size": size, "train_images": k, "heldout_images": h, "seed": seed}
    rng = np.random.default_rng(seed)
    if name == "patches":
        split["rule"] = (
            f"random distinct patches of {_patch_source(size)} source pixels resized to {size}; held-out "
            f"from the right-most {PATCH_HELDOUT_FRACTION:.0%} of columns of {', '.join(PATCH_PHOTOS)}"
        )
        train, held = _cut_patches(0, k, size, rng), _cut_patches(1, h, size, rng)
        return Dataset(train, held, None, None, 3, name, split)
    images, labels = _digits_raw() if name == "digits" else (_faces_raw(), None)
    perm = rng.permutation(images.shape[0])
    held_idx, train_idx = perm[:h], perm[h:h + k]
    split["rule"] = "seeded permutation pi of all indices: held-out pi[:H], train pi[H:H+K]"
    split["heldout_indices"] = [int(i) for i in held_idx]
    split["train_indices"] = [int(i) for i in train_idx]
    images = resize_images(images, size)
    ti, hi = torch.from_numpy(train_idx), torch.from_numpy(held_idx)
    return Dataset(
        train=images[ti].contiguous(),
        heldout=images[hi].contiguous(),
        labels_train=None if labels is None else labels[ti],
        labels_heldout=None if labels is None else labels[hi],
        channels=1,
        name=name,
        split=split,
    )


def dataset_from_split(split: dict[str, Any]) -> Dataset:
    """Rebuild the ``Dataset`` a ``split`` definition (``Dataset.split``) describes.

    Raises:
        ValueError: ``split`` lacks a key or names an invalid dataset or count.
    """
    missing = {"data", "size", "train_images", "heldout_images", "seed"} - set(split)
    if missing:
        raise ValueError(f"split definition lacks {sorted(missing)}")
    return load_dataset(
        split["data"], split["size"], train_images=split["train_images"],
        heldout_images=split["heldout_images"], seed=split["seed"],
    )
