"""Model architectures by name. Keras is imported inside the builders, never at import time.

``worker-cnn`` is the default: batch norm, three conv blocks, trained with light augmentation
(shifts, small rotations and scaling). The others are the seeds' architectures, kept so their
numbers can be reproduced and compared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from worker.errors import ConfigError

INPUT_SHAPE = (28, 28, 1)


@dataclass(frozen=True)
class Arch:
    name: str
    build: Callable[[int], object]  # num_classes -> keras.Model
    augment: bool  # train with random shifts/rotations/zoom
    description: str


def _conv_bn_relu(x, filters: int, kernel: int, strides: int = 1, padding: str = "valid"):
    from keras import layers

    x = layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.ReLU()(x)


def _dense_head(x, num_classes: int, dropout: float):
    """Flatten, dropout, Dense128 with batch norm, dropout, softmax."""
    from keras import layers

    x = layers.Dropout(dropout)(layers.Flatten()(x))
    x = layers.Dense(128, use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    x = layers.Dropout(dropout)(layers.ReLU()(x))
    return layers.Dense(num_classes, activation="softmax")(x)


def _worker_cnn(num_classes: int, widths: tuple[int, int] = (32, 64), name: str = "worker_cnn"):
    """Two 3x3 convs then a strided 5x5 conv (a learned pooling) per block, batch norm after
    each: a well-tried MNIST design (about 15 M multiply-adds per image at 32/64 channels)."""
    import keras
    from keras import layers

    first, second = widths
    inputs = keras.Input(INPUT_SHAPE)
    x = _conv_bn_relu(inputs, first, 3)  # 26
    x = _conv_bn_relu(x, first, 3)  # 24
    x = _conv_bn_relu(x, first, 5, strides=2, padding="same")  # 12
    x = layers.Dropout(0.3)(x)
    x = _conv_bn_relu(x, second, 3)  # 10
    x = _conv_bn_relu(x, second, 3)  # 8
    x = _conv_bn_relu(x, second, 5, strides=2, padding="same")  # 4
    return keras.Model(inputs, _dense_head(x, num_classes, 0.3), name=name)


def _worker_cnn_slim(num_classes: int):
    """worker-cnn at 24/48 channels: 57 % of its compute; meant to learn from it (``--teacher``)."""
    return _worker_cnn(num_classes, (24, 48), "worker_cnn_slim")


def _worker_cnn_lite(num_classes: int):
    """Half the compute of worker-cnn: one conv then pooling per block."""
    import keras
    from keras import layers

    x = inputs = keras.Input(INPUT_SHAPE)
    for filters, kernel in ((32, 5), (64, 3), (128, 3)):  # 14x14, 7x7, 3x3
        x = layers.MaxPooling2D()(_conv_bn_relu(x, filters, kernel, padding="same"))
    return keras.Model(inputs, _dense_head(x, num_classes, 0.25), name="worker_cnn_lite")


def _seed_cnn(num_classes: int):
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            layers.Conv2D(32, 5, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="seed_cnn",
    )


def _seed_3conv(num_classes: int):
    import keras
    from keras import layers

    convs = []
    for _ in range(3):
        convs += [layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D()]
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            *convs,
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(32, activation="relu"),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="seed_3conv",
    )


def _lenet(num_classes: int):
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            layers.Conv2D(6, 5, padding="same", activation="relu"),
            layers.AveragePooling2D(2),
            layers.Conv2D(16, 5, activation="relu"),
            layers.AveragePooling2D(2),
            layers.Flatten(),
            layers.Dense(120, activation="relu"),
            layers.Dense(84, activation="relu"),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="lenet",
    )


def _fashion_cnn(num_classes: int):
    import keras
    from keras import layers

    def block(filters, dropout):
        return [
            layers.Conv2D(filters, 3, padding="same"),
            layers.LeakyReLU(negative_slope=0.1),
            layers.MaxPooling2D(padding="same"),
            layers.Dropout(dropout),
        ]

    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            *block(32, 0.25),
            *block(64, 0.25),
            *block(128, 0.4),
            layers.Flatten(),
            layers.Dense(128),
            layers.LeakyReLU(negative_slope=0.1),
            layers.Dropout(0.3),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="fashion_cnn",
    )


ARCHS = {
    a.name: a
    for a in (
        Arch("worker-cnn", _worker_cnn, True, "default: 2 blocks of 3x3, 3x3, 5x5/2 convs, batch norm"),
        Arch("worker-cnn-slim", _worker_cnn_slim, True, "worker-cnn at 24/48 channels"),
        Arch("worker-cnn-lite", _worker_cnn_lite, True, "3 conv+pool blocks with batch norm"),
        Arch("seed-cnn", _seed_cnn, False, "seed 001: Conv32 5x5, Conv32 3x3, Dense128"),
        Arch("seed-3conv", _seed_3conv, False, "seed 002: three Conv64 3x3, Dense64, Dense32"),
        Arch("lenet", _lenet, False, "seed 003: LeNet-5"),
        Arch("fashion-cnn", _fashion_cnn, False, "seed 004: LeakyReLU 32/64/128 convs"),
    )
}
DEFAULT_ARCH = "worker-cnn"


def get_arch(name: str) -> Arch:
    try:
        return ARCHS[name]
    except KeyError:
        raise ConfigError(f"unknown architecture {name!r}; choose one of: {', '.join(ARCHS)}") from None


def build(name: str, num_classes: int = 10):
    return get_arch(name).build(num_classes)
