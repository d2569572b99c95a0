"""One image as the networks take it: a file or an array of any size, mode and depth turned into
a (C, H, W) uint8 array of a fixed size and channel count, optionally inverted. The image-folder
dataset decodes its files with this, and a saved model applies the same steps to raw input, so
training and prediction can never prepare an image two different ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainables.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
MAX_SIDE = 128  # the default size never exceeds this: small CNNs on CPU, not photo classifiers
# An image file is a few bytes of header saying how large it decodes: a 48 KB PNG can claim
# 20000 x 20000 pixels. hpsearch decodes at most this many (a 36-megapixel camera's photos pass),
# well below PIL's own limit (89 million, an error only at twice that), and says so by name first.
MAX_PIXELS = 40_000_000
MAX_ASKED_SIDE = 1024  # --image-size at most this a side: every image of a folder is held at that size


@dataclass(frozen=True)
class ImageFormat:
    """What every image becomes: `size` (H, W), `channels` (1 grey, 3 RGB), and `invert` for
    dark-on-light scans given to a network that learnt light-on-dark (e.g. MNIST digits)."""

    size: tuple[int, int]
    channels: int
    invert: bool = False

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 1:
            raise UserError(f"image size must be two positive integers H,W, got {self.size}", option="image_size",
                            fix="H,W (e.g. 28,28)")
        if max(self.size) > MAX_ASKED_SIDE:
            raise UserError(f"image size {self.size[0]},{self.size[1]} is more than {MAX_ASKED_SIDE} pixels a side "
                            "(every image is held in memory at that size; the networks here take small images)",
                            option="image_size", fix=f"H,W of at most {MAX_ASKED_SIDE} each (e.g. 64,64)")
        if self.channels not in (1, 3):
            raise UserError(f"images have 1 (grey) or 3 (colour) channels, not {self.channels}", option="channels",
                            fix="1 or 3")

    def to_dict(self) -> dict:
        return {"size": list(self.size), "channels": self.channels, "invert": self.invert}

    @classmethod
    def from_dict(cls, d: dict) -> "ImageFormat":
        return cls(tuple(int(v) for v in d["size"]), int(d["channels"]), bool(d.get("invert", False)))


def _too_large(path: str | Path, pixels: int | None) -> UserError:
    claimed = f" ({pixels / 1e6:,.0f} megapixels)" if pixels else ""
    return UserError(f"image {path} is larger than hpsearch decodes{claimed}: at most {MAX_PIXELS / 1e6:g} "
                     "megapixels; shrink it (the networks here take images of at most a few hundred pixels a side) "
                     "or leave it out")


def _opened(path: str | Path):
    """PIL's image of `path`, its header read and its size checked before any pixel is decoded."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, by name
            image = Image.open(path)
    except Image.DecompressionBombError:
        raise _too_large(path, None) from None
    w, h = image.size
    if w * h > MAX_PIXELS:
        image.close()
        raise _too_large(path, w * h)
    return image


def image_header(path: str | Path) -> tuple[int, int, str]:
    """(height, width, PIL mode) from the file's header (nothing decoded); one line naming the
    file when it cannot be read or is too large."""
    try:
        with _opened(path) as image:
            return image.height, image.width, image.mode
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds; each means the file cannot be read
        raise UserError(f"cannot read image {path}: {e}") from None


def open_image(path: str | Path):
    """A PIL image with its pixels read (so a truncated file fails here, naming the path)."""
    from PIL import UnidentifiedImageError

    try:
        with _opened(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"cannot read image {path}: {e}") from None


def _to_mode(image, channels: int):
    """Grey or RGB from any PIL mode: palettes expanded, alpha composited onto white (how a
    viewer shows a transparent scan), 16-bit and float images scaled to 8 bits."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(image, dtype=np.float64)
        span = a.max() - a.min()
        image = Image.fromarray(((a - a.min()) / (span if span > 0 else 1) * 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("L" if channels == 1 else "RGB")


def prepare(image, fmt: ImageFormat) -> np.ndarray:
    """A PIL image, a path, or an array (H, W), (H, W, C) or (C, H, W) with values 0-255 (or
    0-1 floats) -> (C, H, W) uint8 in `fmt`."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        image = open_image(image)
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(_as_hwc_uint8(image).squeeze(-1) if image.ndim == 2 or _channels_of(image) == 1
                                else _as_hwc_uint8(image))
    image = _to_mode(image, fmt.channels)
    h, w = fmt.size
    if image.size != (w, h):
        image = image.resize((w, h), Image.Resampling.BILINEAR)
    a = np.asarray(image, dtype=np.uint8)
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return 255 - a if fmt.invert else np.ascontiguousarray(a)


def _channels_of(a: np.ndarray) -> int:
    if a.ndim == 2:
        return 1
    return a.shape[0] if a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4) else a.shape[-1]


def _as_hwc_uint8(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:
        a = a[..., None]
    elif a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise UserError(f"an image array must be (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4; got {a.shape}")
    if a.dtype != np.uint8:
        a = np.asarray(a, dtype=np.float64)
        if not np.isfinite(a).all():
            raise UserError("an image array holds NaN or infinite values")
        a = np.clip(a * 255 if a.max() <= 1.0 else a, 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(a)
