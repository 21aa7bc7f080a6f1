"""Image decoding: encoded JPEG / PNG bytes → one (N, C, H, W) uint8 array.

JPEG bytes go through `torchvision.io.decode_jpeg` on a list of tensors (the fast path, ~2 s
for CIFAR-10's 60k images on 2 cores; torch imported only when called); other formats (PNG)
through PIL. C = 1 when every image is grayscale, else 3 (grayscale images among colour ones
become RGB, alpha is dropped); every image must have the same size.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from raydistill.core.errors import UserError, first_line


def decode_images(blobs: Sequence[bytes], where: str) -> np.ndarray:
    """Encoded images → (N, C, H, W) uint8. JPEGs in one batched torchvision call; PNG etc. by PIL.

    C is 1 when every image is grayscale, else 3 (grayscale images among colour ones are
    repeated to RGB; alpha is dropped).

    `where` names the source in the error raised for undecodable or differently sized images.
    """
    if not blobs:
        return np.zeros((0, 3, 32, 32), np.uint8)
    is_jpeg = np.array([b[:3] == b"\xff\xd8\xff" for b in blobs], dtype=bool)
    out: list[np.ndarray | None] = [None] * len(blobs)
    jpeg_idx = np.flatnonzero(is_jpeg)
    if len(jpeg_idx):
        for i, img in zip(
            jpeg_idx, _decode_jpegs([blobs[i] for i in jpeg_idx], where), strict=True
        ):
            out[i] = img
    for i in np.flatnonzero(~is_jpeg):
        out[i] = _decode_pil(blobs[i], f"{where} image {i}")
    if len({a.shape[0] for a in out}) > 1:  # grayscale among colour images: make them RGB
        out = [np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a for a in out]
    _check_same_size(out, where)
    shapes = {out[0].shape}
    # Copy into one C-contiguous NCHW array: decoders hand out HWC memory seen as CHW, and
    # np.stack would keep that layout (np.save then writes it 10× slower).
    stacked = np.empty((len(out), *shapes.pop()), np.uint8)
    for i, img in enumerate(out):
        stacked[i] = img
    return stacked


def _check_same_size(images: Sequence[np.ndarray], where: str) -> None:
    """One-line refusal naming the first image whose size differs from the first one's."""
    first = images[0].shape[1:]
    for i, img in enumerate(images):
        if img.shape[1:] != first:
            n = sum(a.shape[1:] != first for a in images)
            raise UserError(
                f"{where}: images have mixed sizes: image 0 is {first[1]}×{first[0]} px, image {i} "
                f"is {img.shape[2]}×{img.shape[1]} px ({n} of {len(images)} differ); resize them "
                "to one size"
            )


def _decode_jpegs(blobs: list[bytes], where: str) -> list[np.ndarray]:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    try:
        images = decode_jpeg(tensors, mode=ImageReadMode.UNCHANGED)  # grayscale stays 1 channel
    except RuntimeError as e:
        raise UserError(f"{where}: a JPEG could not be decoded ({first_line(e)})") from None
    # CMYK and other >3-channel JPEGs are rare: decode just those again as RGB
    odd = [i for i, img in enumerate(images) if img.shape[0] not in (1, 3)]
    for i in odd:
        images[i] = decode_jpeg(tensors[i], mode=ImageReadMode.RGB)
    return [img.numpy() for img in images]


def _decode_pil(blob: bytes, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as im:
            gray = im.mode in ("1", "L", "LA", "I", "I;16", "F") or (
                im.mode == "P" and im.palette is not None and im.palette.mode == "L"
            )
            pixels = np.asarray(im.convert("L" if gray else "RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{where}: not a decodable JPEG/PNG image ({e})") from None
    if pixels.ndim == 2:
        return np.ascontiguousarray(pixels[None])  # (1, H, W)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # HWC → CHW
