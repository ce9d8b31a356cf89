"""Check that a PNG written by the package is a real picture: it decodes, has the size it was drawn at, is not blank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def assert_picture(path: str | Path, size: tuple[int, int] | None = None, *, min_size: tuple[int, int] = (100, 100)
                   ) -> np.ndarray:
    """Decode the PNG at ``path`` and return its RGB pixels [height, width, 3].

    ``size`` is the expected (width, height) in pixels (figure size in inches times dpi);
    without it the picture must be at least ``min_size``. A picture of one colour fails.
    """
    with Image.open(path) as image:
        assert image.format == "PNG", f"{path} is a {image.format}, not a PNG"
        image.load()  # decodes every byte: a truncated or corrupt file raises here
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"))
    if size is not None:
        assert (width, height) == tuple(size), f"{path} is {width} x {height} pixels, expected {size[0]} x {size[1]}"
    else:
        assert width >= min_size[0] and height >= min_size[1], f"{path} is only {width} x {height} pixels"
    assert pixels.std() > 0 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1, f"{path} is blank"
    return pixels
