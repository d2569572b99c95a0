"""The data options shared by `search.run` and `search.train`: which dataset (a registered one,
or CSV files), where it is, and the backbone a transfer study fine-tunes. Parsed into a
`DataSpec` (saved with the study and in best.yaml) and loaded in one place, so a study, its
resume and its retrain all see the same data."""

from __future__ import annotations

from dataclasses import dataclass

from search.cli import Parser
from trainables.data import DataSpec, load_data
from trainables.datasets import Dataset
from trainables.errors import UserError


def add_data_arguments(p: Parser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", default=None,
                   help="dataset root holding e.g. FashionMNIST/raw/ (default: $HPSEARCH_DATA_DIR, "
                        "Debian's dataset package, the user cache, else download)")
    g.add_argument("--dataset", default=None,
                   help="run the study's space on another dataset (fashion_mnist, mnist, cifar10, "
                        "pixels_csv, tabular_csv)")
    g.add_argument("--data-file", default=None, help="CSV studies: the training CSV")
    g.add_argument("--test-file", default=None,
                   help="CSV studies: the test CSV (default: a stratified 20%% of --data-file, held out)")
    g.add_argument("--image-shape", default=None, metavar="C,H,W",
                   help="pixel CSV: image shape, e.g. 1,28,28 (default: square grey images)")
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
        d = dict(d)
        weights, arch = d.pop("weights", None), d.pop("arch", None)
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
    }
    merged = {**saved, **{k: v for k, v in given.items() if v is not None}}
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
