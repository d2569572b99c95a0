"""The final model as MLflow logs it: an `mlflow.pyfunc` model logged from code
(search/tracking/mlflow_model.py, MLflow's models-from-code: no pickle) whose one artifact is model.pt,
taking raw input and returning a DataFrame of `class`, `probability` and `probability.CLASS`;
here, what goes with it: its input example, signature, requirements and code.

The model carries its own code: the trainables package is logged beside it (`code_paths`), so
loading it needs torch, pandas and Pillow but not hpsearch.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Iterator

import numpy as np

import trainables
from trainables.datasets import Dataset
from trainables.encoding import TabularEncoder

ARTIFACT = "model_pt"  # the name search/tracking/mlflow_model.py loads model.pt by
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")


def input_example(dataset: Dataset):
    """Two raw test inputs: tabular rows as their original columns, or uint8 images (N, C, H, W)."""
    if isinstance(dataset.encoding, TabularEncoder):
        return dataset.encoding.example(dataset.test.x)
    return np.ascontiguousarray(dataset.test.x[:2])


def signature(dataset: Dataset, example):
    """Tabular models: the columns the example shows. Image models: no input schema, since MLflow
    would then refuse every image size, channel count and dtype but the example's."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    outputs = Schema([ColSpec("string", "class"), ColSpec("double", "probability"),
                      *(ColSpec("double", f"probability.{c}") for c in dataset.info.classes)])
    inputs = infer_signature(example).inputs if isinstance(dataset.encoding, TabularEncoder) else None
    return ModelSignature(inputs=inputs, outputs=outputs)


def requirements() -> list[str]:
    names = ("torch", "torchvision", "numpy", "pandas", "pillow")
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in names]


@contextlib.contextmanager
def packaged() -> Iterator[list[str]]:
    """While logging: the code paths to log, a clean copy of the trainables package (no caches)."""
    with tempfile.TemporaryDirectory(prefix="hpsearch-code-") as tmp:
        code = Path(tmp) / "trainables"
        shutil.copytree(Path(trainables.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__"))
        yield [str(code)]
