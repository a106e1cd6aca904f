"""MNIST-shaped digits without a download: scikit-learn's 8x8 digits (0..16 per pixel) made
28x28 (784 features in 0..1, deploy/kserve/sklearn-mnist.yaml's shape). Each pixel becomes a
3x3 block, with a 2-pixel border: 3*8 + 2*2 = 28.

Shared by model_server.py (which trains sklearn-mnist on them) and the tests (which send them).
"""

from __future__ import annotations

import numpy as np
from sklearn import datasets

SCALE, BORDER, SIDE = 3, 2, 28


def mnist_pixels(images) -> np.ndarray:
    """MNIST-shaped rows (784 values in 0..1) of 8x8 digit images."""
    big = np.kron(np.asarray(images, dtype=float) / 16.0, np.ones((SCALE, SCALE)))
    big = np.pad(big, ((0, 0), (BORDER, BORDER), (BORDER, BORDER)))
    return big.reshape(len(big), SIDE * SIDE)


def digit_pixels(rows) -> np.ndarray:
    """The inverse of mnist_pixels: each 3x3 block's mean, the 64 features the model fits.
    (A linear model fitted on the 784 upsampled features takes ~10 s on two cores; on the
    block means it is instant and predicts the same images.)"""
    rows = np.asarray(rows, dtype=float).reshape(-1, SIDE, SIDE)
    inner = rows[:, BORDER:-BORDER, BORDER:-BORDER]
    return inner.reshape(-1, 8, SCALE, 8, SCALE).mean(axis=(2, 4)).reshape(-1, 64)


def load():
    """scikit-learn's digits: (images 8x8, labels)."""
    digits = datasets.load_digits()
    return digits.images, digits.target


def image(index: int) -> tuple[list, int]:
    """Digit `index` as a 28x28x1 image (nested lists, as ART's explainer reads an image) and
    its label."""
    images, labels = load()
    pixels = mnist_pixels(images[index : index + 1])[0].reshape(SIDE, SIDE, 1)
    return pixels.tolist(), int(labels[index])
