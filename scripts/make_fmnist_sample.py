"""Rebuild src/jestflow/assets/fashion_mnist_sample.npz from Debian's dataset-fashion-mnist.

Fashion-MNIST (Zalando Research) is MIT-licensed. We ship a class-balanced subset so that the demo
data works on any machine: 400 training and 100 test images per class.
Run: python scripts/make_fmnist_sample.py [/usr/share/datasets/fashion-mnist]
"""

import sys

import numpy as np

from jestflow.data.demo import read_idx_dir


def balanced(images, labels, per_class, rng):
    keep = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)])
    keep.sort()
    return images[keep], labels[keep]


def main() -> None:
    src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
    (xtr, ytr), (xte, yte) = read_idx_dir(src)
    rng = np.random.default_rng(0)
    xtr, ytr = balanced(xtr, ytr, 400, rng)
    xte, yte = balanced(xte, yte, 100, rng)
    np.savez_compressed(
        "src/jestflow/assets/fashion_mnist_sample.npz",
        train_images=xtr,
        train_labels=ytr,
        test_images=xte,
        test_labels=yte,
    )


if __name__ == "__main__":
    main()
