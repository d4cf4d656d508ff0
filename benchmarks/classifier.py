"""A non-degenerate Xception classifier for measuring what a precision change costs.

`--weights random` gives uniform probabilities, so any precision looks perfect on it. This builds,
from a fixed seed and in well under a minute on 2 cores, a model whose outputs depend on the image
the way a trained one's do:

1. Keras Xception without its top, random weights. Its BatchNormalization statistics are then
   calibrated on generated images (one forward pass in training mode with momentum 0), so every
   layer's activations are normalized per channel as in a trained network instead of shrinking to
   ~1e-5 and going constant.
2. A 10-class linear head (the fine-tuned kind: global pooling, `Dense(10)` logits) trained by
   softmax regression on the pooled features of generated images of 10 synthetic classes (striped
   textures that differ in hue, angle and frequency).

Run as ``python -m benchmarks.classifier OUT_DIR [--image-size S]``; it writes
``OUT_DIR/classifier.keras``, ``OUT_DIR/labels.txt`` and prints one JSON line with the training
accuracy. TensorFlow is imported here only, never in the benchmark client's process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = 10
TRAIN_PER_CLASS = 8
CALIBRATION_IMAGES = 24
SEED = 17


def textures(count_per_class: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, S, S, 3] striped textures and their class ids; classes differ in hue, stripe
    angle and frequency, each image has a random phase, contrast and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images, labels = [], []
    for k in range(CLASSES):
        hue = np.array([np.cos(2 * np.pi * k / CLASSES + s) for s in (0.0, 2.1, 4.2)])
        colour = 128 + 90 * hue.astype(np.float32)
        angle = np.pi * k / CLASSES
        frequency = 3 + 2 * (k % 3)
        for _ in range(count_per_class):
            phase = rng.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi * frequency * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
            contrast = rng.uniform(0.5, 1.0)
            image = colour * (1 + 0.4 * contrast * wave[..., None])
            image = image + rng.normal(0, 10, size=image.shape)
            images.append(np.clip(image, 0, 255).astype(np.uint8))
            labels.append(k)
    return np.stack(images), np.array(labels)


def _preprocess(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def calibrate_batch_norm(model: Any, x: np.ndarray) -> None:
    """Set every BatchNormalization's moving statistics to the batch statistics of ``x``."""
    import keras

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(layers, saved, strict=True):
        layer.momentum = momentum


def softmax_regression(
    features: np.ndarray, labels: np.ndarray, steps: int = 400
) -> tuple[np.ndarray, np.ndarray, float]:
    """Weights and bias of a linear softmax classifier on standardized features, folded back so
    they apply to the raw features; plus the training accuracy."""
    mean = features.mean(axis=0)
    std = features.std(axis=0) + 1e-6
    z = (features - mean) / std
    onehot = np.eye(CLASSES)[labels]
    weights = np.zeros((z.shape[1], CLASSES))
    bias = np.zeros(CLASSES)
    for _ in range(steps):  # full-batch gradient descent with a little L2
        logits = z @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        grad = (probs - onehot) / len(z)
        weights -= 0.5 * (z.T @ grad + 1e-3 * weights)
        bias -= 0.5 * grad.sum(axis=0)
    accuracy = float(((z @ weights + bias).argmax(axis=1) == labels).mean())
    folded_weights = weights / std[:, None]
    folded_bias = bias - mean @ folded_weights
    return folded_weights.astype(np.float32), folded_bias.astype(np.float32), accuracy


def build(out_dir: Path, image_size: int) -> dict[str, Any]:
    import keras

    keras.utils.set_random_seed(SEED)
    base = keras.applications.Xception(
        weights=None, include_top=False, input_shape=(image_size, image_size, 3)
    )
    calibration, _ = textures(max(1, CALIBRATION_IMAGES // CLASSES), image_size, SEED + 1)
    calibrate_batch_norm(base, _preprocess(calibration))
    pixels, labels = textures(TRAIN_PER_CLASS, image_size, SEED)
    pooled = keras.Model(base.input, keras.layers.GlobalAveragePooling2D()(base.output))
    features = pooled.predict(_preprocess(pixels), batch_size=8, verbose=0).astype(np.float64)
    weights, bias, accuracy = softmax_regression(features, labels)
    head = keras.layers.Dense(CLASSES, name="logits")  # linear: the export adds softmax
    model = keras.Model(base.input, head(pooled.output))
    head.set_weights([weights, bias])
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "classifier.keras")
    (out_dir / "labels.txt").write_text("".join(f"texture-{k}\n" for k in range(CLASSES)))
    return {
        "train_accuracy": accuracy,
        "train_images": len(labels),
        "classes": CLASSES,
        "seed": SEED,
        "image_size": image_size,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--image-size", type=int, default=299)
    args = parser.parse_args(argv)
    print(json.dumps(build(args.out_dir, args.image_size)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
