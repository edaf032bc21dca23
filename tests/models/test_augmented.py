"""Augmentation inside the training step (`augment.on_device`)."""

import keras
import numpy as np
import pytest
from model_fixtures import contract_model

from pneumokeras.config import AugmentConfig
from pneumokeras.models import augmented
from pneumokeras.records.augment import device_layers

pytestmark = pytest.mark.backend  # builds and trains models under each backend

SIZE = 16


def _wrapped():
    model = contract_model(SIZE)
    layers = device_layers(AugmentConfig(rotation_degrees=20.0, translation=0.1), seed=3)
    return model, augmented.with_augmentation(model, layers)


def test_layers_act_in_training_only_and_the_classifier_is_what_remains():
    model, wrapped = _wrapped()
    images = np.random.default_rng(0).uniform(0, 255, (4, SIZE, SIZE, 1)).astype(np.float32)
    plain = keras.ops.convert_to_numpy(model(images, training=False))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(wrapped(images, training=False)), plain, atol=1e-6
    )
    # In training the pixels are transformed: the (batch-norm free in inference) output moves.
    trained = keras.ops.convert_to_numpy(wrapped(images, training=True))
    assert not np.allclose(trained, keras.ops.convert_to_numpy(model(images, training=True)))
    assert augmented.classifier_of(wrapped) is model
    assert augmented.classifier_of(model) is model
    assert {w.path for w in model.trainable_weights} == {w.path for w in wrapped.trainable_weights}


def test_compiled_training_steps_augment():
    """JAX: one `jax.jit` step; TensorFlow: a graph (Keras does not XLA-compile the
    random layers there, so `train` compiles without XLA when they are on)."""
    model, wrapped = _wrapped()
    jit_compile = keras.backend.backend() == "jax"
    wrapped.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=jit_compile)
    # Under JAX the step stays one jax.jit program (Keras would fall back to op by op
    # for its affine layers), and their random state advances inside it.
    assert wrapped.jit_compile == jit_compile
    shift = next(x for x in wrapped.layers if isinstance(x, keras.layers.RandomTranslation))
    state = np.array(shift.generator.state)
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (8, SIZE, SIZE, 1)).astype(np.float32)
    labels = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 8)]
    before = [np.array(w) for w in model.get_weights()]
    history = wrapped.fit(images, labels, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    after = model.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))
    assert not np.array_equal(np.array(shift.generator.state), state)
