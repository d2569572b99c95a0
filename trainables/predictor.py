"""A saved model.pt as something to predict with: raw input in, class names and probabilities out.

model.pt carries an `input` description (plain types, so it loads with weights_only=True):
for image models the ImageFormat every image is brought to (size, channels, inversion) and, for
pixel-CSV data, the pixel columns by name; for tabular models the fitted TabularEncoder. Saving
(`describe_input`) and loading (`Predictor`) live together here so they cannot drift apart, and
both prepare input through the code training used (trainables/images.py, trainables/encoding.py),
so a model predicts on new data exactly as it was trained and tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from trainables.datasets import Dataset
from trainables.encoding import PixelColumns, TabularEncoder
from trainables.errors import UserError
from trainables.images import IMAGE_SUFFIXES, ImageFormat, prepare
from trainables.model import NetConfig, build_model, upgrade_state_dict

BATCH = 256
# A DataFrame of images: the column holding paths or arrays (or a frame's only column).
IMAGE_COLUMNS = ("image", "path", "file")


def describe_input(dataset: Dataset, input_shape: tuple[int, int, int]) -> dict[str, Any]:
    """What model.pt says about its input. Images default to the dataset's own size and channels,
    not inverted; a dataset read from image files says how it prepared them (`image_format`)."""
    encoding = dataset.encoding
    if isinstance(encoding, TabularEncoder):
        return {"kind": "tabular", "encoder": encoding.to_dict()}
    c, h, w = input_shape
    fmt = getattr(dataset, "image_format", None) or ImageFormat((h, w), c)
    described: dict[str, Any] = {"kind": "image", "format": fmt.to_dict()}
    if isinstance(encoding, PixelColumns):
        described["pixel_columns"] = encoding.to_dict()
    return described


class Prediction(NamedTuple):
    classes: list[str]  # the most probable class of each input
    probabilities: np.ndarray  # (N, K): each class's probability, in the model's class order


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """Image files, and the images in folders (recursively, sorted), in the order given."""
    files: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{path} not found; give image files, a folder of images or a CSV file")
    return files


@dataclass
class Predictor:
    net: nn.Module
    classes: tuple[str, ...]
    image_format: ImageFormat | None = None  # image models
    pixels: PixelColumns | None = None  # image models trained from pixel columns
    encoder: TabularEncoder | None = None  # tabular models (None: saved before models kept it)
    # What the network takes, where it differs from `image_format`: a transfer network's backbone
    # input, to which training converted the prepared images (trainables.transfer.adapt_dataset).
    input_shape: tuple[int, int, int] | None = None

    @property
    def tabular(self) -> bool:
        return self.image_format is None

    @classmethod
    def load(cls, path: str | Path) -> "Predictor":
        path = Path(path).expanduser()
        if not path.is_file():
            raise UserError(f"model file {path} not found; give an hpsearch model.pt or the study folder holding it")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file means the same to the user
            raise UserError(f"{path} is not a PyTorch model file ({type(e).__name__})") from None
        if not isinstance(blob, dict) or not {"state_dict", "config", "input_shape", "classes"} <= set(blob):
            raise UserError(f"{path} is not an hpsearch model.pt (no config, classes and weights)")
        config = NetConfig.from_flat(blob["config"])
        input_shape = tuple(int(v) for v in blob["input_shape"])
        classes = tuple(str(c) for c in blob["classes"])
        backbone = None
        if blob.get("backbone"):
            from trainables.transfer import Backbone

            backbone = Backbone.from_description(blob["backbone"])
        described = blob.get("input") if isinstance(blob.get("input"), dict) else {}
        tabular = described.get("kind") == "tabular" or (not described and blob.get("dataset") == "tabular_csv")
        net = build_model(config, input_shape, len(classes), backbone)  # type: ignore[arg-type]
        # A model.pt from before networks normalised their own input still loads.
        net.load_state_dict(upgrade_state_dict(blob["state_dict"], config.family, blob.get("mean", ()),
                                               blob.get("std", ()), 1.0 if tabular else 255.0))
        net.eval()
        if tabular:
            encoder = TabularEncoder.from_dict(described["encoder"]) if "encoder" in described else None
            return cls(net, classes, encoder=encoder)
        c, h, w = input_shape
        fmt = ImageFormat.from_dict(described["format"]) if "format" in described else ImageFormat((h, w), c)
        pixels = PixelColumns.from_dict(described["pixel_columns"]) if "pixel_columns" in described else None
        return cls(net, classes, image_format=fmt, pixels=pixels, input_shape=(c, h, w))

    def predict(self, raw) -> Prediction:
        """`raw`: image paths or a folder; an array of images (N, H, W), (N, H, W, C) or
        (N, C, H, W), uint8 or 0-1 floats, any size; a DataFrame of the original columns (tabular
        or pixel data) or of image paths/arrays; for tabular models also an array of rows."""
        probabilities = self.probabilities(self.inputs(raw))
        return Prediction([self.classes[i] for i in probabilities.argmax(1)], probabilities)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Network input (what `inputs` makes) -> (N, K) probabilities."""
        out = []
        with torch.no_grad():
            for start in range(0, len(x), BATCH):
                logits = self.net(torch.from_numpy(np.ascontiguousarray(x[start:start + BATCH])).float())
                out.append(torch.softmax(logits.float(), dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def inputs(self, raw) -> np.ndarray:
        """Raw input -> what the network takes: (N, C, H, W) uint8 images or (N, F, 1, 1) features."""
        if isinstance(raw, pd.DataFrame):
            return self._rows(raw) if self.tabular else self._image_frame(raw)
        if isinstance(raw, np.ndarray):
            return self._row_array(raw) if self.tabular else self._image_array(raw)
        if isinstance(raw, (str, Path)):
            raw = [raw]
        if isinstance(raw, (list, tuple)) and raw and all(isinstance(p, (str, Path)) for p in raw):
            if self.tabular:
                raise UserError(f"this model takes table rows (columns {', '.join(self._columns())}), not images")
            return self._images(image_files(raw))
        if isinstance(raw, (list, tuple)) and raw and not self.tabular:
            return self._images([np.asarray(a) for a in raw])
        raise UserError(f"cannot predict from {type(raw).__name__}; give image paths or a folder, a numpy array "
                        "or a pandas DataFrame")

    def _columns(self) -> list[str]:
        return [repr(c) for c in self.encoder.names[:10]] if self.encoder else ["unknown"]

    def _images(self, images: Sequence) -> np.ndarray:
        assert self.image_format is not None
        if not images:
            raise UserError("no images to predict")
        x = np.stack([prepare(image, self.image_format) for image in images])
        if self.input_shape is not None and x.shape[1:] != self.input_shape:
            from trainables.transfer import convert_images

            x = convert_images(x, self.input_shape)  # as training converted them for the backbone
        return x

    def _image_array(self, a: np.ndarray) -> np.ndarray:
        if a.ndim not in (3, 4) or len(a) == 0:
            raise UserError(f"an array of images must be (N, H, W), (N, H, W, C) or (N, C, H, W); got {a.shape}")
        return self._images(list(a))

    def _image_frame(self, frame: pd.DataFrame) -> np.ndarray:
        if self.pixels is not None and set(self.pixels.names) <= {str(c) for c in frame.columns}:
            return self.pixels.transform(frame)
        by_name = {str(c).strip().lower(): c for c in frame.columns}
        column = frame.columns[0] if frame.shape[1] == 1 else next(
            (by_name[n] for n in IMAGE_COLUMNS if n in by_name), None)
        if column is None:
            pixels = f"its {len(self.pixels.names)} pixel columns ({self.pixels.names[0]!r}...) or " if self.pixels \
                else ""
            raise UserError(f"the input's columns ({', '.join(map(str, frame.columns[:10]))}) are not images; give "
                            f"{pixels}one column named {' or '.join(IMAGE_COLUMNS)} of image paths or arrays")
        cells = []
        for value in frame[column]:
            if isinstance(value, (str, Path)):
                cells.append(Path(value).expanduser())
            elif isinstance(value, (np.ndarray, list, tuple)):
                cells.append(np.asarray(value))
            else:
                raise UserError(f"column {column!r} holds a {type(value).__name__}; each cell must be an image path "
                                "or an image array")
        return self._images(cells)

    def _rows(self, frame: pd.DataFrame) -> np.ndarray:
        if self.encoder is None:
            raise UserError("this model.pt was saved before models kept their columns; retrain it "
                            "(python -m search.train best.yaml) to predict from table rows")
        if frame.empty:
            raise UserError("no rows to predict")
        return self.encoder.transform(frame)

    def _row_array(self, a: np.ndarray) -> np.ndarray:
        if self.encoder is None:  # an old model: the array is taken as its encoded features
            return np.ascontiguousarray(a.reshape(len(a), -1, 1, 1).astype(np.float32))
        if a.ndim != 2 or a.shape[1] != len(self.encoder.names):
            raise UserError(f"an array of rows must be (N, {len(self.encoder.names)}): one value per column "
                            f"({', '.join(self._columns())}); got {a.shape}")
        return self._rows(pd.DataFrame(a, columns=list(self.encoder.names)))


def prediction_table(predictor: Predictor, raw) -> pd.DataFrame:
    """One row per input: `class`, its `probability`, and `probability.CLASS` for every class."""
    classes, probabilities = predictor.predict(raw)
    table = pd.DataFrame({"class": classes, "probability": probabilities.max(axis=1).astype(np.float64)})
    for i, name in enumerate(predictor.classes):
        table[f"probability.{name}"] = probabilities[:, i].astype(np.float64)
    return table
