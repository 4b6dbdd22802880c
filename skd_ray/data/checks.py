"""Is the dataset there and whole? Checked once before a search starts, cheaply.

Loading happens inside every trial, after Ray has started; a missing, empty or truncated
file found there costs a Ray start-up and fails every trial. These checks read headers, file
sizes and checksums, not the images (a search on ImageNet must not decode it twice): IDX
headers and their counts for Fashion-MNIST, torchvision's file list and checksums for CIFAR,
for an image folder at least two classes with one decodable image each, and for a user's
dataset what its factory returns (`skd_ray.data.user`). Each returns the number of images
the training part holds, so the caller can also check that one batch fits.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

from skd_ray.config import DataConfig
from skd_ray.data import user_data
from skd_ray.data.sources import DIGITS_TRAIN_SIZE, FASHION_FILES, FASHION_MNIST_DIRS, find_idx
from skd_ray.errors import DataError, check_path_fits, read_text_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IDX_MAGIC = {3: "images", 1: "labels"}  # number of dimensions of each Fashion-MNIST file
DECODE_TRIES = 5  # images tried per class before a class folder is called undecodable


def check_dataset(cfg: DataConfig) -> int:
    """Check the files of dataset `cfg.name`; returns how many images its training part has.
    Datasets fetched by `data.download` are checked once they are there, not before. A user's
    dataset is checked by calling its factory (once per process, the result is kept for the
    config checks and for training in this process) and checking what it returns."""
    if cfg.dir:  # a name too long for the file system makes the checks below raise, not answer
        check_path_fits(cfg.dir, "data directory", "pass an existing data directory (--data-dir)", error=DataError)
    user = user_data(cfg)
    if user is not None:
        return len(user.train)
    if cfg.download:
        return 0
    if cfg.name == "digits":
        return DIGITS_TRAIN_SIZE
    if cfg.name == "fashion-mnist":
        return check_fashion_mnist(cfg.dir)
    if cfg.name in ("cifar10", "cifar100"):
        return check_cifar(cfg.name, cfg.dir)
    if cfg.name == "imagefolder":
        return check_imagefolder(cfg.dir)
    return 0


def idx_header(path: Path) -> tuple[int, tuple[int, ...], int]:
    """(number of dimensions, shape, payload bytes present) of an IDX file, gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(4)
            if len(head) < 4:
                raise DataError(f"{path} is empty or truncated (no IDX header)", "replace it with the original file")
            zero, dtype_code, ndim = struct.unpack(">HBB", head)
            if zero != 0 or dtype_code != 0x08 or ndim not in IDX_MAGIC:
                raise DataError(f"{path} is not an unsigned-byte IDX file", "check the Fashion-MNIST files")
            dims = fh.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise DataError(f"{path} is truncated inside its IDX header", "replace it with the original file")
            shape = struct.unpack(">" + "I" * ndim, dims)
            payload = 0
            while chunk := fh.read(1 << 20):
                payload += len(chunk)
    except (OSError, EOFError) as err:
        raise DataError(f"{path} cannot be read ({err})", "replace it with the original file") from None
    return ndim, shape, payload


def check_fashion_mnist(data_dir: str | None) -> int:
    """All four IDX files present, with image and label headers that agree and payloads of
    exactly the size the headers promise (a truncated download fails here)."""
    dirs = [Path(data_dir)] if data_dir else [Path(d) for d in FASHION_MNIST_DIRS]
    for directory in dirs:
        paths = {part: [find_idx(directory, s) for s in stems] for part, stems in FASHION_FILES.items()}
        if any(p is None for ps in paths.values() for p in ps):
            continue
        counts = {}
        for part, (images, labels) in paths.items():
            assert images is not None and labels is not None
            ndim_i, shape_i, bytes_i = idx_header(images)
            ndim_l, shape_l, bytes_l = idx_header(labels)
            if ndim_i != 3 or ndim_l != 1:
                raise DataError(f"{images} / {labels} are not an image file and a label file",
                                "check the Fashion-MNIST file names")
            if shape_i[0] != shape_l[0] or shape_i[0] == 0:
                raise DataError(f"{images} holds {shape_i[0]} images but {labels} {shape_l[0]} labels",
                                "replace both with the original files")
            for path, shape, got in ((images, shape_i, bytes_i), (labels, shape_l, bytes_l)):
                want = 1
                for d in shape:
                    want *= d
                if got != want:
                    raise DataError(f"{path} is truncated or padded: its header promises {want} bytes, "
                                    f"it holds {got}", "replace it with the original file")
            counts[part] = shape_i[0]
        return counts["train"]
    raise DataError(f"Fashion-MNIST IDX files not found under {data_dir or FASHION_MNIST_DIRS[0]}",
                    "run `apt-get install dataset-fashion-mnist`, or pass --data-dir DIR holding "
                    "train-images-idx3-ubyte[.gz] etc., or add --set data.download=true with network access")


def check_cifar(name: str, data_dir: str | None) -> int:
    """torchvision's CIFAR batch files present with their published MD5 checksums."""
    import torchvision

    if not data_dir:
        raise DataError(f"{name} needs a data directory", "pass --data-dir DIR (with cifar-*-python inside, "
                        "or add --set data.download=true to fetch it there)")
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    folder = Path(data_dir) / cls.base_folder
    for file_name, md5 in [*cls.train_list, *cls.test_list]:
        path = folder / file_name
        if not path.is_file():
            raise DataError(f"{name} file {path} is missing",
                            f"extract {cls.filename} into {data_dir}, or add --set data.download=true")
        digest = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
        if digest.hexdigest() != md5:
            raise DataError(f"{name} file {path} is damaged (its checksum differs from the published one)",
                            f"extract {cls.filename} again into {data_dir}")
    return 50_000


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def decodable(paths: list[Path]) -> bool:
    """True when one of the first few images opens and decodes (PIL)."""
    from PIL import Image

    for path in paths[:DECODE_TRIES]:
        try:
            with Image.open(path) as img:
                img.convert("RGB").load()
            return True
        except (OSError, ValueError, SyntaxError):
            continue
    return False


def check_imagefolder(data_dir: str | None) -> int:
    """`train/` with at least two class folders, each with a decodable image; `val/` with the
    same classes (or Tiny ImageNet's annotation file); returns the training images' count."""
    if not data_dir:
        raise DataError("dataset imagefolder needs --data-dir", "pass the folder holding train/ and val/")
    base = Path(data_dir)
    if not (base / "train").is_dir() or not (base / "val").is_dir():
        raise DataError(f"{data_dir} lacks train/ and val/ folders",
                        "point --data-dir at a folder with train/<class>/ and val/ (ImageNet layout)")
    classes = {d.name: image_files(d) for d in sorted((base / "train").iterdir()) if d.is_dir()}
    classes = {name: files for name, files in classes.items() if files}
    if len(classes) < 2:
        raise DataError(f"{base / 'train'} holds {len(classes)} class folder(s) with images; a classifier needs 2",
                        "put each class's images in its own folder under train/")
    for name, files in classes.items():
        if not decodable(files):
            tried = min(len(files), DECODE_TRIES)
            raise DataError(f"no image in {base / 'train' / name} can be decoded (tried {tried})",
                            "replace the damaged files or remove that class folder")
    annotations = base / "val" / "val_annotations.txt"
    if annotations.exists():  # read as text by every trial: one that is not UTF-8 fails here instead
        try:
            read_text_file(annotations, "Tiny ImageNet's label file")
        except OSError as err:
            raise DataError(f"{annotations} cannot be read ({err.strerror})", "make it readable") from None
    else:
        val_classes = {d.name for d in (base / "val").iterdir() if d.is_dir() and image_files(d)}
        if val_classes != set(classes):
            raise DataError(f"{data_dir}/val classes differ from {data_dir}/train",
                            "make val/ hold the same class folders as train/")
    return sum(len(files) for files in classes.values())


def check_batch_fits(train_images: int, val_fraction: float, train_subset: int, train_on_validation: bool,
                     batch_size: int, world_size: int) -> None:
    """Each training worker must get at least one full batch per epoch (the last, partial
    batch is dropped), or an epoch trains nothing and reports no loss."""
    if train_images <= 0:
        return
    n_val = max(1, int(round(val_fraction * train_images)))
    n_train = train_images - n_val
    if 0 < train_subset < n_train:
        n_train = train_subset
    if train_on_validation:
        n_train += n_val
    per_worker = n_train // world_size
    if per_worker < batch_size:
        raise DataError(f"the training split has {n_train} images, {per_worker} per worker, fewer than one batch "
                        f"(train.batch_size={batch_size}): an epoch would train nothing",
                        "lower train.batch_size (--set train.batch_size=...), raise data.train_subset, "
                        "or use fewer --workers-per-trial")
