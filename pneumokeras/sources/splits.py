"""Patient-level train/val/test splits, stratified K folds and class weights.

Generic over data sources: every function takes patient ids and their labels
(1 = pneumonia, 0 = not), whatever layout they came from (`rsna.py`, `layouts.py`).
Splits are by patient, never by file or box, so no patient is in two splits.

scikit-learn is imported inside the functions that use it: convert's worker
processes import this package and should start fast.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from numbers import Integral

import numpy as np

from pneumokeras.errors import UserError

SPLITS = ("train", "val", "test")
SEED_LIMIT = 2**32  # scikit-learn's and NumPy's legacy seeds are 32-bit


def check_seed(seed: object) -> None:
    """Raises UserError unless `seed` is an integer in [0, 2**32)."""
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= int(seed) < SEED_LIMIT:
        raise UserError(f"--seed must be an integer from 0 to {SEED_LIMIT - 1}; got {seed!r}")


def _can_stratify(strata: list[str], held: int) -> bool:
    """Whether scikit-learn can place every stratum on both sides of a split.

    Its conditions (`StratifiedShuffleSplit`): each stratum has ≥ 2 members, and
    each side is at least as large as the number of strata.
    """
    counts = Counter(strata)
    return min(counts.values()) >= 2 and min(held, len(strata) - held) >= len(counts)


def _stratified_split(
    ids: list[str], strata: list[str], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Splits `ids` into (rest, held) with `fraction` held out, stratified when possible."""
    from sklearn.model_selection import train_test_split

    if fraction <= 0 or not ids:
        return list(ids), []
    held = max(1, round(len(ids) * fraction))
    if held >= len(ids):
        raise UserError(
            f"split fraction {fraction} leaves no patients for training ({len(ids)} in all)"
        )
    # Fall back from (label, view) to label-only to none when a stratum is too rare
    # for scikit-learn to place members on both sides. Checked up front, so any
    # error scikit-learn raises is a real one and surfaces.
    labels_only = [s.split("|")[0] for s in strata]
    stratify = next((s for s in (strata, labels_only) if _can_stratify(s, held)), None)
    rest, out = train_test_split(ids, test_size=held, random_state=seed, stratify=stratify)
    return rest, out


def split_patients(
    labels: Mapping[str, int],
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    views: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Assigns every patient to exactly one of train/val/test.

    Stratified by label and, when `views` is given, by view position (falling back
    to label only, then none, when a group is too small). Deterministic for a seed
    and independent of the input order.

    Args:
        labels: patient id → label (1 = pneumonia, 0 = not).
        val_fraction, test_fraction: shares of the patients, each in [0, 1).
        seed: seed of the draws, [0, 2**32).
        views: patient id → view position (`AP`, `PA`, ''), optional.

    Returns:
        `{"train": [...], "val": [...], "test": [...]}`, each list sorted.

    Raises:
        UserError: a fraction outside [0, 1), fractions that leave no training
            patients, or a seed outside [0, 2**32).
    """
    check_seed(seed)
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1:
        raise UserError("--val and --test must be in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise UserError("--val plus --test must be < 1 so that training data remains")
    views = views or {}
    ids = sorted(labels)
    strata = [f"{labels[p]}|{views.get(p, '')}" for p in ids]
    rest, test = _stratified_split(ids, strata, test_fraction, seed)
    rest_strata = [f"{labels[p]}|{views.get(p, '')}" for p in rest]
    # The validation share is of the whole, so rescale it to the remainder.
    val_of_rest = val_fraction / (1 - test_fraction) if rest else 0.0
    # The validation draw's seed wraps so that every valid seed gives a valid one.
    train, val = _stratified_split(rest, rest_strata, val_of_rest, (seed + 1) % SEED_LIMIT)
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def assign_folds(
    labels: Mapping[str, int], patient_ids: Iterable[str], folds: int, seed: int = 0
) -> dict[str, int]:
    """Stratified K folds over `patient_ids` (by label): patient → fold index.

    Args:
        labels: patient id → label, for at least every id in `patient_ids`.
        patient_ids: the patients to fold (usually train + val).
        folds: K ≥ 2.
        seed: seed of the shuffle, [0, 2**32).

    Raises:
        UserError: fewer than 2 folds, a class with fewer members than folds, or a
            seed outside [0, 2**32).
    """
    from sklearn.model_selection import StratifiedKFold

    check_seed(seed)
    ids = sorted(patient_ids)
    if folds < 2:
        raise UserError(f"--folds must be ≥ 2; got {folds}")
    values = np.array([labels[p] for p in ids])
    smallest = int(min(np.sum(values == 0), np.sum(values == 1)))
    if smallest < folds:
        raise UserError(
            f"--folds {folds} needs at least {folds} patients of each class "
            f"(the rarer class has {smallest})"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    assignment: dict[str, int] = {}
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(ids)), values)):
        for index in held:
            assignment[ids[index]] = fold
    return dict(sorted(assignment.items()))


def class_weights(labels: Iterable[int]) -> dict[int, float]:
    """Class weights n / (2 · n_class): scikit-learn's 'balanced' rule.

    Raises:
        UserError: when a class is absent (its weight would be infinite).
    """
    from sklearn.utils.class_weight import compute_class_weight

    values = np.asarray(list(labels), dtype=np.int64)
    counts = np.bincount(values, minlength=2)
    if (counts == 0).any():
        raise UserError(
            f"training split needs both classes; got {counts[0]} negative, {counts[1]} positive"
        )
    weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=values)
    return {0: float(weights[0]), 1: float(weights[1])}
