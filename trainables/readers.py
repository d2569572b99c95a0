"""The registered datasets read from files, and where their files are looked for
(`candidate_folders`, `locate`, the user cache, a download as the last resort): Fashion-MNIST
and MNIST (IDX files) and CIFAR-10, each registered (trainables/dataset_registry.py) beside its
reader. `load_dataset` reads any registered dataset by name.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from functools import partial
from pathlib import Path

import numpy as np

from trainables.dataset_registry import REGISTERED, DatasetEntry, dataset_entry, register_dataset
from trainables.datasets import Dataset, DatasetInfo, Split
from trainables.errors import UserError

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


FASHION_MNIST = DatasetInfo(
    "fashion_mnist", "FashionMNIST",
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    DEBIAN_FASHION_DIR,
    {
        "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
)
MNIST = DatasetInfo("mnist", "MNIST", tuple(str(d) for d in range(10)), None, {
    "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
})
CIFAR10 = DatasetInfo("cifar10", "cifar-10-batches-py", (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    counts=(50000, 10000))


# --- finding and reading the files -------------------------------------------------------

def read_idx(path: Path, published: tuple[int, str] | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not, told by its magic bytes, not its name), checking its
    header, its size against the header and, where known, the checksum of its contents."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise UserError(f"{path}: corrupt gzip data ({e}); delete it and fetch the file again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path}: not an IDX file of unsigned bytes (bad header); replace the file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path}: truncated IDX header; replace the file")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise UserError(f"{path}: IDX data is {len(raw) - header} bytes, header says {expected - header} "
                        "(truncated or corrupt); replace the file")
    if published is not None and shape[0] == published[0] and hashlib.sha256(raw).hexdigest() != published[1]:
        raise UserError(f"{path}: contents do not match the published dataset (checksum differs); "
                        "the file is corrupt or another dataset's: replace it")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _complete_folder(folder: Path) -> bool:
    return all(_find_file(folder, stem) for stem in IDX_FILES.values())


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hpsearch"


def candidate_folders(info: DatasetInfo, data_dir: str | None) -> list[Path]:
    """Where the IDX files are looked for, in order."""
    if data_dir:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise UserError(f"data directory {root} does not exist", option="data_dir",
                            fix=f"with a folder holding {info.folder}/raw/")
        return [root / info.folder / "raw", root / info.folder, root]
    folders = []
    if info.debian_dir is not None:
        folders.append(info.debian_dir)
    folders.append(cache_root() / info.folder / "raw")
    return folders


def locate(info: DatasetInfo, data_dir: str | None) -> Path:
    """The folder with all four IDX files; downloads into the user cache only as a last resort."""
    data_dir = data_dir or os.environ.get("HPSEARCH_DATA_DIR") or None
    folders = candidate_folders(info, data_dir)
    for folder in folders:
        if _complete_folder(folder):
            return folder
    if data_dir:
        raise UserError(f"{info.name} files not found under {data_dir} (looked in "
                        f"{', '.join(str(f) for f in folders)}); expected {info.folder}/raw/*-ubyte[.gz]")
    return _download(info)


def _download(info: DatasetInfo) -> Path:
    import torchvision.datasets as tvd  # imported late: only the last resort needs it

    root = cache_root()
    try:
        getattr(tvd, info.folder)(root=str(root), train=True, download=True)
        getattr(tvd, info.folder)(root=str(root), train=False, download=True)
    except Exception as e:  # noqa: BLE001 - any network failure means the same thing to the user
        hint = " or `apt-get install dataset-fashion-mnist`" if info.debian_dir else ""
        raise UserError(
            f"{info.name} is not on this machine and could not be downloaded ({type(e).__name__})",
            option="data_dir", fix=f"DIR (DIR/{info.folder}/raw/*-ubyte[.gz]) or set HPSEARCH_DATA_DIR{hint}",
        ) from None
    return root / info.folder / "raw"


def load_idx(info: DatasetInfo, data_dir: str | None) -> Dataset:
    """An IDX dataset (Fashion-MNIST, MNIST): the four files of the first folder that has them
    all, checked against their headers and, where the files claim the published image counts,
    the published checksums."""
    folder = locate(info, data_dir)
    def published(key: str) -> tuple[int, str] | None:
        count = info.counts[0] if key.startswith("train") else info.counts[1]
        return (count, info.sha256[key]) if info.sha256 else None

    arrays = {key: read_idx(_find_file(folder, stem), published(key))  # type: ignore[arg-type]
              for key, stem in IDX_FILES.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(f"{folder}: {part} images {images.shape} and labels {labels.shape} do not match")
        if labels.max() >= len(info.classes):
            raise UserError(f"{folder}: {part} labels go up to {labels.max()}, expected < {len(info.classes)}")

    def split(part: str) -> Split:
        return Split(arrays[f"{part}_images"][:, None, :, :], arrays[f"{part}_labels"].astype(np.int64))

    return Dataset(info, split("train"), split("test"), str(folder))


def holds_idx(info: DatasetInfo, root: Path) -> bool:
    return any(_complete_folder(f) for f in candidate_folders(info, str(root)))


def _register_idx(info: DatasetInfo, description: str, found: str) -> None:
    register_dataset(DatasetEntry(
        info.name, REGISTERED, partial(load_idx, info), description, found, input_shape=(1, 28, 28),
        classes=info.classes, holds=partial(holds_idx, info)))


_register_idx(FASHION_MNIST, "Fashion-MNIST (IDX files)",
              "`--data-dir`, Debian's package, the user cache, else downloaded (below)")
_register_idx(MNIST, "MNIST (IDX files)", "as Fashion-MNIST, under `MNIST/raw/`")


# --- CIFAR-10 ----------------------------------------------------------------------------------

CIFAR_SUBSET = Path("cifar10") / "cifar10-subset.npz"


def load_cifar10(info: DatasetInfo, data_dir: str | None) -> Dataset:
    """The full dataset in torchvision's layout (cifar-10-batches-py/) or a subset saved as .npz
    (x_train/y_train/x_test/y_test, images N x 32 x 32 x 3); the full one is preferred."""
    data_dir = data_dir or os.environ.get("HPSEARCH_DATA_DIR") or None
    roots = [Path(data_dir).expanduser()] if data_dir else [cache_root()]
    if data_dir and not roots[0].is_dir():
        raise UserError(f"data directory {roots[0]} does not exist", option="data_dir",
                        fix=f"with a folder holding {info.folder}/ or {CIFAR_SUBSET}")
    for root in roots:
        for folder in (root / info.folder, root):
            if (folder / "data_batch_1").is_file() and (folder / "test_batch").is_file():
                return _cifar_batches(info, folder)
        for npz in (root / CIFAR_SUBSET, root / CIFAR_SUBSET.name):
            if npz.is_file():
                return _cifar_npz(info, npz)
    if data_dir:
        raise UserError(f"CIFAR-10 not found under {data_dir}; expected {info.folder}/data_batch_1..5 and "
                        f"test_batch, or {CIFAR_SUBSET}")
    return _cifar_download(info)


def _numpy_globals() -> dict[tuple[str, str], object]:
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer

    # The published batches were pickled by Python 2's numpy (numpy.core...); numpy 2 is numpy._core.
    return {
        **{(module, "_reconstruct"): _reconstruct for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
        **{(module, "_frombuffer"): _frombuffer for module in ("numpy.core.numeric", "numpy._core.numeric")},
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class _BatchUnpickler(pickle.Unpickler):
    """CIFAR-10's batches are pickles, and a pickle may name any callable to run while it loads
    (a `__reduce__` calling os.system). A batch holds a dict of bytes, lists of ints and bytes,
    and one uint8 array: the opcodes build the first three, and the only callables admitted are
    the ones numpy's array pickles name. Anything else is refused before it is called."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str):
        found = self._allowed.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch never holds; "
                                         "nothing in it was run")
        return found


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as (images N x 3 x 32 x 32 uint8, labels int64), read without running
    anything the file names (see _BatchUnpickler)."""
    try:
        with path.open("rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
        if not isinstance(batch, dict):
            raise TypeError(f"it holds a {type(batch).__name__}, not a dict")
        x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(batch[b"labels"], dtype=np.int64).reshape(-1)
    except (pickle.UnpicklingError, KeyError, ValueError, TypeError, IndexError, EOFError, AttributeError) as e:
        why = f": {e}" if isinstance(e, (pickle.UnpicklingError, TypeError)) else ""
        raise UserError(f"{path}: not a CIFAR-10 batch file ({type(e).__name__}{why}); replace it with the "
                        "published one") from None
    if len(x) != len(y):
        raise UserError(f"{path}: {len(x)} images but {len(y)} labels; replace it with the published one")
    return x, y


def _cifar_batches(info: DatasetInfo, folder: Path) -> Dataset:
    def read(names: list[str]) -> Split:
        xs, ys = [], []
        for name in names:
            path = folder / name
            if not path.is_file():
                raise UserError(f"{path} is missing; the CIFAR-10 folder is incomplete")
            x, y = read_cifar_batch(path)
            xs.append(x)
            ys.append(y)
        return Split(np.concatenate(xs), np.concatenate(ys))

    return Dataset(info, read([f"data_batch_{i}" for i in range(1, 6)]), read(["test_batch"]), str(folder))


def _cifar_npz(info: DatasetInfo, path: Path) -> Dataset:
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (KeyError, ValueError, OSError) as e:
        raise UserError(f"{path}: not a CIFAR-10 .npz with x_train/y_train/x_test/y_test ({e})") from None

    def split(part: str) -> Split:
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.ndim != 4 or x.shape[1:] != (32, 32, 3) or len(x) != len(y) or x.dtype != np.uint8:
            raise UserError(f"{path}: x_{part} must be uint8 N x 32 x 32 x 3 matching y_{part}, got {x.shape}")
        return Split(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y.astype(np.int64))

    return Dataset(info, split("train"), split("test"), str(path))


def _cifar_download(info: DatasetInfo) -> Dataset:
    import torchvision.datasets as tvd  # only the last resort needs it

    try:
        tvd.CIFAR10(root=str(cache_root()), train=True, download=True)
    except Exception as e:  # noqa: BLE001 - any network failure means the same thing to the user
        raise UserError(f"cifar10 is not on this machine and could not be downloaded ({type(e).__name__})",
                        option="data_dir", fix=f"DIR with DIR/{info.folder}/ or DIR/{CIFAR_SUBSET}") from None
    return _cifar_batches(info, cache_root() / info.folder)


def holds_cifar10(info: DatasetInfo, root: Path) -> bool:
    return any((f / "data_batch_1").is_file() for f in (root / info.folder, root)) or \
        any(p.is_file() for p in (root / CIFAR_SUBSET, root / CIFAR_SUBSET.name))


register_dataset(DatasetEntry(
    "cifar10", REGISTERED, partial(load_cifar10, CIFAR10), "CIFAR-10",
    "torchvision's `cifar-10-batches-py/`, or a subset in `cifar10/cifar10-subset.npz`",
    input_shape=(3, 32, 32), classes=CIFAR10.classes, holds=partial(holds_cifar10, CIFAR10)))


# --- any registered dataset --------------------------------------------------------------------

def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
    """Registered dataset `name`, read by its reader from `data_dir` (or wherever it looks
    without one). The user's own data (CSV files, image folders) is read with
    trainables.data.load_data, which takes the options such data needs."""
    entry = dataset_entry(name)
    if entry.kind != REGISTERED:
        raise UserError(f"{name} is the user's own data ({entry.kind}), not a registered dataset; "
                        "read it with trainables.data.load_data")
    return entry.read(data_dir)
