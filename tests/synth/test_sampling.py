"""Tests of drawing synthetic patients (pneumokeras/synth/sampling.py)."""

from __future__ import annotations

from pneumokeras import synth


def test_sampling_is_pure() -> None:
    seq = synth.patient_seed(0, 7)
    first = synth.sample_patient(seq, synth.LUNG_OPACITY)
    assert synth.sample_patient(seq, synth.LUNG_OPACITY) == first
    # Anatomy and exposure come from their own streams: the class does not move them.
    normal = synth.sample_patient(seq, synth.NORMAL)
    assert (normal.anatomy, normal.exposure, normal.patient_id) == (
        first.anatomy,
        first.exposure,
        first.patient_id,
    )
    assert normal.opacities == ()
    assert first.opacities


def test_class_counts_are_exact() -> None:
    classes = synth.assign_classes(seed=0, patients=1000, positive_fraction=0.225)
    assert classes.count(synth.LUNG_OPACITY) == 225
    assert classes.count(synth.NOT_NORMAL) == round(775 * synth.NOT_NORMAL_FRACTION)
    assert classes != synth.assign_classes(seed=1, patients=1000, positive_fraction=0.225)
