"""Resize an image to 224x224 with Pillow: the job of AWS's Fargate batch-processing sample.

Two ways in:

- A job with a file (``sluice submit --upload photo.jpg``, or a photo dropped in the pipeline's
  bucket under ``in/``): the image is the file, of any size (a 12-megapixel photo is fine). The
  224x224 image is written as the output file ``resized.png`` (or ``.jpg``), which the caller
  downloads from the job's ``outputs`` (``sluice download``) and which the pipeline writes under
  ``out/<name>/``. Output ``{"width": 224, "height": 224, "format": ..., "file": "resized.png",
  "source": {...}}``.
- Input ``{"image": "<base64 of an image file>"}``, for small images: the output then carries
  the resized image as base64 in ``"image"``.

``"format"``: ``"PNG"`` (default) or ``"JPEG"``, the output's format. The image is stretched to
the square (as a model's input layer wants), after turning it upright by its EXIF orientation.
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


def decode(input, path=None):
    """The input's image (the job's file when it has one), loaded, and its output format."""
    input = input if isinstance(input, dict) else {}
    fmt = input.get("format", "PNG")
    if not isinstance(fmt, str) or fmt.upper() not in FORMATS:
        raise sluice_handler.PermanentError(f'format must be "PNG" or "JPEG", not {fmt!r}')
    if path is not None:
        source, size = path, None
    else:
        if not isinstance(input.get("image"), str):
            raise sluice_handler.PermanentError(
                'the input must be {"image": "<base64>"}, or the job must have a file'
            )
        try:
            data = base64.b64decode(input["image"], validate=True)
        except (binascii.Error, ValueError) as e:
            raise sluice_handler.PermanentError(f"image is not valid base64: {e}") from None
        source, size = io.BytesIO(data), len(data)
    try:
        image = Image.open(source)
        image.load()
    except UnidentifiedImageError:
        what = f"{size} bytes" if size is not None else "the job's file"
        raise sluice_handler.PermanentError(
            f"image is not an image file Pillow can read ({what})"
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
    image, fmt = decode(input, ctx.input_path)
    source = {"width": image.width, "height": image.height, "format": image.format}
    ctx.progress(0.3, f"decoded a {image.width}x{image.height} {image.format}")
    options = {"quality": 90} if fmt == "JPEG" else {"optimize": True}
    result = {"width": SIZE[0], "height": SIZE[1], "format": fmt, "source": source}
    if ctx.input_path is not None and ctx.output_dir is not None:
        name = "resized.jpg" if fmt == "JPEG" else "resized.png"
        resize(image, fmt).save(ctx.output_file(name), fmt, **options)
        result["file"] = name
    else:
        out = io.BytesIO()
        resize(image, fmt).save(out, fmt, **options)
        result["image"] = base64.b64encode(out.getvalue()).decode("ascii")
    return result


if __name__ == "__main__":
    sluice_handler.run(handle)
