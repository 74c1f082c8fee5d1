"""Images from a local folder for the reconstruction study: listing, seeded subsets, loading.

Everything is offline: images are read from disk with Pillow, centre-cropped to a square and
resized to the model's resolution, and returned as ``(C, R, R)`` float32 tensors in ``[-1, 1]``
(the range the diffusers VAEs and the pixel-space models of this package expect).

Subsets are chosen by a seeded hash ranking of the file names, so that the same seed and folder
always give the same images, the subset of ``n`` images is a prefix of the subset of any larger
``n`` (a study extended from 50 to 200 images reuses its first 50), and removing an unreadable
file does not shift the others.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: the image policy of every sub-command (study, gallery, rank, explain): a file that cannot be read
#: as an image (zero bytes, truncated, corrupt, over Pillow's decompression-bomb limit of
#: ``Image.MAX_IMAGE_PIXELS`` pixels, which is refused rather than warned about) makes
#: ``load_image`` raise ``ValueError``; the sub-command skips it with one warning line and a record.
#: File names are shown by ``shown_name`` (bytes that are not UTF-8 escaped as ``\\xNN``).

#: Pillow modes holding more than 8 bits per sample, rescaled by hand before conversion
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def list_images(folder: str | Path, *, extensions: Iterable[str] = IMAGE_EXTENSIONS,
                exclude: str | Path | None = None) -> list[Path]:
    """All image files under ``folder`` (recursively), sorted by path.

    Args:
        folder: the folder to search.
        extensions: accepted file suffixes, matched case-insensitively (``.PNG`` counts as
            ``.png``); a leading dot is optional.
        exclude: a folder whose files are left out (every sub-command passes its own output
            folder, so that ``--out`` inside ``--images`` never feeds a run its own outputs).

    Returns:
        The matching files, sorted by their path relative to ``folder`` (so the order does not
        depend on the file system or on where the folder is mounted). Hidden files (name starting
        with ``.``) are skipped.

    Raises:
        ValueError: if ``folder`` does not exist, is not a folder, or holds no images.
    """
    root = Path(folder)
    if not root.exists():
        raise ValueError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise ValueError(f"image folder {root} is not a folder")
    suffixes = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    skip = Path(exclude).resolve() if exclude is not None else None
    found = [
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
        and (skip is None or skip not in p.resolve().parents)
    ]
    if not found:
        raise ValueError(f"no images in {root}")
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def select_images(paths: Sequence[str | Path], n: int, seed: int, *, root: str | Path | None = None) -> list[Path]:
    """A seeded random subset of ``n`` images, stable under extension and under removal of others.

    Each path gets the rank ``sha256(f"{seed}:{name}")``, where ``name`` is its path relative to
    ``root`` (as given when ``root`` is ``None``); the ``n`` paths of lowest rank are returned,
    lowest first. Hence the same seed and the same set of paths give the same subset,
    ``select_images(p, n, s)`` is a prefix of ``select_images(p, m, s)`` for ``m > n``, and
    adding or removing a file never changes the order of the others: a corrupt file that is
    skipped, then deleted, leaves the rest of the subset as it was (its place goes to the next
    image), and the subset does not depend on where the folder is mounted when ``root`` is given.

    Args:
        paths: candidate images (e.g. from :func:`list_images`); order does not matter.
        n: how many to pick. If ``n`` exceeds ``len(paths)``, all of them are returned (in the
            seeded order) rather than raising, so "up to n images" works on small folders.
        seed: seed of the ranking.
        root: the folder the names are taken relative to (default: the paths as given).

    Returns:
        The chosen paths.

    Raises:
        ValueError: if ``n <= 0`` or ``paths`` is empty.
    """
    if n <= 0:
        raise ValueError(f"number of images must be positive, got {n}")
    ordered = sorted(Path(p) for p in paths)
    if not ordered:
        raise ValueError("no images to select from")
    base = Path(root) if root is not None else None

    def rank(p: Path) -> tuple[str, str]:
        name = shown_name(p.relative_to(base).as_posix() if base is not None else p.as_posix())
        return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest(), name  # UTF-8 names: unchanged ranks

    return sorted(ordered, key=rank)[: min(n, len(ordered))]


def file_digest(path: str | Path) -> str | None:
    """SHA-256 of a file's bytes (hex), or ``None`` if the file cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def shown_name(path: str | Path) -> str:
    """A file name as text that any stream can print and any UTF-8 file can hold: bytes of the name
    that are not UTF-8 (kept by Python as surrogates) are shown escaped, ``caf\\xe9.png``."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def center_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The ``(left, upper, right, lower)`` box of the largest centred square in a ``width x height`` image."""
    side = min(width, height)
    left = (width - side) // 2
    upper = (height - side) // 2
    return left, upper, left + side, upper + side


def load_image(path: str | Path, resolution: int, channels: int = 3) -> torch.Tensor:
    """Read an image as a ``(channels, resolution, resolution)`` float32 tensor in ``[-1, 1]``.

    The image is rotated by its EXIF orientation, converted to RGB (``channels=3``) or grayscale
    (``channels=1``) with any transparency composited onto white, centre-cropped to the largest
    square, and resized with Lanczos resampling (Pillow's resize is antialiased when shrinking).

    Args:
        path: the image file.
        resolution: side of the output square, in pixels.
        channels: 3 (RGB) or 1 (grayscale).

    Returns:
        The image, float32, values ``pixel / 127.5 - 1``.

    Raises:
        ValueError: for a bad ``resolution`` or ``channels``, or if the file cannot be read as an
            image (missing, corrupt, truncated, unsupported, over ``Image.MAX_IMAGE_PIXELS``, or a
            float image holding NaN or inf pixels): "cannot read image <path>: ..." (``shown_name``).
    """
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refused, not decoded
            with Image.open(path) as img:
                img.load()
                square = _prepare(img, "RGB" if channels == 3 else "L", resolution)
    except Exception as err:  # noqa: BLE001 - whatever a decoder raises on a damaged file
        why = shown_name(str(err).splitlines()[0] if str(err).strip() else type(err).__name__)
        raise ValueError(f"cannot read image {shown_name(path)}: {why}") from None
    array = np.asarray(square, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.transpose(2, 0, 1).copy()) / 127.5 - 1.0


def _prepare(img: Image.Image, mode: str, resolution: int) -> Image.Image:
    """Orient, convert to 8-bit ``mode``, centre-crop and resize an opened image."""
    img = ImageOps.exif_transpose(img)
    img = _to_mode(img, mode)
    img = img.crop(center_crop_box(*img.size))
    if img.size != (resolution, resolution):
        img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return img


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    """Convert to 8-bit ``"RGB"`` or ``"L"``: alpha onto white, wide integer/float modes rescaled."""
    if img.mode in _WIDE_MODES:
        wide = np.asarray(img, dtype=np.float64)
        if not np.isfinite(wide).all():
            raise ValueError("non-finite pixel values (NaN or inf); pfode reads only finite images")
        img = Image.fromarray(np.clip(np.rint(wide / _full_scale(wide, img.mode) * 255.0), 0, 255).astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert(mode)


def _full_scale(values: np.ndarray, mode: str) -> float:
    """The value that maps to white for a wide-mode image: its bit depth, or its maximum as a last resort."""
    top = float(values.max()) if values.size else 1.0
    if mode.startswith("I;16"):
        return 65535.0
    if mode == "F" and top <= 1.0:
        return 1.0
    for scale in (255.0, 65535.0):
        if top <= scale:
            return scale
    return top


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Convert ``[-1, 1]`` images to displayable uint8 arrays.

    Args:
        images: ``(C, H, W)`` or ``(N, C, H, W)`` with ``C`` in {1, 3}; values outside ``[-1, 1]``
            are clipped.

    Returns:
        ``(H, W, C)`` or ``(N, H, W, C)`` uint8 array (channel last, as matplotlib and Pillow want).

    Raises:
        ValueError: for another number of dimensions or channels.
    """
    if images.ndim not in (3, 4) or images.shape[-3] not in (1, 3):
        raise ValueError(f"expected (C, H, W) or (N, C, H, W) images with 1 or 3 channels, got {tuple(images.shape)}")
    array = images.detach().to("cpu", torch.float32).clamp(-1.0, 1.0).numpy()
    array = np.rint((array + 1.0) * 127.5).astype(np.uint8)
    return np.moveaxis(array, -3, -1)
