import keras
import pytest

from pneumokeras.utils import performance

pytestmark = pytest.mark.backend  # Keras dtype policies and compile settings


@pytest.fixture(autouse=True)
def restore_policy():
    before = keras.config.dtype_policy().name
    yield
    keras.config.set_dtype_policy(before)


@pytest.mark.parametrize("precision", performance.PRECISIONS)
def test_sets_the_dtype_policy(precision):
    performance.configure_backend(precision)
    assert keras.config.dtype_policy().name == precision


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        performance.configure_backend("float8")


def test_compile_asks_for_xla_on_tensorflow_and_jax():
    expected = {"jit_compile": True} if keras.backend.backend() in ("tensorflow", "jax") else {}
    assert expected == performance.COMPILE_KWARGS


def test_train_xla_false_turns_xla_off_on_tensorflow_only():
    assert performance.compile_kwargs(True) == performance.COMPILE_KWARGS
    off = performance.compile_kwargs(False)
    if keras.backend.backend() == "tensorflow":
        assert off == {"jit_compile": False}
    else:
        assert off == performance.COMPILE_KWARGS  # JAX keeps XLA
