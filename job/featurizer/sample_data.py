"""A small deterministic synthetic data set in the Fruits-360 layout.

`<dir>/<Training|Test>/<Class Name>/<n>_100.jpg`, 100x100 JPEGs of drawn "fruits" on a
white background (like Fruits-360's photos). The same seed gives byte-identical files.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# name -> (body colour RGB, width/height ratio of the body)
CLASSES: dict[str, tuple[tuple[int, int, int], float]] = {
    "Apple Red": ((190, 30, 35), 1.0),
    "Banana": ((235, 205, 60), 2.6),
    "Lemon Meyer": ((245, 225, 80), 1.3),
    "Grape Blue": ((70, 50, 120), 0.85),
    "Kiwi": ((120, 90, 50), 1.15),
}
SPLITS = {"Training": 16, "Test": 4}


def draw_fruit(rng: np.random.Generator, colour: tuple[int, int, int], ratio: float) -> bytes:
    """One 100x100 JPEG: a shaded ellipse with jittered colour, size, pose and a stem."""
    image = Image.new("RGB", (100, 100), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    height = rng.uniform(38, 60) if ratio < 2 else rng.uniform(22, 30)
    width = min(height * ratio, 92)
    cx, cy = 50 + rng.uniform(-8, 8), 52 + rng.uniform(-8, 8)
    jitter = rng.integers(-25, 26, size=3)
    body = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(colour, jitter))
    box = (cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2)
    draw.ellipse(box, fill=body)
    highlight = tuple(min(255, c + 60) for c in body)
    hx, hy = cx - width / 5, cy - height / 5
    draw.ellipse((hx - width / 8, hy - height / 8, hx + width / 8, hy + height / 8), fill=highlight)
    draw.line(
        (cx, cy - height / 2, cx + rng.uniform(-4, 4), cy - height / 2 - 8),
        fill=(80, 60, 30),
        width=3,
    )
    image = image.rotate(float(rng.uniform(-30, 30)), fillcolor=(255, 255, 255))
    image = image.filter(ImageFilter.GaussianBlur(0.6))
    noise = rng.normal(0, 4, size=(100, 100, 3))
    array = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def generate(folder: str | Path, seed: int = 360, scale: int = 1) -> int:
    """Write the data set (scale x the default size); returns the number of images."""
    root = Path(folder)
    rng = np.random.default_rng(seed)
    written = 0
    for split, per_class in SPLITS.items():
        for name, (colour, ratio) in CLASSES.items():
            target = root / split / name
            target.mkdir(parents=True, exist_ok=True)
            for index in range(per_class * scale):
                (target / f"{index}_100.jpg").write_bytes(draw_fruit(rng, colour, ratio))
                written += 1
    return written
