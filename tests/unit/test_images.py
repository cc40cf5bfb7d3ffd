import io

import numpy as np
import pytest
from PIL import Image

from featurizer import images


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def gradient(mode: str = "RGB", size=(100, 100)) -> Image.Image:
    x = np.linspace(0, 255, size[0], dtype=np.uint8)
    rgb = np.stack([np.tile(x, (size[1], 1))] * 3, axis=-1)
    return Image.fromarray(rgb, "RGB").convert(mode)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("RGB", "JPEG"),
        ("L", "JPEG"),
        ("CMYK", "JPEG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("LA", "PNG"),
        ("1", "PNG"),
    ],
)
def test_every_mode_becomes_224x224_rgb(mode, fmt):
    array = images.decode(encode(gradient(mode), fmt))
    assert array.shape == (224, 224, 3) and array.dtype == np.uint8
    assert array[:, -1].mean() > array[:, 0].mean()  # the gradient survives


def test_16_bit_png_is_scaled_not_clipped():
    array16 = (np.tile(np.linspace(0, 65535, 64), (64, 1))).astype(np.uint16)
    decoded = images.decode(encode(Image.fromarray(array16)))  # mode I;16
    assert decoded[:, 0].mean() < 10 and decoded[:, -1].mean() > 240


def test_transparent_pixels_composite_on_white():
    clear = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    assert images.decode(encode(clear)).min() == 255


def test_exif_orientation_is_applied_to_the_pixels():
    # A left-to-right gradient tagged "rotate 90 clockwise to display" is shown running
    # top to bottom: every row one shade, dark at the top.
    exif = Image.Exif()
    exif[0x0112] = 6
    array = images.decode(encode(gradient("RGB", size=(60, 100)), "JPEG", exif=exif))
    gray = array.astype(np.float64).mean(axis=2)
    rows, columns = gray.mean(axis=1), gray.mean(axis=0)
    assert rows[0] < 10 and rows[-1] > 245 and np.all(np.diff(rows) >= -1)
    assert np.ptp(columns) < 3 and gray.std(axis=1).max() < 3


def test_big_jpegs_are_decoded_in_draft_mode():
    # A 3000x2000 JPEG decodes at 1/8 scale (375x250) before the resize to 224x224: the
    # pixels are those of the draft decode, not those of a full-size decode.
    noise = np.random.default_rng(0).integers(-40, 40, (2000, 3000, 3))
    photo = np.asarray(gradient(size=(3000, 2000)), np.int16) + noise
    data = encode(Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)), "JPEG", quality=90)

    def reference(draft: bool) -> np.ndarray:
        image = Image.open(io.BytesIO(data))
        if draft:
            image.draft("RGB", (images.SIZE, images.SIZE))
            assert image.size == (375, 250)
        rgb = image.convert("RGB").resize((images.SIZE, images.SIZE), Image.Resampling.BILINEAR)
        return np.asarray(rgb)

    decoded = images.decode(data)
    assert np.array_equal(decoded, reference(draft=True))
    assert not np.array_equal(decoded, reference(draft=False))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (None, "empty file"),
        (b"this is not an image at all", "UnidentifiedImageError: cannot identify image file"),
        (bytes(range(256)) * 40, "UnidentifiedImageError: cannot identify image file"),
        (b"\xff\xd8\xff\xe0 truncated", "OSError: Truncated File Read"),
    ],
)
def test_broken_files_raise_image_error_with_the_exact_reason(data, reason):
    with pytest.raises(images.ImageError) as raised:
        images.decode(data)
    assert str(raised.value) == reason


def test_truncated_jpeg_is_an_error():
    data = encode(gradient(), "JPEG")
    with pytest.raises(
        images.ImageError, match=r"^OSError: image file is truncated \(\d+ bytes not processed\)$"
    ):
        images.decode(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 50 * 50)
    with pytest.raises(images.ImageError, match=r"^image too large: 60x60 pixels \(limit 2,500\)$"):
        images.decode(encode(gradient(size=(60, 60))))


def test_tiny_and_large_images_decode():
    assert images.decode(encode(gradient(size=(7, 5)))).shape == (224, 224, 3)
    big = Image.new("RGB", (6000, 4000), (10, 200, 30))
    assert images.decode(encode(big, "JPEG", quality=50)).shape == (224, 224, 3)


def test_preprocess_scales_to_minus_one_one():
    batch = np.array([[[[0, 127, 255]]]], dtype=np.uint8)
    out = images.preprocess(batch)
    assert out.dtype == np.float32
    assert np.allclose(out.ravel(), [-1.0, 127 / 127.5 - 1, 1.0])


def test_preprocess_is_keras_formula_for_every_value_and_fills_out():
    values = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    expected = values.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    out = np.full((2, 16, 16, 1), 7.0, np.float32)
    got = images.preprocess(values, out=out)
    assert np.shares_memory(got, out)
    np.testing.assert_array_equal(got, expected)  # bit for bit, not close
    assert (out[1] == 7.0).all()  # only the batch's rows are written


def test_decode_many_keeps_order_and_reports_each_error():
    good = encode(gradient(), "JPEG")
    stacked, errors = images.decode_many([good, b"", good])
    assert stacked.shape == (2, 224, 224, 3)
    assert errors[0] is None and errors[1] == "empty file" and errors[2] is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", True),
        ("A.JPEG", True),
        ("x/y/b.Png", True),
        ("c.gif", False),
        (".hidden.jpg", False),
        ("_tmp.jpg", False),
        ("_year=2024.jpg", True),
        ("_metadata.jpg", True),
        ("x.jpg._COPYING_", False),
        ("notes.txt", False),
    ],
)
def test_jpeg_and_png_names_any_case_are_images_hidden_and_temporary_are_not(name, expected):
    assert images.is_image_name(name) is expected
