from __future__ import annotations

import dataclasses
import gzip
import io
import pickle
import struct

import numpy as np
import pytest

from tests.conftest import user_error
from trainables.datasets import stratified_split
from trainables.errors import UserError
from trainables.readers import FASHION_MNIST, load_dataset, load_idx, locate, read_idx


def write_idx(path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def fake_dataset(folder, n_train=50, n_test=20, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for part, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{part}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), gz)
        write_idx(folder / f"{part}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz)


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_plain_and_gzipped(tmp_path, gz):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte"
    write_idx(path, images, gz)
    np.testing.assert_array_equal(read_idx(path), images)


def test_truncated_idx_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, np.zeros((5, 28, 28)), gz=False)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match="train-images-idx3-ubyte.*truncated"):
        read_idx(path)


def test_corrupt_gzip_names_the_file(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(path, np.zeros(10), gz=True)
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz"):
        read_idx(path)


def test_stratified_split_is_disjoint_stratified_and_seeded():
    y = np.repeat(np.arange(10), [100 + 10 * c for c in range(10)])
    train, val = stratified_split(y, 0.1, seed=7)
    assert not set(train) & set(val)
    assert len(train) + len(val) == len(y)
    for c in range(10):
        assert np.sum(y[val] == c) == round(0.1 * (100 + 10 * c))
    again_train, again_val = stratified_split(y, 0.1, seed=7)
    np.testing.assert_array_equal(val, again_val)
    assert not np.array_equal(val, stratified_split(y, 0.1, seed=8)[1])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_split_fraction_must_be_inside_0_1(fraction):
    with pytest.raises(UserError, match="between 0 and 1"):
        stratified_split(np.arange(10), fraction, 0)


@pytest.mark.parametrize("layout", ["FashionMNIST/raw", "FashionMNIST", "."])
def test_data_dir_layouts(tmp_path, layout):
    fake_dataset(tmp_path / layout, gz=layout != ".")
    ds = load_dataset("fashion_mnist", str(tmp_path))
    assert ds.train.x.shape == (50, 1, 28, 28) and ds.test.x.shape == (20, 1, 28, 28)
    assert ds.train.y.dtype == np.int64


def test_env_var_is_used_when_no_flag(tmp_path, monkeypatch):
    fake_dataset(tmp_path / "FashionMNIST" / "raw")
    monkeypatch.setenv("HPSEARCH_DATA_DIR", str(tmp_path))
    assert locate(FASHION_MNIST, None) == tmp_path / "FashionMNIST" / "raw"


def test_missing_data_dir_is_one_clear_error(tmp_path):
    with user_error("does not exist; pass --data-dir"):
        load_dataset("fashion_mnist", str(tmp_path / "nowhere"))


def test_data_dir_without_files_names_where_it_looked(tmp_path):
    with pytest.raises(UserError, match="not found under .*FashionMNIST/raw"):
        load_dataset("fashion_mnist", str(tmp_path))


def test_offline_without_a_copy_says_what_to_pass(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.delenv("HPSEARCH_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with user_error("pass --data-dir DIR"):  # as load_dataset("fashion_mnist") reads it, minus Debian's copy
        load_idx(dataclasses.replace(FASHION_MNIST, debian_dir=tmp_path / "no-debian"), None)


def test_real_fashion_mnist(data_root):
    ds = load_dataset("fashion_mnist", str(data_root))
    assert ds.train.x.shape == (60000, 1, 28, 28) and ds.test.x.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.train.y).tolist() == [6000] * 10
    assert np.bincount(ds.test.y).tolist() == [1000] * 10
    data = ds.for_search(0.1, seed=0)
    assert len(data.train) == 54000 and len(data.val) == 6000
    assert np.bincount(data.val.y).tolist() == [600] * 10
    assert 0.27 < data.mean[0] < 0.30 and 0.34 < data.std[0] < 0.37


def test_search_data_never_holds_test_images(data_root):
    ds = load_dataset("fashion_mnist", str(data_root)).sliced(2000, 500, seed=0)
    data = ds.for_search(0.1, seed=0)
    seen = {row.tobytes() for row in np.concatenate([data.train.x, data.val.x])}
    train_rows = {row.tobytes() for row in ds.train.x}
    assert seen == train_rows


def test_damaged_copy_of_the_published_data_fails_its_checksum(tmp_path, data_root):
    import shutil

    raw = tmp_path / "FashionMNIST" / "raw"
    shutil.copytree(data_root / "FashionMNIST" / "raw", raw)
    labels = raw / "train-labels-idx1-ubyte.gz"
    unpacked = bytearray(gzip.decompress(labels.read_bytes()))
    unpacked[-1] = (unpacked[-1] + 1) % 10  # a valid label, the right size, the wrong data
    labels.unlink()
    (raw / "train-labels-idx1-ubyte").write_bytes(bytes(unpacked))
    with pytest.raises(UserError, match="train-labels-idx1-ubyte: contents do not match.*checksum"):
        load_dataset("fashion_mnist", str(tmp_path))


def test_plain_and_regzipped_copies_of_the_published_data_pass(tmp_path, data_root):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for i, path in enumerate(sorted((data_root / "FashionMNIST" / "raw").glob("*.gz"))):
        unpacked = gzip.decompress(path.read_bytes())
        target = raw / path.name[:-3]
        if i % 2:
            target.write_bytes(unpacked)
        else:  # like Debian's package: same contents, other gzip header
            (raw / path.name).write_bytes(gzip.compress(unpacked, compresslevel=1, mtime=0))
    assert len(load_dataset("fashion_mnist", str(tmp_path)).train) == 60000


# --- CIFAR-10 ----------------------------------------------------------------------------------

class Python2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle wrote the published CIFAR-10 batches (protocol 2): bytes and
    text as Python 2 strings (BINSTRING), numpy's array functions under their numpy 1 names."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_string(self, obj) -> None:
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        self.write((pickle.SHORT_BINSTRING + bytes([len(raw)]) if len(raw) < 256 else
                    pickle.BINSTRING + struct.pack("<i", len(raw))) + raw)
        self.memoize(obj)

    dispatch[bytes] = dispatch[str] = save_py2_string

    def save_global(self, obj, name=None) -> None:
        module = {"numpy._core.multiarray": "numpy.core.multiarray"}.get(obj.__module__, obj.__module__)
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def cifar_batch_bytes(batch: dict) -> bytes:
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(batch)
    return buffer.getvalue()


def write_cifar_batches(folder, per_batch=20, seed=0):
    """Batches in the published format: {b"batch_label", b"labels" (ints), b"data" (N x 3072
    uint8), b"filenames"}, pickled as Python 2 pickled them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": f"{name} of the test set".encode(),
                 b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"filenames": [f"image_{i}.png".encode() for i in range(per_batch)]}
        (folder / name).write_bytes(cifar_batch_bytes(batch))
    return rng


def test_cifar_full_layout_is_read_channels_first(tmp_path):
    write_cifar_batches(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", str(tmp_path))
    assert ds.train.x.shape == (100, 3, 32, 32) and ds.test.x.shape == (20, 3, 32, 32)
    assert ds.info.classes[0] == "airplane"


def test_cifar_subset_from_the_shared_folder(data_root):
    if not (data_root / "cifar10" / "cifar10-subset.npz").is_file():
        pytest.skip("the CIFAR-10 subset is not in the shared datasets")
    ds = load_dataset("cifar10", str(data_root))
    assert ds.train.x.shape == (10000, 3, 32, 32) and len(ds.test) == 2000
    with np.load(data_root / "cifar10" / "cifar10-subset.npz") as z:
        assert np.array_equal(ds.train.x[5].transpose(1, 2, 0), z["x_train"][5])
    assert np.bincount(ds.test.y).tolist() == [200] * 10


def test_cifar_missing_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="CIFAR-10 not found under"):
        load_dataset("cifar10", str(tmp_path))


def test_cifar_damaged_batch_is_named(tmp_path):
    write_cifar_batches(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(UserError, match="data_batch_3: not a CIFAR-10 batch file"):
        load_dataset("cifar10", str(tmp_path))
