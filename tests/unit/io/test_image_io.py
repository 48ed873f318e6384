"""Image and mask reading rules (modes, bit depths, corrupt files, masks) and their use by the datamodules."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from anomalib_surface.data.checked_dataset import MVTecLayoutDataset, check_image_files
from anomalib_surface.data.rto_variant import make_mad_rto
from anomalib_surface.data.texture_folder import TextureFolder
from anomalib_surface.io.image_io import (
    OrientationWarning,
    ImageReadError,
    MaskError,
    check_mask_size,
    image_size_of,
    read_image,
    read_mask,
)

GREY = np.array([[0, 64], [128, 255]], dtype=np.uint8)
GREY_16 = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def _expected_grey(values: np.ndarray, scale: float) -> torch.Tensor:
    return torch.from_numpy(values.astype(np.float32) / scale).expand(3, *values.shape)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grey_uses_the_full_range(tmp_path: Path, suffix: str) -> None:
    """anomalib's reader clips 16-bit grey to white above 255; ours divides by 65535."""
    image = read_image(_save(tmp_path / f"grey16{suffix}", GREY_16))
    torch.testing.assert_close(image, _expected_grey(GREY_16, 65535))


def test_16_bit_colour_is_reduced_to_8_bits_by_pillow(tmp_path: Path) -> None:
    colour = np.stack([GREY_16, GREY_16[::-1], GREY_16.T], axis=-1)
    tifffile.imwrite(tmp_path / "rgb16.tif", colour, photometric="rgb")
    image = read_image(tmp_path / "rgb16.tif")
    torch.testing.assert_close(image, torch.from_numpy((colour >> 8).astype(np.float32) / 255).permute(2, 0, 1))


def test_tiffs_pillow_cannot_decode_are_read_with_tifffile(tmp_path: Path) -> None:
    colour = np.stack([GREY, GREY[::-1], GREY.T], axis=-1).astype(np.float32) / 255
    tifffile.imwrite(tmp_path / "float_rgb.tif", colour, photometric="rgb")
    torch.testing.assert_close(read_image(tmp_path / "float_rgb.tif"), torch.from_numpy(colour).permute(2, 0, 1))
    tifffile.imwrite(tmp_path / "five.tif", np.zeros((2, 2, 5), dtype=np.uint16), photometric="minisblack", planarconfig="contig")
    with pytest.raises(ImageReadError, match=r"Image '.*five.tif' has 5 channels; expected grey, RGB or RGBA"):
        read_image(tmp_path / "five.tif")


def test_grey_and_one_bit_images_are_copied_to_three_channels(tmp_path: Path) -> None:
    torch.testing.assert_close(read_image(_save(tmp_path / "grey.png", GREY)), _expected_grey(GREY, 255))
    binary = _save(tmp_path / "bits.png", GREY > 100, mode=None)
    assert Image.open(binary).mode == "1"
    torch.testing.assert_close(read_image(binary), _expected_grey((GREY > 100).astype(np.uint8), 1))


def test_alpha_is_dropped_not_composited(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red stays red
    torch.testing.assert_close(read_image(_save(tmp_path / "rgba.png", rgba)), torch.tensor([200 / 255, 0, 0]).view(3, 1, 1).expand(3, 2, 2))
    la = np.stack([GREY, np.zeros_like(GREY)], axis=-1)
    torch.testing.assert_close(read_image(_save(tmp_path / "la.png", la, mode="LA")), _expected_grey(GREY, 255))


def test_palette_images_are_looked_up(tmp_path: Path) -> None:
    palette_image = Image.fromarray(np.array([[0, 1], [1, 0]], dtype=np.uint8), mode="P")
    palette_image.putpalette([10, 20, 30, 250, 240, 230] + [0] * 762)
    palette_image.save(tmp_path / "palette.png")
    image = read_image(tmp_path / "palette.png")
    assert image.shape == (3, 2, 2)
    torch.testing.assert_close(image[:, 0, 1] * 255, torch.tensor([250.0, 240.0, 230.0]))


def test_float_images_must_lie_in_the_unit_range(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    torch.testing.assert_close(read_image(_save(tmp_path / "ok.tif", values)), _expected_grey(values, 1))
    with pytest.raises(ImageReadError, match=r"32-bit float image '.*bad.tif' has values in \[0.0, 3.0\]"):
        read_image(_save(tmp_path / "bad.tif", values * 3))


@pytest.mark.parametrize("content", [b"not an image", b""])
def test_garbage_files_name_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    for read in (read_image, read_mask, image_size_of):
        with pytest.raises(ImageReadError, match=r"Cannot read image file '.*broken.png'"):
            read(path)


def test_truncated_file_names_the_file(tmp_path: Path) -> None:
    source = _save(tmp_path / "full.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(ImageReadError, match=r"'.*truncated.png'"):
        image_size_of(truncated)
    with pytest.raises(ImageReadError, match=r"'.*truncated.png'"):
        read_image(truncated)


@pytest.mark.parametrize(
    ("array", "mode"),
    [
        (np.array([[0, 255], [255, 0]], dtype=np.uint8), None),
        (np.array([[0, 1], [1, 0]], dtype=np.uint8), None),  # 0/1 masks (anomalib's reader keeps them too)
        (np.array([[0, 65535], [65535, 0]], dtype=np.uint16), None),
        (np.array([[[0, 0, 0], [255, 0, 0]], [[255, 0, 0], [0, 0, 0]]], dtype=np.uint8), None),  # colour mask
    ],
)
def test_binary_masks_of_any_value(tmp_path: Path, array: np.ndarray, mode: str | None) -> None:
    mask = read_mask(_save(tmp_path / "mask.png", array, mode))
    assert mask.dtype == torch.uint8
    torch.testing.assert_close(mask, torch.tensor([[0, 1], [1, 0]], dtype=torch.uint8))


def test_non_binary_masks_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MaskError, match=r"Mask '.*soft.png' is not binary: it holds 3 values"):
        read_mask(_save(tmp_path / "soft.png", np.array([[0, 128], [255, 0]], dtype=np.uint8)))
    square = np.zeros((32, 32), dtype=np.uint8)
    square[5:21, 3:19] = 255
    Image.fromarray(square).save(tmp_path / "lossy.jpg", quality=50)
    with pytest.raises(MaskError, match=r"lossy.jpg' is not binary.*PNG, not JPEG"):
        read_mask(tmp_path / "lossy.jpg")


def test_mask_size_check_names_both_files() -> None:
    with pytest.raises(MaskError, match=r"Mask 'm.png' is 4x5 \(HxW\) but its image 'i.png' is 8x8"):
        check_mask_size("m.png", (4, 5), "i.png", (8, 8))
    check_mask_size("m.png", (8, 8), "i.png", (8, 8))


def _mvtec_category(root: Path, train: list[np.ndarray], mask: np.ndarray | None = None) -> Path:
    """``root/widget`` in the MVTec AD layout: training images, one good and one defective test image."""
    category = root / "widget"
    for index, image in enumerate(train):
        _save(category / "train" / "good" / f"{index:03d}.png", image)
    _save(category / "test" / "good" / "000.png", train[0])
    _save(category / "test" / "dent" / "000.png", train[0])
    if mask is None:
        mask = np.zeros(train[0].shape[:2], dtype=np.uint8)
        mask[:2, :2] = 255
    _save(category / "ground_truth" / "dent" / "000_mask.png", mask)
    return category


def test_mvtec_layout_dataset_reads_16_bit_grey_and_checks_files(tmp_path: Path) -> None:
    image = np.full((8, 8), 40000, dtype=np.uint16)
    _mvtec_category(tmp_path, [image, image])
    item = MVTecLayoutDataset(tmp_path, "widget", "train")[0]
    torch.testing.assert_close(item.image, torch.full((3, 8, 8), 40000 / 65535))
    test_item = MVTecLayoutDataset(tmp_path, "widget", "test")[0]
    assert int(test_item.gt_mask.sum()) == 4


def test_mvtec_layout_dataset_refuses_bad_masks_and_corrupt_images(tmp_path: Path) -> None:
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    category = _mvtec_category(tmp_path, [image], mask=np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(MaskError, match=r"Mask '.*000_mask.png' is 4x4 \(HxW\) but its image '.*dent/000.png' is 8x8"):
        MVTecLayoutDataset(tmp_path, "widget", "test")
    (category / "train" / "good" / "000.png").write_bytes(b"corrupt")
    with pytest.raises(ImageReadError, match=r"Cannot read image file '.*train/good/000.png'"):
        MVTecLayoutDataset(tmp_path, "widget", "train")


def test_mvtec_layout_dataset_refuses_an_empty_training_folder(tmp_path: Path) -> None:
    category = _mvtec_category(tmp_path, [np.zeros((8, 8, 3), dtype=np.uint8)])
    (category / "train" / "good" / "000.png").unlink()
    with pytest.raises(ValueError, match=r"No images found in '.*widget/train'"):
        MVTecLayoutDataset(tmp_path, "widget", "train")


def test_mad_rto_converts_modes_and_refuses_non_binary_masks(tmp_path: Path) -> None:
    grey = np.full((16, 16), 30000, dtype=np.uint16)
    _mvtec_category(tmp_path / "source", [grey, grey])
    root = make_mad_rto(tmp_path / "source", "widget", tmp_path / "rto", max_angle=0.0, crop_scale=1.0)
    item = MVTecLayoutDataset(root, "widget", "train")[0]
    assert item.image.shape == (3, 16, 16)
    torch.testing.assert_close(item.image, torch.full((3, 16, 16), round(30000 / 65535 * 255) / 255))
    soft = np.zeros((16, 16), dtype=np.uint8)
    soft[:4, :4], soft[4:6, :4] = 255, 100
    _mvtec_category(tmp_path / "soft", [grey], mask=soft)
    with pytest.raises(MaskError, match=r"Mask '.*soft/widget/ground_truth/dent/000_mask.png' is not binary"):
        make_mad_rto(tmp_path / "soft", "widget", tmp_path / "rto_soft")


def _texture_pattern(root: Path, train: np.ndarray, mask: np.ndarray) -> None:
    pattern = root / "leather" / "a"
    _save(pattern / "train" / "good" / "000.png", train)
    _save(pattern / "test" / "good" / "000.png", train)
    _save(pattern / "test" / "hole" / "000.png", train)
    _save(pattern / "ground_truth" / "hole" / "000.png", mask)


def test_texture_folder_reads_rgba_and_refuses_non_binary_masks(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 1] = 255
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[0, 0] = 1
    _texture_pattern(tmp_path / "good_masks", rgba, mask)
    datamodule = TextureFolder(tmp_path / "good_masks", "leather", "a", num_workers=0)
    datamodule.setup()
    item = datamodule.train_data[0]
    torch.testing.assert_close(item.image[:, 0, 0], torch.tensor([0.0, 1.0, 0.0]))
    assert [int(item.gt_mask.sum()) for item in datamodule.test_data] == [0, 1]
    mask[1, 1] = 2
    _texture_pattern(tmp_path / "soft_masks", rgba, mask)
    with pytest.raises(MaskError, match=r"ground_truth/hole/000.png' is not binary"):
        TextureFolder(tmp_path / "soft_masks", "leather", "a", num_workers=0).setup()


def _save_oriented(path: Path, array: np.ndarray, orientation: int | None) -> Path:
    """Save ``array`` with an EXIF orientation tag (``None``: no tag), as a camera would."""
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, exif=exif)
    return path


def test_exif_orientation_is_applied_to_images_and_masks_alike(tmp_path: Path) -> None:
    """Orientation 6 (stored rotated; displayed turned 90 degrees clockwise): a 4x6 array reads as 6x4."""
    image = np.zeros((4, 6, 3), dtype=np.uint8)
    image[0, 0] = 255  # top-left as stored
    mask = (image[..., 0] > 0).astype(np.uint8) * 255
    image_path = _save_oriented(tmp_path / "photo.png", image, 6)
    mask_path = _save_oriented(tmp_path / "photo_mask.png", mask, 6)
    pixels = read_image(image_path)
    assert pixels.shape == (3, 6, 4)
    assert image_size_of(image_path) == (6, 4)
    assert pixels[0, 0, -1] == 1.0  # stored top-left is displayed top-right
    torch.testing.assert_close(read_mask(mask_path), (pixels[0] > 0).to(torch.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_mask_size(mask_path, read_mask(mask_path).shape, image_path, image_size_of(image_path))


def test_a_mask_drawn_on_the_other_orientation_is_reported(tmp_path: Path) -> None:
    square = np.zeros((8, 8), dtype=np.uint8)
    square[0, :3] = 255
    image_path = _save_oriented(tmp_path / "square.png", np.stack([square] * 3, axis=-1), 6)
    mask_path = _save_oriented(tmp_path / "square_mask.png", square, None)
    with pytest.warns(OrientationWarning, match=r"orientation of mask '.*square_mask.png' \(1\) differs from its image"):
        check_mask_size(mask_path, (8, 8), image_path, (8, 8))
    wide_path = _save_oriented(tmp_path / "wide.png", np.zeros((4, 6, 3), dtype=np.uint8), 6)
    wide_mask = _save_oriented(tmp_path / "wide_mask.png", np.zeros((4, 6), dtype=np.uint8), None)
    with pytest.warns(OrientationWarning), pytest.raises(MaskError, match=r"4x6 \(HxW\) but its image .* is 6x4; .*EXIF orientation"):
        check_mask_size(wide_mask, read_mask(wide_mask).shape, wide_path, image_size_of(wide_path))


def test_truncated_jpeg_fails_the_up_front_check(tmp_path: Path) -> None:
    """Pillow's verify() passes a truncated JPEG (it does not decode the data); the check decodes it."""
    source = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(source)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with Image.open(truncated) as image:
        image.verify()  # what the check used to rely on
    with pytest.raises(ImageReadError, match=r"'.*truncated.jpg'"):
        check_image_files([(source, None), (truncated, None)])


def test_texture_folder_refuses_a_truncated_jpeg_at_setup(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[0, 0] = 255
    _texture_pattern(tmp_path, image, mask)
    good = tmp_path / "leather" / "a" / "train" / "good"
    Image.fromarray(image).save(good / "001.jpg")
    (good / "001.jpg").write_bytes((good / "001.jpg").read_bytes()[:300])
    with pytest.raises(ImageReadError, match=r"train/good/001.jpg'"):
        TextureFolder(tmp_path, "leather", "a", num_workers=0).setup()
