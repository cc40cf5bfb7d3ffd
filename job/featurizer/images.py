"""Image bytes -> 224x224 RGB arrays for MobileNetV2. Pure Python, no Spark.

Every file either becomes a uint8 (224, 224, 3) array or an `ImageError` whose message
is recorded in errors/; nothing in here may crash a whole batch.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

SIZE = 224
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png")
# Refuse images above this many pixels before decoding them (decompression bombs): Pillow's
# own limit (~89 MP, ~3.7x a 6000x4000 photo) keeps a worker's peak memory bounded.
MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485
_OBJECT_REPR = re.compile(r" <[\w.]+ object at 0x[0-9a-fA-F]+>")


class ImageError(ValueError):
    """A file that cannot be turned into an image; the message says why."""


def is_image_name(name: str) -> bool:
    """True for files Spark lists (not hidden) with an image extension (case-insensitive)."""
    base = name.rsplit("/", 1)[-1]
    return not hidden(base) and base.lower().endswith(tuple("." + ext for ext in IMAGE_EXTENSIONS))


def hidden(name: str) -> bool:
    """Names Spark's file index skips (HadoopFSUtils.shouldFilterOutPathName): `.` and `_`
    names, but `_` names with a `=` (partition folders) and Parquet's `_metadata` files."""
    excluded = (
        (name.startswith("_") and "=" not in name)
        or name.startswith(".")
        or name.endswith("._COPYING_")
    )
    return excluded and not name.startswith(("_common_metadata", "_metadata"))


def decode(data: bytes | None) -> np.ndarray:
    """Decode one file to a uint8 (224, 224, 3) RGB array, or raise ImageError."""
    if not data:
        raise ImageError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"image too large: {width}x{height} pixels (limit {MAX_PIXELS:,})")
            # JPEG can decode at 1/2, 1/4, 1/8 scale for free: big photos stay cheap.
            image.draft("RGB", (SIZE, SIZE))
            if image.format != "JPEG" or "exif" in image.info:  # a JPEG's EXIF is read at open
                image = ImageOps.exif_transpose(image)  # 3% of a worker's CPU, even without EXIF
            rgb = _to_rgb(image)
            rgb = rgb.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except ImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageError(f"image too large (decompression bomb guard): {exc}") from None
    except Exception as exc:  # Pillow raises many types for corrupt data
        # Without the in-memory file's repr (an address): the same file, the same reason.
        reason = _OBJECT_REPR.sub("", str(exc))
        raise ImageError(f"{type(exc).__name__}: {reason}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; 16-bit and float images are scaled, not clipped."""
    if image.mode == "RGB":
        return image  # convert() would copy it
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = float(array.max()) or 1.0
        image = Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency on white instead of on black garbage.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def preprocess(batch: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 (n, 224, 224, 3) -> float32 in [-1, 1] (keras mobilenet_v2.preprocess_input:
    x / 127.5 - 1 in float32), into `out` if given (an engine's input). Cast, divide and
    subtract as three passes over `out`: the same values as a division that casts as it
    goes, which numpy does in small buffered chunks (0.115 -> 0.09 ms an image)."""
    out = np.empty(batch.shape, np.float32) if out is None else out[: len(batch)]
    out[...] = batch
    np.divide(out, np.float32(127.5), out=out)
    return np.subtract(out, np.float32(1.0), out=out)


def decode_many(contents: Sequence[bytes | None]) -> tuple[np.ndarray, list[str | None]]:
    """Decode a batch. Returns the uint8 images of the good files (in order, one array)
    and one error message (or None) per input."""
    stacked = np.empty((len(contents), SIZE, SIZE, 3), np.uint8)
    errors: list[str | None] = []
    good = 0
    for data in contents:
        try:
            stacked[good] = decode(data)
            good += 1
            errors.append(None)
        except ImageError as exc:
            errors.append(str(exc))
    return stacked[:good], errors
