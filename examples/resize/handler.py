"""Resize an image to 224x224 with Pillow: the job of AWS's Fargate batch-processing sample.

Input ``{"image": "<base64 of an image file>", "format"?: "PNG" | "JPEG"}`` (default PNG).
Output ``{"image": "<base64 of the 224x224 image>", "width": 224, "height": 224, "format": ...,
"source": {"width": W, "height": H, "format": "JPEG"}}``. The image is stretched to the square
(as a model's input layer wants), after turning it upright by its EXIF orientation.
"""

import base64
import binascii
import io
import sys
from pathlib import Path

try:
    import sluice_handler
except ImportError:  # run from the repository without `pip install ./python`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
    import sluice_handler

from PIL import Image, ImageOps, UnidentifiedImageError

SIZE = (224, 224)
FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "JPG": "JPEG"}
# Modes each output format stores as they are; anything else is converted first.
KEEP_MODES = {"PNG": {"1", "L", "LA", "RGB", "RGBA"}, "JPEG": {"L", "RGB"}}


def decode(input):
    """The input's image, loaded, and its output format."""
    if not isinstance(input, dict) or not isinstance(input.get("image"), str):
        raise sluice_handler.PermanentError('the input must be {"image": "<base64>"}')
    fmt = input.get("format", "PNG")
    if not isinstance(fmt, str) or fmt.upper() not in FORMATS:
        raise sluice_handler.PermanentError(f'format must be "PNG" or "JPEG", not {fmt!r}')
    try:
        data = base64.b64decode(input["image"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise sluice_handler.PermanentError(f"image is not valid base64: {e}") from None
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:
        raise sluice_handler.PermanentError(
            f"image is not an image file Pillow can read ({len(data)} bytes)"
        ) from None
    except Image.DecompressionBombError as e:
        raise sluice_handler.PermanentError(f"image is too large: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt files
        raise sluice_handler.PermanentError(f"image is damaged: {e}") from None
    return image, FORMATS[fmt.upper()]


def resize(image, fmt):
    """``image`` upright, in a mode ``fmt`` stores, stretched to SIZE."""
    upright = ImageOps.exif_transpose(image)
    if upright.mode not in KEEP_MODES[fmt]:
        has_alpha = "A" in upright.getbands() or "transparency" in upright.info
        upright = upright.convert("RGBA" if has_alpha and fmt == "PNG" else "RGB")
    return upright.resize(SIZE, Image.Resampling.LANCZOS)


def handle(input, ctx):
    image, fmt = decode(input)
    source = {"width": image.width, "height": image.height, "format": image.format}
    ctx.progress(0.3, f"decoded a {image.width}x{image.height} {image.format}")
    out = io.BytesIO()
    resize(image, fmt).save(out, fmt, **({"quality": 90} if fmt == "JPEG" else {"optimize": True}))
    return {
        "image": base64.b64encode(out.getvalue()).decode("ascii"),
        "width": SIZE[0],
        "height": SIZE[1],
        "format": fmt,
        "source": source,
    }


if __name__ == "__main__":
    sluice_handler.run(handle)
