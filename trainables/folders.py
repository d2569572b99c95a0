"""A folder of the user's own images as a dataset (`image_folder`): torchvision's ImageFolder
layout (DIR/<class>/<image>, or DIR/train/<class>/... and DIR/test/<class>/...), checked, decoded
once with trainables/images.py into the same uint8 arrays every other dataset uses, and cached by
content so that a second search on the same folder starts at once.

Class names are the folder names, sorted. Without a test folder a stratified share is held out as
the test split, as for a single CSV file (trainables.datasets.held_out). The kind registers
itself at the end (trainables/dataset_registry.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainables.dataset_registry import FOLDER, DatasetEntry, register_dataset
from trainables.datasets import IMAGE_FOLDER, Dataset, DatasetInfo, Split, held_out
from trainables.errors import UserError
from trainables.images import IMAGE_SUFFIXES, MAX_SIDE, ImageFormat, image_header, prepare
from trainables.readers import cache_root

MIN_SIDE = 8  # a default size keeps at least this many pixels on the short side
log = logging.getLogger(__name__)
PROGRESS_FROM = 2000  # folders with more images than this say how decoding goes
CACHE_VERSION = 1  # bump when decoding changes, so that old cached arrays are not reused
GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"}
LAYOUT = "one sub-folder of images per class (DIR/cat/1.png, DIR/dog/2.jpg), or DIR/train/ and DIR/test/ so"


@dataclass(frozen=True)
class FolderFiles:
    """The images of one folder (the training or the test folder): paths relative to the
    dataset's root, and each one's class name."""

    paths: tuple[str, ...]
    labels: tuple[str, ...]


@dataclass(frozen=True)
class FolderLayout:
    root: Path
    train: FolderFiles
    test: FolderFiles | None  # None: hold out a share of train

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.train.labels)))


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


# Links in a data folder are not followed where they could lead out of it or loop: a link to a
# folder never (`a/loop -> ..` would relabel every other class's images as `a`, and two such links
# make the scan exponential), a link to a file only when the file is inside the folder. What is
# skipped is said (`scan`), never silently dropped.

def _inside(path: Path, root: Path) -> bool:
    """Whether `path`, its links resolved, is an existing file inside `root`."""
    target = path.resolve()
    return target.is_file() and target.is_relative_to(root.resolve())


def _images_under(folder: Path, root: Path, skipped: list[str]) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):  # links to folders are listed, not entered
        here = Path(dirpath)
        skipped += [str((here / d).relative_to(root)) for d in sorted(dirnames)
                    if (here / d).is_symlink() and not d.startswith(".")]
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (here / d).is_symlink())
        for f in sorted(filenames):
            if not _is_image(f):
                continue
            if (here / f).is_symlink() and not _inside(here / f, root):
                skipped.append(str((here / f).relative_to(root)))
                continue
            found.append(here / f)
    return found


def _class_folders(folder: Path, skipped: list[str] | None = None, root: Path | None = None) -> list[Path]:
    entries = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if skipped is not None:
        skipped += [str(p.relative_to(root or folder)) for p in sorted(entries) if p.is_symlink()]
    return sorted(p for p in entries if not p.is_symlink())


def _no_linked_split(root: Path) -> None:
    for part in ("train", "test"):
        if (root / part).is_symlink():
            raise UserError(f"{root / part} is a link (to {(root / part).resolve()}); hpsearch follows no links to "
                            "folders inside a data folder, which could lead out of it or loop: replace the link with "
                            "the folder itself", option="data_dir", fix="DIR whose train/ and test/ are folders")


def _split_layout(root: Path) -> bool:
    """DIR/train/<class>/ rather than DIR/<class>/ (a class named "train" holds images, not folders)."""
    train = root / "train"
    return train.is_dir() and any(_class_folders(train))


def looks_like_image_folder(folder: str | Path) -> bool:
    """Whether `folder` is laid out as class folders of images (cheap: a look at each class
    folder's first entries, nothing decoded); used to tell an image folder from a dataset root."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        return False
    if _split_layout(root):
        root = root / "train"
    classes = _class_folders(root)
    return len(classes) >= 2 and all(any(_is_image(f.name) for f in c.iterdir() if f.is_file()) for c in classes)


def _scan(folder: Path, root: Path, what: str, skipped: list[str]) -> FolderFiles:
    classes = _class_folders(folder, skipped, root)
    if not classes:
        loose = sum(_is_image(f.name) for f in folder.iterdir() if f.is_file())
        problem = f"its {loose} images are not in class folders" if loose else "it holds no images"
        raise UserError(f"{what} {folder} has no class folders ({problem}); an image folder needs {LAYOUT}",
                        option="data_dir", fix="DIR laid out so")
    found = {c: _images_under(c, root, skipped) for c in classes}
    if not any(found.values()):
        raise UserError(f"{what} {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders "
                        f"({', '.join(c.name for c in classes[:5])}{' ...' if len(classes) > 5 else ''})",
                        option="data_dir", fix=f"DIR with {LAYOUT}")
    paths, labels = [], []
    for c, images in found.items():
        if not images:
            raise UserError(f"class folder {c} holds no images ({', '.join(IMAGE_SUFFIXES)}); add images or "
                            "remove the folder")
        paths += [str(p.relative_to(root)) for p in images]
        labels += [c.name] * len(images)
    return FolderFiles(tuple(paths), tuple(labels))


def scan(data_dir: str | Path) -> FolderLayout:
    """The folder's images and classes, with one line for each way the layout can be wrong."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist", option="data_dir", fix=f"DIR with {LAYOUT}")
    _no_linked_split(root)
    skipped: list[str] = []
    try:
        if not _split_layout(root):
            if (root / "test").is_dir():
                raise UserError(f"{root} has a test/ folder but no train/ folder of class folders; an image folder "
                                f"needs {LAYOUT}", option="data_dir", fix="DIR laid out so")
            train, test = _scan(root, root, "image folder", skipped), None
        else:
            train = _scan(root / "train", root, "training folder", skipped)
            test = _scan(root / "test", root, "test folder", skipped) if (root / "test").is_dir() else None
    finally:  # said before any refusal: a class folder may be empty only because its links were skipped
        if skipped:
            log.warning("note: %s: %d link(s) not followed (to a folder, or to a file outside %s): %s%s", root,
                        len(skipped), root, ", ".join(skipped[:5]), " ..." if len(skipped) > 5 else "")
    layout = FolderLayout(root, train, test)
    if len(layout.classes) < 2:
        raise UserError(f"{root} has one class folder ({layout.classes[0]}); a classifier needs two or more")
    if test is not None:
        unseen = sorted(set(test.labels) - set(layout.classes))
        if unseen:
            raise UserError(f"the test folder {root / 'test'} has classes the training folder lacks: "
                            f"{', '.join(unseen[:5])}{' ...' if len(unseen) > 5 else ''}")
    else:
        counts = Counter(train.labels)
        few = sorted(name for name, n in counts.items() if n < 2)
        if few:
            raise UserError(f"class folder {root / few[0]} has one image; holding out a test share needs two or "
                            "more per class (or give DIR/train/ and DIR/test/)")
    return layout


# --- the format every image becomes ------------------------------------------------------------

def default_format(root: Path, paths: tuple[str, ...], size: tuple[int, int] | None,
                   channels: int | None, invert: bool) -> ImageFormat:
    """What is not given is read from the files' headers (nothing decoded): the most common size,
    scaled down to MAX_SIDE on its long side; grey when every image is stored grey, else colour
    (`_grey_content` then looks at the pixels: grey pictures stored as colour are common)."""
    if size is not None and channels is not None:
        return ImageFormat(size, channels, invert)
    sizes: Counter[tuple[int, int]] = Counter()
    grey = True
    for rel in paths:
        h, w, mode = image_header(root / rel)
        sizes[(h, w)] += 1
        grey = grey and mode in GREY_MODES
    return ImageFormat(size or scaled_size(*sizes.most_common(1)[0][0]), channels or (1 if grey else 3), invert)


def scaled_size(h: int, w: int) -> tuple[int, int]:
    """(h, w) shrunk to at most MAX_SIDE on the long side, keeping the aspect ratio (a short side
    of at least MIN_SIDE)."""
    scale = min(1.0, MAX_SIDE / max(h, w))
    return max(min(MIN_SIDE, h), round(h * scale)), max(min(MIN_SIDE, w), round(w * scale))


def _grey_content(arrays: list[np.ndarray]) -> bool:
    """Whether colour-decoded (N, 3, H, W) images are all grey (R = G = B everywhere): e.g. WebP,
    which has no grey mode, or scans saved as RGB."""
    return all(np.array_equal(x[i:i + 4096, 0], x[i:i + 4096, c])
               for x in arrays for i in range(0, len(x), 4096) for c in (1, 2))


# --- decoding, once ----------------------------------------------------------------------------

def decode(root: Path, paths: tuple[str, ...], fmt: ImageFormat) -> np.ndarray:
    """Every image as (N, C, H, W) uint8, decoded by a thread pool (PIL releases the GIL while it
    decodes and resizes); a file that cannot be read stops it with one line naming the path."""
    h, w = fmt.size
    try:
        x = np.empty((len(paths), fmt.channels, h, w), dtype=np.uint8)
    except MemoryError:
        raise UserError(f"{len(paths)} images of {fmt.channels}x{h}x{w} pixels need "
                        f"{len(paths) * fmt.channels * h * w / 2 ** 30:.1f} GiB, more memory than this machine gives",
                        option="image_size", fix="a smaller H,W (e.g. 64,64)") from None
    loud = len(paths) > PROGRESS_FROM
    step = max(1, len(paths) // 10)

    def one(i: int) -> int:
        x[i] = prepare(root / paths[i], fmt)
        return i

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for done, _ in enumerate(pool.map(one, range(len(paths))), start=1):
            if loud and (done % step == 0 or done == len(paths)):
                log.info("decoding images in %s: %d/%d", root, done, len(paths))
    return x


def _cache_file(layout: FolderLayout, size: tuple[int, int] | None, channels: int | None, invert: bool) -> Path:
    """Named by content: each file's relative path, class, size and modification time, and the
    format asked for (defaults are derived from the files, so the request names them too)."""
    h = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "size": size, "channels": channels,
                                   "invert": invert, "split": layout.test is not None}).encode())
    for part in (layout.train, layout.test):
        if part is None:
            continue
        for rel, label in zip(part.paths, part.labels):
            st = (layout.root / rel).stat()
            h.update(f"{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return cache_root() / "image_folders" / f"{h.hexdigest()[:32]}.npz"


def _load_cached(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, EOFError):
        return None  # a damaged cache file is decoded again and replaced


def _save_cached(path: Path, arrays: dict) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, **arrays)
        os.replace(tmp, path)  # whole or not at all: a concurrent search never reads half a file
    except OSError as e:
        tmp.unlink(missing_ok=True)  # a full disk: no half-written cache left to fill it further
        log.warning("note: could not cache the decoded images in %s (%s); the next search decodes them again",
                    path.parent, e.strerror)


def load_image_folder(data_dir: str | None, size: tuple[int, int] | None = None, channels: int | None = None,
                      invert: bool = False) -> Dataset:
    if not data_dir:
        raise UserError("an image folder dataset needs its folder", option="data_dir", fix=f"DIR with {LAYOUT}")
    layout = scan(data_dir)
    classes = layout.classes
    cache = _cache_file(layout, size, channels, invert)
    arrays = _load_cached(cache)
    if arrays is None:
        fmt = default_format(layout.root, layout.train.paths + (layout.test.paths if layout.test else ()),
                             size, channels, invert)
        index = {name: i for i, name in enumerate(classes)}
        arrays = {"x_train": decode(layout.root, layout.train.paths, fmt),
                  "y_train": np.array([index[c] for c in layout.train.labels], dtype=np.int64),
                  "format": np.array(json.dumps(fmt.to_dict()))}
        if layout.test is not None:
            arrays["x_test"] = decode(layout.root, layout.test.paths, fmt)
            arrays["y_test"] = np.array([index[c] for c in layout.test.labels], dtype=np.int64)
        images = [arrays[k] for k in ("x_train", "x_test") if k in arrays]
        if channels is None and fmt.channels == 3 and _grey_content(images):
            # Channel 0 of a grey image is exactly what PIL's conversion to grey gives (its weights
            # sum to one), so a prediction that converts to grey sees the same pixels.
            fmt = dataclasses.replace(fmt, channels=1)
            arrays.update({k: np.ascontiguousarray(arrays[k][:, :1]) for k in ("x_train", "x_test") if k in arrays})
            arrays["format"] = np.array(json.dumps(fmt.to_dict()))
        _save_cached(cache, arrays)
    fmt = ImageFormat.from_dict(json.loads(str(arrays["format"])))
    train = Split(arrays["x_train"], arrays["y_train"])
    if "x_test" in arrays:
        test = Split(arrays["x_test"], arrays["y_test"])
    else:
        train, test = held_out(train)
    info = DatasetInfo(IMAGE_FOLDER, "", classes, counts=(len(train), len(test)))
    return Dataset(info, train, test, str(layout.root.resolve()), image_format=fmt)


def _check_options(data_dir: str | None, image_size: tuple[int, int] | None, channels: int | None,
                   invert: bool) -> None:
    if not data_dir:
        raise UserError("an image folder dataset needs its folder", option="data_dir",
                        fix="DIR (one sub-folder of images per class)")
    ImageFormat(image_size or (1, 1), channels or 1)  # the same checks, before any decoding


register_dataset(DatasetEntry(
    IMAGE_FOLDER, FOLDER,
    lambda data_dir, image_size, channels, invert: load_image_folder(data_dir, image_size, channels, invert),
    "your own images, one folder per class", "`--data-dir` (*Your own images*)",
    options=("image_size", "channels", "invert"), check=_check_options, called="image folders"))
