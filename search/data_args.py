"""The data options shared by `search.run` and `search.train`: which dataset (a registered one,
CSV files, or a folder of the user's images), where it is, and the backbone a transfer study
fine-tunes. Parsed into a
`DataSpec` (saved with the study and in best.yaml) and loaded in one place, so a study, its
resume and its retrain all see the same data."""

from __future__ import annotations

from dataclasses import dataclass

from search.cli import Parser
from search.util.progress import say
from trainables.data import DataSpec, load_data
from trainables.dataset_registry import dataset_entry, dataset_names, holds_dataset
from trainables.datasets import IMAGE_FOLDER, Dataset
from trainables.errors import UserError
from trainables.folders import looks_like_image_folder


def add_data_arguments(p: Parser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", default=None,
                   help="dataset root holding e.g. FashionMNIST/raw/ (default: $HPSEARCH_DATA_DIR, "
                        "Debian's dataset package, the user cache, else download), or a folder of your "
                        "own images: one sub-folder per class, or train/ and test/ each laid out so")
    # The names come from the registry (trainables/dataset_registry.py). Not argparse `choices`:
    # DataSpec refuses an unknown name in one line with the names it knows, the same refusal a
    # name saved in study.json or best.yaml gets.
    g.add_argument("--dataset", default=None,
                   help=f"run the study's space on another dataset ({', '.join(dataset_names())})")
    g.add_argument("--data-file", default=None, help="CSV studies: the training CSV")
    g.add_argument("--test-file", default=None,
                   help="CSV studies: the test CSV (default: a stratified 20%% of --data-file, held out)")
    g.add_argument("--image-shape", default=None, metavar="C,H,W",
                   help="pixel CSV: image shape, e.g. 1,28,28 (default: square grey images)")
    g.add_argument("--image-size", default=None, metavar="H,W",
                   help="image folders: size every image is resized to (default: the most common size, "
                        "long side at most 128)")
    g.add_argument("--channels", default=None, type=int, choices=(1, 3),
                   help="image folders: 1 grey, 3 colour (default: 1 when every image is grey)")
    g.add_argument("--invert", action="store_true", default=None,
                   help="image folders: invert dark-on-light images (scans) to light-on-dark")
    g.add_argument("--target", default=None, help="tabular CSV: the column to predict")
    g.add_argument("--classes", default=None, metavar="A,B,...",
                   help="keep only these classes of a registered dataset (relabelled in this order)")
    g.add_argument("--weights", default=None,
                   help="transfer studies: an hpsearch model.pt, or a torchvision state dict with --arch")
    g.add_argument("--arch", default=None, help="torchvision architecture of --weights, e.g. mobilenet_v3_small")


def _shape(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"--image-shape must be three positive integers C,H,W (e.g. 1,28,28), got {text!r}")
    return shape  # type: ignore[return-value]


def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        size = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise UserError(f"--image-size must be two positive integers H,W (e.g. 64,64), got {text!r}")
    return size  # type: ignore[return-value]


def _folder_instead(default_dataset: str, given: dict) -> bool:
    """A user who points an image study at a folder of class folders means those images: read it
    as an image folder unless the study's own dataset is found there (a dataset root)."""
    data_dir = given["data_dir"]
    # Only a study whose own dataset is images reads a folder of images instead.
    images = default_dataset in dataset_names() and dataset_entry(default_dataset).images
    if not images or not data_dir or given["data_file"]:
        return False
    if any(given[k] is not None for k in ("image_size", "channels", "invert")):
        return True
    if holds_dataset(default_dataset, data_dir):
        return False
    return looks_like_image_folder(data_dir)


def dataset_asked(args, default_dataset: str) -> str:
    """The dataset `choice_from_args` takes for a new study, found without saying so."""
    if args.dataset:
        return args.dataset
    given = {"data_dir": args.data_dir, "data_file": args.data_file, "image_size": args.image_size,
             "channels": args.channels, "invert": args.invert}
    return IMAGE_FOLDER if _folder_instead(default_dataset, given) else default_dataset


@dataclass(frozen=True)
class DataChoice:
    """A run's data and, for transfer studies, its backbone file."""

    spec: DataSpec
    weights: str | None = None
    arch: str | None = None

    def to_dict(self) -> dict:
        return {**self.spec.to_dict(), **({"weights": self.weights} if self.weights else {}),
                **({"arch": self.arch} if self.arch else {})}

    @classmethod
    def from_dict(cls, d: dict) -> "DataChoice":
        if not isinstance(d, dict):
            raise UserError(f"bad data settings {str(d)[:80]!r}: expected a mapping (dataset, data_dir, ...)")
        d = dict(d)
        weights, arch = d.pop("weights", None), d.pop("arch", None)
        if not all(v is None or isinstance(v, str) for v in (weights, arch)):
            raise UserError(f"bad data settings: weights and arch must be text, not {weights!r}, {arch!r}"[:200])
        try:
            return cls(DataSpec.from_dict(d), weights, arch)
        except TypeError as e:
            raise UserError(f"bad data settings {d}: {e}") from None


def choice_from_args(args, default_dataset: str, needs_backbone: bool, base: DataChoice | None = None
                     ) -> DataChoice:
    """The data the command line asks for; options not given fall back to `base` (a saved study
    or best.yaml), then to the study's own dataset."""
    saved = base.spec.to_dict() if base else {}
    given = {
        "dataset": args.dataset, "data_dir": args.data_dir, "data_file": args.data_file,
        "test_file": args.test_file, "image_shape": _shape(args.image_shape), "target": args.target,
        "classes": tuple(c.strip() for c in args.classes.split(",")) if args.classes else None,
        "image_size": _size(args.image_size), "channels": args.channels, "invert": args.invert,
    }
    merged = {**saved, **{k: v for k, v in given.items() if v is not None}}
    if "dataset" not in merged and _folder_instead(default_dataset, given):
        say(f"data: {given['data_dir']} holds class folders of images; reading it as an image folder "
            "(--dataset image_folder)")
        merged["dataset"] = IMAGE_FOLDER
    merged.setdefault("dataset", default_dataset)
    weights = args.weights or (base.weights if base else None)
    arch = args.arch or (base.arch if base else None)
    if needs_backbone and not weights:
        raise UserError("a transfer study needs --weights: an hpsearch model.pt (e.g. a study's results) or a "
                        "torchvision state dict with --arch")
    if weights and not needs_backbone:
        raise UserError("--weights is for transfer studies (e.g. transfer_space)")
    return DataChoice(DataSpec.from_dict(merged), weights, arch)


def load_choice(choice: DataChoice):
    """(dataset, backbone or None); the images already converted to the backbone's input."""
    dataset: Dataset = load_data(choice.spec)
    if not choice.weights:
        return dataset, None
    from trainables.transfer import adapt_dataset, load_backbone

    backbone = load_backbone(choice.weights, choice.arch)
    return adapt_dataset(dataset, backbone), backbone
