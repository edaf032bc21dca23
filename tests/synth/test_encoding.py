"""Tests of the synthetic DICOM files (pneumokeras/synth/encoding.py)."""

from __future__ import annotations

import io

import pydicom
import pytest

from pneumokeras import synth


@pytest.mark.parametrize("years, text", [(62, "062Y"), (5, "005Y"), (92, "092Y"), (0, "000Y")])
def test_patient_age_is_a_dicom_age_string(years: int, text: str) -> None:
    assert synth.patient_age(years) == text


def test_patient_age_refuses_impossible_ages() -> None:
    with pytest.raises(ValueError, match="years"):
        synth.patient_age(1000)


def test_sex_age_and_view_are_in_their_tags() -> None:
    for index in range(6):
        spec = synth.sample_patient(synth.patient_seed(9, index), synth.NORMAL)
        ds = pydicom.dcmread(io.BytesIO(synth.encode_dicom(spec, synth.render_image(spec, 64))))
        assert ds.PatientSex == spec.sex
        assert ds.PatientAge == f"{spec.age:03d}Y"
        assert ds.ViewPosition == spec.view
        assert ds["PatientAge"].VR == "AS"
