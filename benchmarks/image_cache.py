"""The benchmark's inputs on disk, made once and reused: the generated JPEGs (one folder per count
and seed under the build directory) and the limit's decoded, resized pixels."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import images


@dataclass(frozen=True)
class ImageSet:
    folder: Path  # the JPEG files, which the limit process also reads (decode timing, parity)
    images: list[images.BenchImage]

    @property
    def data(self) -> list[bytes]:
        return [image.data for image in self.images]

    @property
    def mean_bytes(self) -> float:
        return sum(len(image.data) for image in self.images) / len(self.images)


def images_dir(build_dir: Path, count: int, seed: int) -> Path:
    return build_dir / "images" / f"seed{seed}-n{count}"


def bench_images(build_dir: Path, count: int, seed: int) -> ImageSet:
    """``count`` JPEGs from ``images.generate(count, seed)``, generated on the first run only."""
    folder = images_dir(build_dir, count, seed)
    files = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    if len(files) == count:
        cached = []
        for file in files:
            width, height, quality = parse_name(file.name)
            cached.append(images.BenchImage(file.name, width, height, quality, file.read_bytes()))
        return ImageSet(folder, cached)
    generated = images.generate(count, seed)
    folder.mkdir(parents=True, exist_ok=True)
    for image in generated:
        (folder / image.name).write_bytes(image.data)
    return ImageSet(folder, generated)


def parse_name(name: str) -> tuple[int, int, int]:
    """Width, height and JPEG quality from a generated file name (photo000_640x480_q88.jpg)."""
    stem = name.rsplit(".", 1)[0]
    _, size, quality = stem.split("_")
    width, height = size.split("x")
    return int(width), int(height), int(quality.lstrip("q"))


def write_pixels(data: Sequence[bytes], size: int, path: Path) -> Path:
    """Decoded, resized uint8 pixels for the limit (the same nearest resize the graph does)."""
    import numpy as np
    from PIL import Image

    arrays = []
    for item in data:
        with Image.open(io.BytesIO(item)) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.NEAREST)
            arrays.append(np.asarray(rgb, dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.stack(arrays))
    return path
