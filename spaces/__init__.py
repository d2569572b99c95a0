"""The studies: importing this package imports (and so registers, see spaces/registry.py)
every study module. What a study is lives in spaces/study.py; shared space pieces in
spaces/blocks.py."""

from spaces import (  # noqa: F401
    cifar10_space,
    fashion_space,
    mnist_space,
    pixels_csv_space,
    tabular_csv_space,
    transfer_space,
)
