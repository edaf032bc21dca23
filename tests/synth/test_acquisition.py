"""Tests of the scanner settings and the shifted site (pneumokeras/synth/acquisition.py)."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pydicom
import pytest

from pneumokeras import synth
from pneumokeras.errors import UserError
from pneumokeras.io.dicom import read_dicom
from pneumokeras.synth.acquisition import check_scanner

SIZE = 128


def _spec(index: int, scanner: synth.Scanner = synth.DEFAULT_SCANNER) -> synth.PatientSpec:
    return synth.sample_patient(synth.patient_seed(7, index), synth.LUNG_OPACITY, scanner)


def _images(scanner: synth.Scanner, count: int = 4) -> np.ndarray:
    return np.stack([synth.render_image(_spec(i, scanner), SIZE) for i in range(count)]).astype(
        np.float64
    )


def _scanner(**settings: float) -> synth.Scanner:
    """The default scanner with single settings fixed (one value for both ends of a range)."""
    probabilities = ("markers", "monochrome1")
    values = {k: v if k in probabilities else (v, v) for k, v in settings.items()}
    return synth.with_settings(synth.DEFAULT_SCANNER, **values)


def test_the_default_scanner_adds_no_detector_effect() -> None:
    for index in range(5):
        assert _spec(index).detector == synth.Detector()


def test_the_shift_changes_the_scanner_not_the_patient() -> None:
    for index in range(6):
        plain, shifted = _spec(index), _spec(index, synth.SHIFTED_SCANNER)
        same = ("patient_id", "label_class", "view", "sex", "age", "anatomy", "findings")
        assert all(getattr(plain, name) == getattr(shifted, name) for name in same)
        assert plain.opacities == shifted.opacities
        assert plain.texture_seed == shifted.texture_seed
        assert plain.exposure != shifted.exposure
        shift = synth.SHIFTED_SCANNER
        assert shift.gain[0] <= shifted.exposure.gain <= shift.gain[1]
        assert shift.field_of_view[0] <= shifted.detector.field_of_view <= shift.field_of_view[1]
        assert shifted.detector.marker in ("L", "R")
        # The field of view scales the boxes about the image centre; nothing else moves them.
        unzoomed = dataclasses.replace(shifted.detector, field_of_view=1.0)
        assert synth.boxes(dataclasses.replace(shifted, detector=unzoomed), SIZE) == synth.boxes(
            plain, SIZE
        )
        factor = shifted.detector.field_of_view
        for (x, y, w, h), (x0, y0, w0, h0) in zip(
            synth.boxes(shifted, SIZE), synth.boxes(plain, SIZE), strict=True
        ):
            assert abs(x + w / 2 - (SIZE / 2 + (x0 + w0 / 2 - SIZE / 2) / factor)) <= 2
            assert abs(y + h / 2 - (SIZE / 2 + (y0 + h0 / 2 - SIZE / 2) / factor)) <= 2
            assert abs(w - w0 / factor) <= 3
            assert abs(h - h0 / factor) <= 3


def test_every_shifted_range_differs_from_the_default() -> None:
    default, shifted = synth.DEFAULT_SCANNER.to_dict(), synth.SHIFTED_SCANNER.to_dict()
    assert all(default[name] != shifted[name] for name in default)


def _high_pass(images: np.ndarray) -> np.ndarray:
    return images[:, 1:, 1:] - images[:, :-1, 1:]


@pytest.mark.parametrize(
    "low, high, statistic",
    [
        # Contrast: the spread of grey levels inside the body grows with the gain.
        ({"gain": 200.0}, {"gain": 340.0}, lambda im: im[:, 20:108, 20:108].std()),
        # A gamma above 1 darkens the mid-tones.
        ({"gamma": 1.5}, {"gamma": 0.8}, lambda im: im.mean()),
        # Exposure: a brighter air level.
        ({"offset": 0.0}, {"offset": 60.0}, lambda im: np.percentile(im, 2)),
        # Noise: pixel-to-pixel differences.
        ({"noise": 2.0}, {"noise": 24.0}, lambda im: _high_pass(im).std()),
        # Resolution: a coarser detector has less pixel-to-pixel detail.
        ({"resolution": 0.4, "noise": 0.0}, {"noise": 0.0}, lambda im: _high_pass(im).std()),
        # Collimation: bright margins.
        ({}, {"collimation": 0.08}, lambda im: im[:, :, :6].mean()),
    ],
)
def test_each_setting_moves_its_statistic(low: dict, high: dict, statistic) -> None:
    assert statistic(_images(_scanner(**low))) < statistic(_images(_scanner(**high)))


def test_noise_texture_correlates_neighbouring_pixels() -> None:
    def noise_correlation(texture: float) -> float:
        noisy = _images(_scanner(noise=40.0, noise_texture=texture))
        clean = _images(_scanner(noise=0.0))
        residual = noisy - clean
        a, b = residual[:, :, :-1].ravel(), residual[:, :, 1:].ravel()
        return float(np.corrcoef(a, b)[0, 1])

    assert abs(noise_correlation(0.0)) < 0.15
    assert noise_correlation(24.0) > 0.6


def test_borders_and_markers() -> None:
    scanner = _scanner(border=0.05, markers=1.0)
    for index in range(3):
        spec = _spec(index, scanner)
        image = synth.render_image(spec, SIZE)
        assert (image[:, :6] == 0).all()
        assert (image[:, -6:] == 0).all()
        # The marker is white, near the top corner the detector drew it in.
        top = image[: SIZE // 5]
        corner = top[:, : SIZE // 2] if spec.detector.marker_corner < 0 else top[:, SIZE // 2 :]
        assert (corner >= 250).sum() >= 8
        plain = synth.render_image(_spec(index), SIZE)
        assert (plain[: SIZE // 5] >= 250).sum() < (top >= 250).sum()


def test_monochrome1_is_stored_inverted_and_read_back(tmp_path) -> None:
    spec = _spec(0, _scanner(monochrome1=1.0))
    assert spec.detector.monochrome1
    image = synth.render_image(spec, SIZE)
    data = synth.encode_dicom(spec, image)
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    # Stored inverted: 0 is white.
    assert np.abs(ds.pixel_array.astype(int) - (255 - image.astype(int))).mean() < 2
    path = tmp_path / "inverted.dcm"
    path.write_bytes(data)
    read = read_dicom(path)
    assert read.photometric == "MONOCHROME1"
    assert np.abs(read.pixels.astype(int) - image.astype(int)).mean() < 2
    plain = dataclasses.replace(spec, detector=synth.Detector())
    normal = tmp_path / "plain.dcm"
    normal.write_bytes(synth.encode_dicom(plain, image))
    assert np.abs(read_dicom(normal).pixels.astype(int) - read.pixels.astype(int)).mean() < 2


def test_pixel_spacing_follows_the_field_of_view() -> None:
    spec = _spec(0, _scanner(field_of_view=1.2))
    image = synth.render_image(spec, SIZE)
    ds = pydicom.dcmread(io.BytesIO(synth.encode_dicom(spec, image)))
    plain = pydicom.dcmread(io.BytesIO(synth.encode_dicom(_spec(0), image)))
    assert float(ds.PixelSpacing[0]) == pytest.approx(1.2 * float(plain.PixelSpacing[0]), rel=1e-4)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"gain": (300.0, 200.0)}, "low 300 is above high 200"),
        ({"noise": (0.0, 100.0)}, "noise must lie in"),
        ({"gamma": (0.0, 1.0)}, "gamma must be > 0"),
        ({"markers": 1.5}, "probability"),
        ({"contrast": (1.0, 2.0)}, "unknown scanner setting"),
    ],
)
def test_bad_settings_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        synth.with_settings(synth.DEFAULT_SCANNER, **settings)


def test_presets_are_valid() -> None:
    check_scanner(synth.DEFAULT_SCANNER)
    check_scanner(synth.SHIFTED_SCANNER)
