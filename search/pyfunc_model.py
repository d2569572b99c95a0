"""The final model as MLflow logs it: an `mlflow.pyfunc` model whose one artifact is model.pt and
whose predict takes raw input (trainables.predictor.Predictor: images of any size, a DataFrame of
the original columns or of image paths) and returns a DataFrame of `class`, `probability` and
`probability.CLASS`.

The model carries its own code: this class is pickled by value and the trainables package is
logged beside it (`code_paths`), so loading it needs torch, pandas and Pillow but not hpsearch.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Iterator

import mlflow.pyfunc
import numpy as np

import trainables
from trainables.datasets import Dataset
from trainables.encoding import TabularEncoder

ARTIFACT = "model_pt"


class HpsearchModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from trainables.predictor import Predictor

        self.predictor = Predictor.load(context.artifacts[ARTIFACT])

    def predict(self, context, model_input, params=None):
        from trainables.predictor import prediction_table

        return prediction_table(self.predictor, model_input)


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
    """While logging: this module pickled by value (not as a reference to hpsearch's `search`
    package) and the code paths to log, a clean copy of the trainables package."""
    import cloudpickle

    module = sys.modules[__name__]
    with tempfile.TemporaryDirectory(prefix="hpsearch-code-") as tmp:
        code = Path(tmp) / "trainables"
        shutil.copytree(Path(trainables.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__"))
        cloudpickle.register_pickle_by_value(module)
        try:
            yield [str(code)]
        finally:
            cloudpickle.unregister_pickle_by_value(module)
