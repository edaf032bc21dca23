"""A deep ensemble: one functional model averaging its members' probabilities.

`build_ensemble` nests each member as a functional model named `member_<k>` and
averages their softmax outputs with `keras.layers.Average`: stock layers only, so
the ensemble loads with `keras.saving.load_model` in safe mode under TensorFlow or
JAX without this project, like `model.keras`. Its card (`ensemble.json`, a
`ModelCard` with `members`) names each member; `cv` writes both.

The head computes in float32 whatever the global Keras dtype policy is where it
is built (a process that trained under `mixed_bfloat16` included): the members
end in a float32 softmax, and the threshold and temperature of the card are
fitted on float32 outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

ENSEMBLE_FILE = "ensemble.keras"
MEMBER_PREFIX = "member_"
HEAD_DTYPE = "float32"


def member_name(index: int) -> str:
    """The nested model name of member `index`: `member_<index>`."""
    return f"{MEMBER_PREFIX}{index}"


def build_ensemble(members: Sequence[keras.Model], size: int) -> keras.Model:
    """One functional model averaging the members' softmax outputs (stock layers only).

    Args:
        members: K ≥ 1 models `(None, S, S, 1)` → `(None, 2)`.
        size: S, pixels.

    Returns:
        `(None, S, S, 1)` → `(None, 2)` float32: `Average` of the members (an
        `Identity` for one), each a nested functional model named `member_<k>`
        (`k` = its index in `members`).

    Raises:
        ValueError: no members.
    """
    if not members:
        raise ValueError("an ensemble needs at least one member. Received: 0 members")
    image = keras.Input((size, size, 1), name="image")
    outputs = [
        keras.Model(member.input, member.output, name=member_name(k))(image)
        for k, member in enumerate(members)
    ]
    head = (
        keras.layers.Average(name="predictions", dtype=HEAD_DTYPE)
        if len(outputs) > 1
        else keras.layers.Identity(name="predictions", dtype=HEAD_DTYPE)
    )
    averaged = head(outputs if len(outputs) > 1 else outputs[0])
    return keras.Model(image, averaged, name="ensemble")
