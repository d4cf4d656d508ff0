"""A fixed, seeded set of photo-like JPEGs of mixed sizes.

Flat colours compress to almost nothing and would flatter the bytes path, pure noise does not
compress at all and would flatter the usual way. Photos sit in between: smooth gradients (sky,
walls), blurred shapes with edges (objects), and sensor noise. Sizes and qualities are the common
camera/web ones (400x300 .. 1024x768, landscape and portrait, JPEG quality 85-90), so the encoded
sizes land where real photos of those sizes do (tens to a few hundred KB).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZES: tuple[tuple[int, int], ...] = (
    (400, 300),
    (640, 480),
    (800, 600),
    (1024, 768),
    (768, 1024),
    (600, 800),
    (500, 375),
    (960, 720),
)
QUALITIES: tuple[int, ...] = (85, 88, 90)


@dataclass(frozen=True)
class BenchImage:
    name: str
    width: int
    height: int
    quality: int
    data: bytes  # the JPEG file


def photo_like(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """An RGB image with a smooth gradient, blurred shapes and noise (see module docstring)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height + 1.0) / 2.0
    top, bottom = rng.uniform(30, 230, size=(2, 3)).astype(np.float32)
    background = top + (bottom - top) * ramp[..., None]
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(6, 14))):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        x0, x1 = sorted(rng.uniform(-0.1, 1.1, size=2) * width)
        y0, y1 = sorted(rng.uniform(-0.1, 1.1, size=2) * height)
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            points = [
                (float(rng.uniform(0, width)), float(rng.uniform(0, height))) for _ in range(5)
            ]
            draw.polygon(points, fill=colour)
    # Soft edges as a lens gives them, then fine texture and sensor noise on top.
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(1.0, 3.0))))
    pixels = np.asarray(image, dtype=np.float32)
    texture = np.sin(xx / rng.uniform(3, 9)) * np.cos(yy / rng.uniform(3, 9)) * rng.uniform(4, 10)
    noise = rng.normal(0.0, rng.uniform(3.0, 7.0), size=pixels.shape)
    pixels = pixels + texture[..., None] + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def generate(
    count: int, seed: int = 5, sizes: Sequence[tuple[int, int]] = SIZES
) -> list[BenchImage]:
    """``count`` JPEGs, cycling through ``sizes``; the same arguments give the same bytes."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        width, height = sizes[index % len(sizes)]
        quality = QUALITIES[int(rng.integers(0, len(QUALITIES)))]
        out = io.BytesIO()
        photo_like(width, height, rng).save(out, format="JPEG", quality=quality)
        images.append(
            BenchImage(
                f"photo{index:03d}_{width}x{height}_q{quality}.jpg",
                width,
                height,
                quality,
                out.getvalue(),
            )
        )
    return images
