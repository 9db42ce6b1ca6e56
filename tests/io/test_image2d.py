import numpy as np
import pytest
from skimage import io as skio

from medtl.io import load_scan


def test_png_8bit_is_transposed_to_ij_order(tmp_path):
    img = (np.arange(12 * 20) % 256).astype(np.uint8).reshape(12, 20)  # rows x cols
    skio.imsave(tmp_path / "a.png", img, check_contrast=False)
    scan = load_scan(tmp_path / "a.png")
    assert scan.shape == (20, 12, 1) and scan.array.dtype == np.uint8
    np.testing.assert_array_equal(scan.array[:, :, 0], img.T)
    assert scan.is_2d and scan.format == "image" and scan.spacing == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_depth_is_kept(tmp_path, suffix):
    img = np.random.default_rng(1).integers(0, 65535, size=(9, 11), dtype=np.uint16)
    skio.imsave(tmp_path / f"b{suffix}", img, check_contrast=False)
    scan = load_scan(tmp_path / f"b{suffix}")
    assert scan.array.dtype == np.uint16
    np.testing.assert_array_equal(scan.array[:, :, 0], img.T)


def test_rgb_kept_unless_grayscale_asked(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 255, size=(8, 10, 3), dtype=np.uint8)
    skio.imsave(tmp_path / "c.png", rgb, check_contrast=False)
    scan = load_scan(tmp_path / "c.png")
    assert scan.is_color and scan.array.shape == (10, 8, 1, 3) and scan.photometric == "RGB"
    gray = load_scan(tmp_path / "c.png", grayscale=True)
    expected = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(gray.array[:, :, 0], expected.T, rtol=1e-6)
    assert not gray.is_color


def test_jpeg_loads(tmp_path):
    img = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (16, 1))
    skio.imsave(tmp_path / "d.jpg", img, check_contrast=False)
    scan = load_scan(tmp_path / "d.jpg")
    assert scan.shape == (32, 16, 1)
    assert np.abs(scan.array[:, :, 0].astype(int) - img.T).max() <= 8  # lossy


def test_cmyk_jpeg_is_the_rgb_picture_its_inks_make(tmp_path):
    from PIL import Image

    Image.new("CMYK", (12, 8), (10, 20, 30, 40)).save(tmp_path / "cmyk.jpg", quality=100)
    expected = np.asarray(Image.open(tmp_path / "cmyk.jpg").convert("RGB"))  # light grey, not the dark inks
    scan = load_scan(tmp_path / "cmyk.jpg")
    assert scan.photometric == "RGB" and scan.array.shape == (12, 8, 1, 3)
    np.testing.assert_array_equal(scan.array[:, :, 0], expected.transpose(1, 0, 2))


def test_gray_png_with_alpha_loads_as_gray(tmp_path):
    from PIL import Image

    gray = np.random.default_rng(3).integers(0, 255, size=(8, 10), dtype=np.uint8)
    Image.fromarray(np.stack([gray, np.full_like(gray, 255)], -1), "LA").save(tmp_path / "la.png")
    scan = load_scan(tmp_path / "la.png")
    assert scan.photometric == "MONOCHROME2" and scan.shape == (10, 8, 1)
    np.testing.assert_array_equal(scan.array[:, :, 0], gray.T)


def test_a_broken_tiff_is_refused_without_library_log_lines_on_stderr(tmp_path, caplog):
    from medtl.errors import ScanError

    (tmp_path / "cut.tif").write_bytes(b"II*\x00" + (530516).to_bytes(4, "little") + bytes(92))
    with pytest.raises(ScanError, match="cut.tif"):
        load_scan(tmp_path / "cut.tif")
    import io
    import struct

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, "TIFF")
    raw = bytearray(buf.getvalue())
    ifd = struct.unpack("<I", raw[4:8])[0]
    end = ifd + 2 + 12 * struct.unpack("<H", raw[ifd:ifd + 2])[0]
    raw[end:end + 4] = struct.pack("<I", ifd)  # the next page is this page again: a circular chain
    (tmp_path / "loop.tif").write_bytes(bytes(raw))
    assert load_scan(tmp_path / "loop.tif").shape == (4, 4, 1)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("tifffile")] == []


@pytest.mark.parametrize("second", [(64, 48), (32, 48)])
def test_a_multi_page_tiff_is_refused_whatever_its_pages_sizes(tmp_path, second):
    """Pages of one size were refused, pages of two sizes read as the first page alone, silently."""
    from PIL import Image

    from medtl.errors import ScanError

    Image.new("L", (64, 48)).save(tmp_path / "pages.tif", save_all=True, append_images=[Image.new("L", second)])
    with pytest.raises(ScanError, match=r"pages.tif: .*not a single 2D picture"):
        load_scan(tmp_path / "pages.tif")
