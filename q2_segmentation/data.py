"""The course's COCO segmentation subset, decoded once into uint8 tensors, with batched joint augmentation.

Layout (the course's data/ folder): classes.txt; train/ and val/ hold N.jpg (RGB 224x224) with N.png
(mode L, values 0..5); test/ holds N.jpg only. Items are in the course's order: file names sorted as
strings (0, 1, 10, 100, 101, ...), the order the autograder expects in the prediction file.
"""
import filecmp
import functools
import itertools
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from common.command import UserError
from common.predict import View, flip_back, resize_to
from common.training import batch_bounds

IMAGE_SIZE = 224
CLASSES = ("background", "sports", "accessory", "animal", "vehicle", "person")
IGNORE = 255  # label of pixels the loss leaves out (the frame around a shrunken image)
FILL = (124, 116, 104)  # the frame's colour: ImageNet's mean pixel
LUMA = (0.299, 0.587, 0.114)  # grey = these weights of R, G, B (ITU-R BT.601)
SPLITS = ("train", "val", "test")


@dataclass
class Split:
    names: list[str]  # file stems in the course's order
    images: torch.Tensor  # uint8 (N, 3, 224, 224)
    labels: torch.Tensor | None = None  # uint8 (N, 224, 224); None for the unlabelled test split


def read_classes(data_dir):
    path = Path(data_dir) / "classes.txt"
    if not path.is_file():
        raise UserError(f"{path} not found; fill data/ with `cs543-prepare-data --source "
                        "PATH_TO_COURSE_DATA` (the course's data folder or data.zip)")
    # utf-8-sig: a byte-order mark (what Notepad writes) is no part of the first name; splitlines: CRLF line ends
    names = tuple(line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip())
    if names != CLASSES:
        differ = [f"line {index + 1}: expected {want!r}, found {got!r}"
                  for index, (want, got) in enumerate(itertools.zip_longest(CLASSES, names, fillvalue=None))
                  if want != got]
        raise UserError(f"{path}: not the course's 6 classes in their order ({'; '.join(differ)})")
    return names


COURSE_NAME = re.compile(r"(0|[1-9][0-9]*)\.(jpg|png)")  # the course's own files: 0.jpg, 108.png, ...


def split_files(folder):
    """(course files, other files) of a split folder, by name: only N.jpg and N.png are the course's.

    Data fetched through a cloud drive often gains copies such as `108(1).jpg`, `108 (1).png` or
    `Copy of 108.jpg`; they are not course items, and neither is anything else in the folder.
    """
    course, other = [], []
    for path in sorted(Path(folder).iterdir()):
        (course if path.is_file() and COURSE_NAME.fullmatch(path.name) else other).append(path)
    return course, other


def ignored_warning(folder, other):
    """One line about the files a split folder holds besides the course's, or None; names the copies whose
    bytes differ from the file they seem to copy (`108(1).jpg` from `108.jpg`), which the user may want to see."""
    if not other:
        return None
    differ = []
    for path in other:
        number = re.search(r"[0-9]+", path.stem)
        original = path.with_name(f"{int(number.group())}{path.suffix}") if number else None
        if original is not None and original.is_file() and path.is_file():
            if not filecmp.cmp(path, original, shallow=False):
                differ.append(f"{path.name} vs {original.name}")
    line = f"ignored {len(other)} files not named N.jpg/N.png in {folder} (e.g. {other[0].name})"
    if differ:
        line += f"; {len(differ)} of them differ from the file they copy (e.g. {differ[0]}): worth a look"
    return line


def list_items(folder, labelled):
    """File stems of `folder` in the course's order, checking every image has its label and back.

    Files not named N.jpg/N.png are left out, with one warning line (see ignored_warning).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} not found; fill data/ with `cs543-prepare-data --source "
                        "PATH_TO_COURSE_DATA` (the course's data folder or data.zip)")
    course, other = split_files(folder)
    warning = ignored_warning(folder, other)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    stems = sorted(path.stem for path in course if path.suffix == ".jpg")  # as strings: the course's order
    if not stems:
        raise UserError(f"{folder}: no .jpg images named N.jpg")
    if labelled:
        labels = {path.stem for path in course if path.suffix == ".png"}
        for stem in stems:
            if stem not in labels:
                raise UserError(f"{folder / (stem + '.jpg')}: its label {stem}.png is missing")
        orphans = sorted(labels - set(stems))
        if orphans:
            raise UserError(f"{folder / (orphans[0] + '.png')}: label without its image {orphans[0]}.jpg")
    return stems


def _decode(path, mode):
    try:
        with Image.open(path) as image:
            image.load()
            if mode == "RGB":
                image = image.convert("RGB")
            elif image.mode not in ("L", "P"):
                raise UserError(f"{path}: label image has mode {image.mode}, expected L (one value per pixel)")
            array = np.asarray(image)
    except UserError:
        raise
    except Exception as error:  # PIL raises several types on damaged files
        raise UserError(f"{path}: cannot decode ({type(error).__name__}: {error})") from None
    if array.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
        raise UserError(f"{path}: size {array.shape[1]}x{array.shape[0]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    return array


def load_split(data_dir, split, limit=None):
    """Decode a split once: uint8 images (N, 3, H, W) and, for train/val, uint8 labels (N, H, W)."""
    labelled = split != "test"
    folder = Path(data_dir) / split
    names = list_items(folder, labelled)[:limit]
    images = np.stack([_decode(folder / f"{name}.jpg", "RGB") for name in names])
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    labels = None
    if labelled:
        arrays = []
        for name in names:
            label = _decode(folder / f"{name}.png", "L")
            if label.max() >= len(CLASSES):
                raise UserError(f"{folder / (name + '.png')}: label value {label.max()} is outside "
                                f"0..{len(CLASSES) - 1}")
            arrays.append(label)
        labels = torch.from_numpy(np.stack(arrays))
    return Split(names, images, labels)


def augment(images, labels, max_scale=1.0, min_scale=1.0, color=0.0, crop=None):
    """Joint augmentation of a uint8 batch and its label maps, as batched tensor ops.

    - A horizontal flip for half the batch.
    - With a scale range other than [1, 1]: the batch is resized by one random factor in [min_scale,
      max_scale] (bilinear for images, nearest-exact for labels) and each item cut back to the input
      size (or `crop`) at its own random position: a crop where it grew; where it shrank, a frame of
      grey pixels whose labels are IGNORE, so the loss leaves them out.
    - With color > 0: each image's brightness, contrast and saturation scaled by its own random factors
      in [1 - color, 1 + color].
    - With `crop` smaller than the input: each item is cut to a crop x crop window (after the resizing),
      at its own random position. The network is fully convolutional, so it still predicts whole images;
      a 176-pixel window costs 0.62x the time of a 224-pixel image to train on.
    """
    batch, _, in_height, in_width = images.shape
    height, width = (crop, crop) if crop else (in_height, in_width)  # the output's size
    device = images.device
    flip = torch.rand(batch, device=device) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    labels = torch.where(flip.view(-1, 1, 1), labels.flip(-1), labels)
    rescale = (min_scale, max_scale) != (1.0, 1.0)
    if rescale or (height, width) != (in_height, in_width):
        size = (in_height, in_width)
        if rescale:
            scale = min_scale + (max_scale - min_scale) * torch.rand(()).item()  # a CPU draw: no GPU wait
            size = (round(in_height * scale), round(in_width * scale))
            images = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False)
            images = images.round_().clamp_(0, 255).to(torch.uint8)
            # "nearest-exact" samples pixel centres as bilinear (align_corners=False) does; "nearest" is shifted
            labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")[:, 0].to(torch.uint8)
        # each item's window into the resized batch: offsets in [0, grown] or [-shrunk, 0]
        low = [min(0, s - t) for s, t in zip(size, (height, width), strict=True)]
        high = [max(0, s - t) for s, t in zip(size, (height, width), strict=True)]
        top = torch.randint(low[0], high[0] + 1, (batch, 1), device=device)
        left = torch.randint(low[1], high[1] + 1, (batch, 1), device=device)
        rows = (top + torch.arange(height, device=device)).view(batch, 1, height, 1)
        columns = (left + torch.arange(width, device=device)).view(batch, 1, 1, width)
        inside = (rows >= 0) & (rows < size[0]) & (columns >= 0) & (columns < size[1])
        rows, columns = rows.clamp(0, size[0] - 1), columns.clamp(0, size[1] - 1)
        item = torch.arange(batch, device=device).view(batch, 1, 1, 1)
        images = images[item, torch.arange(3, device=device).view(1, 3, 1, 1), rows, columns]
        images = torch.where(inside, images, _constant(FILL, torch.uint8, device).view(1, 3, 1, 1))
        labels = torch.where(inside[:, 0], labels[item[:, 0], rows[:, 0], columns[:, 0]], IGNORE)
    if color > 0:
        images = jitter_colors(images, color)
    return images, labels


@functools.lru_cache
def _constant(values, dtype, device):
    """A small constant tensor, made on `device` once: a fresh copy to a GPU every batch would wait for it."""
    return torch.tensor(values, dtype=dtype, device=device)


def jitter_colors(images, strength):
    """Scale each uint8 image's brightness, contrast and saturation by random factors in 1 +- strength."""
    batch = images.shape[0]
    factors = 1 + strength * (2 * torch.rand(3, batch, 1, 1, 1, device=images.device) - 1)
    x = images.float() * factors[0]  # brightness
    x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) * factors[1] + x.mean(dim=(1, 2, 3), keepdim=True)  # contrast
    grey = (x * _constant(LUMA, torch.float32, images.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    x = (x - grey) * factors[2] + grey  # saturation
    return x.round_().clamp_(0, 255).to(torch.uint8)


def batches(split, batch_size, normalize, augmented, max_scale=1.0, min_scale=1.0, color=0.0, crop=None):
    """Yield (normalised float images, int64 labels) in a fresh random order each call, on the split's device.

    A last batch of one joins the batch before it (BatchNorm cannot train on one image).
    """
    order = torch.randperm(len(split.images), device=split.images.device)
    for start, end in batch_bounds(len(order), batch_size):
        index = order[start:end]
        images, labels = split.images[index], split.labels[index]
        if augmented:
            images, labels = augment(images, labels, max_scale, min_scale, color, crop)
        yield normalize(images), labels.long()


def describe_views(evaluation):
    """The test-time views of these settings, in words: what a run prints and records, and the report shows."""
    if not evaluation["tta"]:
        return "1 test-time view (the image)"
    scales = list(evaluation.get("tta_scales") or [1.0])
    if scales == [1.0]:
        return "2 test-time views (the image and its mirror)"
    return (f"{2 * len(scales)} test-time views (the image and its mirror at scales "
            f"{', '.join(f'{s:g}' for s in scales)})")


def views(normalize, tta, scales):
    """Q2's test-time views for common.predict: the normalised image at each of `scales` (bilinear), and with
    `tta` its mirror image too; each view's per-pixel output is mirrored back, then resized back."""
    found = []
    for scale in scales:
        for mirrored in (False, True) if tta else (False,):
            def transform(chunk, scale=scale, mirrored=mirrored):
                inputs = normalize(chunk)
                if scale != 1:
                    inputs = F.interpolate(inputs, scale_factor=scale, mode="bilinear", align_corners=False)
                return inputs.flip(-1) if mirrored else inputs

            def inverse(outputs, size, scale=scale, mirrored=mirrored):
                outputs = flip_back(outputs, size) if mirrored else outputs
                return resize_to(outputs, size) if scale != 1 else outputs

            found.append(View(f"{'mirror ' * mirrored}scale {scale:g}", transform,
                              inverse if (mirrored or scale != 1) else None))
    return found
