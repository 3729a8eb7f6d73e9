"""The resize example as the worker runs it: a child process speaking worker/PROTOCOL.md.

    python3 -m unittest discover -s examples/resize -v    # with requirements.txt installed
"""

import base64
import importlib.util
import io
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "python" / "tests"))
sys.path.insert(0, str(HERE))

from protocol_client import HandlerProcess  # noqa: E402 - after the path is set

HAVE_REQUIREMENTS = importlib.util.find_spec("PIL") is not None


def b64(data):
    return base64.b64encode(data).decode("ascii")


@unittest.skipUnless(HAVE_REQUIREMENTS, "Pillow is not installed: "
                     "pip install -r examples/resize/requirements.txt")
class ResizeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc = HandlerProcess.python(str(HERE / "handler.py"))
        assert cls.proc.recv() == {"type": "ready"}

    @classmethod
    def tearDownClass(cls):
        code = cls.proc.close()
        cls.proc.kill()
        assert code == 0, f"exit code {code}; stderr:\n{cls.proc.stderr()}"

    def resized(self, input):
        from PIL import Image

        self.proc.job("job", input)
        progress = self.proc.recv()
        self.assertEqual(progress["type"], "progress", progress)
        answer = self.proc.recv()
        self.assertEqual(answer["type"], "result", answer)
        result = answer["result"]
        image = Image.open(io.BytesIO(base64.b64decode(result["image"])))
        self.assertEqual(image.size, (224, 224))
        self.assertEqual((result["width"], result["height"]), (224, 224))
        self.assertEqual(image.format, result["format"])
        return result, image

    def test_a_640x480_jpeg_becomes_a_224x224_png(self):
        from make_input import image_bytes

        result, image = self.resized({"image": b64(image_bytes(640, 480, "JPEG"))})
        self.assertEqual(result["source"], {"width": 640, "height": 480, "format": "JPEG"})
        self.assertEqual(image.format, "PNG")
        # The red disc in the top left quarter is still there.
        r, g, b = image.convert("RGB").getpixel((70, 70))
        self.assertGreater(r, 150)
        self.assertLess(g, 100)

    def test_jpeg_output_and_transparent_png_input(self):
        from PIL import Image

        source = io.BytesIO()
        Image.new("RGBA", (300, 100), (0, 128, 255, 100)).save(source, "PNG")
        result, image = self.resized({"image": b64(source.getvalue()), "format": "jpeg"})
        self.assertEqual(result["source"], {"width": 300, "height": 100, "format": "PNG"})
        self.assertEqual((image.format, image.mode), ("JPEG", "RGB"))

    def test_a_12_megapixel_photo_file_becomes_an_output_file(self):
        import tempfile

        from make_input import image_bytes
        from PIL import Image

        with tempfile.TemporaryDirectory() as tmp:
            photo = Path(tmp) / "photo.jpg"
            photo.write_bytes(image_bytes(4000, 3000, "JPEG"))
            out = Path(tmp) / "out"
            out.mkdir()
            self.proc.job("file", {"bucket": "b", "key": "in/photo.jpg"},
                          input_file=str(photo), output_dir=str(out))
            self.assertEqual(self.proc.recv()["type"], "progress")
            answer = self.proc.recv()
            self.assertEqual(answer["type"], "result", answer)
            result = answer["result"]
            self.assertEqual(result["file"], "resized.png")
            self.assertNotIn("image", result)
            self.assertEqual(result["source"], {"width": 4000, "height": 3000, "format": "JPEG"})
            with Image.open(out / "resized.png") as image:
                self.assertEqual((image.size, image.format), ((224, 224), "PNG"))

    def test_bad_inputs_fail_for_good(self):
        from make_input import image_bytes

        jpeg = image_bytes(640, 480, "JPEG")
        truncated_jpeg = jpeg[: len(jpeg) // 2]
        for input, expected in (
            ({"image": "not base64 at all!"}, "not valid base64"),
            ({"image": b64(b"hello, I am text")}, "not an image"),
            ({"image": b64(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)}, "not an image"),
            ({"image": b64(truncated_jpeg)}, "damaged"),
            ({"image": b64(b"")}, "not an image"),
            ({"image": b64(b"GIF89a"), "format": "TIFF"}, "format must be"),
            ({"picture": "x"}, "the input must be"),
            ([1, 2], "the input must be"),
        ):
            with self.subTest(input=str(input)[:40]):
                answer = self.proc.call("bad", input)
                self.assertEqual(answer["type"], "error")
                self.assertFalse(answer["retryable"], answer)
                self.assertIn(expected, answer["message"])


if __name__ == "__main__":
    unittest.main()
