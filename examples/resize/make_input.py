"""Writes a job input for the resize example: a generated test image, no download.

    python3 examples/resize/make_input.py > /tmp/resize-input.json
    cargo run -q --bin sluice -- submit --file /tmp/resize-input.json --wait

Options: --size WxH (default 640x480), --source-format JPEG|PNG (the test image's file format,
default JPEG), --format PNG|JPEG (what the job should answer with, default PNG), -o FILE.
With --image-only the image file itself is written (to -o), for an upload or the pipeline:

    python3 examples/resize/make_input.py --size 4000x3000 --image-only -o /tmp/photo.jpg
"""

import argparse
import base64
import io
import json
import sys

from PIL import Image, ImageDraw


def test_image(width, height):
    """A gradient with a few shapes, so the resized result is easy to eyeball."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 8, height // 8, width // 2, height // 2), fill=(220, 40, 40))
    draw.rectangle((width // 2, height // 2, width - width // 8, height - height // 8),
                   fill=(40, 90, 220))
    draw.line((0, height - 1, width - 1, 0), fill=(250, 220, 40), width=max(1, width // 100))
    return image


def image_bytes(width, height, fmt):
    out = io.BytesIO()
    test_image(width, height).save(out, fmt)
    return out.getvalue()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="640x480", help="WxH of the test image")
    parser.add_argument("--source-format", default="JPEG", choices=["JPEG", "PNG"])
    parser.add_argument("--format", default="PNG", choices=["PNG", "JPEG"])
    parser.add_argument("-o", "--output", help="write here instead of stdout")
    parser.add_argument("--image-only", action="store_true",
                        help="write the image file itself (needs -o), not a job input")
    args = parser.parse_args()
    try:
        width, height = (int(n) for n in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size must be WxH, like 640x480, not {args.size!r}")
    data = image_bytes(width, height, args.source_format)
    if args.image_only:
        if not args.output:
            parser.error("--image-only needs -o FILE")
        with open(args.output, "wb") as f:
            f.write(data)
        return
    text = json.dumps({"image": base64.b64encode(data).decode("ascii"), "format": args.format})
    if args.output:
        with open(args.output, "w", encoding="ascii") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
