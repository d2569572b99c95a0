"""The final model's code as MLflow logs and serves it, from code: MLflow copies this file into
the logged model and runs it when the model loads (`mlflow.models.set_model` below names the
model), so no pickled object is logged or loaded. Predictions come from
trainables.predictor.Predictor around the model's one artifact, model.pt: raw images of any size,
a DataFrame of the original columns or of image paths in; a DataFrame of `class`, `probability`
and `probability.CLASS` out.

It imports MLflow, pandas and `trainables` (logged beside it: search.tracking.pyfunc_model.packaged), never
hpsearch's `search` package, so the model loads where hpsearch is not installed. Only MLflow runs
this file; search.tracking.pyfunc_model gives its path."""

from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.models import set_model

ARTIFACT = "model_pt"  # search.tracking.pyfunc_model.ARTIFACT: this file may not import search


class HpsearchModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from trainables.predictor import Predictor

        self.predictor = Predictor.load(context.artifacts[ARTIFACT])

    # A DataFrame hint: MLflow then infers no schema from it and validates nothing by it (a schema
    # would refuse every image size but the example's); the logged signature describes the input.
    # An (N, C, H, W) array of images reaches predict unchanged, as before.
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from trainables.predictor import prediction_table

        return prediction_table(self.predictor, model_input)


set_model(HpsearchModel())
