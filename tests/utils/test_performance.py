import keras
import numpy as np
import pytest
from model_fixtures import contract_model

from pneumokeras.utils import environment, performance

pytestmark = pytest.mark.backend  # Keras dtype policies, compile settings, compiled calls

BACKEND = keras.backend.backend()


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


@pytest.mark.parametrize(
    "isa, precision, gpu, expected",
    [
        # float32: TensorFlow's oneDNN graphs beat XLA on every CPU measured.
        ("avx2", "float32", False, False),
        ("avx512", "float32", False, False),
        ("avx512_bf16", "float32", False, False),
        ("amx", "float32", False, False),
        # Mixed precision: graphs only with native bfloat16, XLA otherwise.
        ("avx2", "mixed_bfloat16", False, True),
        ("avx512", "mixed_bfloat16", False, True),
        ("avx512_bf16", "mixed_bfloat16", False, False),
        ("amx", "mixed_bfloat16", False, False),
        ("avx512", "mixed_float16", False, True),
        ("baseline", "float32", False, True),  # not measured: XLA, as before
        ("avx512_bf16", "float32", True, True),  # a GPU: XLA whatever the host CPU
    ],
)
def test_auto_xla_under_tensorflow_follows_the_cpu_and_precision(isa, precision, gpu, expected):
    assert performance.training_xla("auto", "tensorflow", isa, gpu, precision) is expected


def test_auto_xla_elsewhere_and_explicit_choices():
    for isa in ("avx2", "avx512_bf16"):
        assert performance.training_xla("auto", "jax", isa, gpu=False) is True
        assert performance.training_xla("auto", "torch", isa, gpu=False) is False
        # The user's choice wins over the CPU's.
        assert performance.training_xla(True, "tensorflow", isa, gpu=False) is True
        assert performance.training_xla(False, "tensorflow", isa, gpu=False) is False
    with pytest.raises(ValueError, match="xla must be true, false or auto"):
        performance.training_xla("yes", "tensorflow", "avx2", gpu=False)


def test_compile_kwargs_per_backend():
    explicit_off = performance.compile_kwargs(False)
    if BACKEND == "tensorflow":
        assert explicit_off == {"jit_compile": False}
        assert performance.compile_kwargs(True) == {"jit_compile": True}
        auto = performance.training_xla("auto")
        assert performance.compile_kwargs("auto") == {"jit_compile": auto}
    else:
        assert explicit_off == {"jit_compile": True}  # JAX has no graph mode: XLA always


def test_inference_path_per_backend():
    assert performance.inference_path("jax", "avx2") == "jit"
    assert performance.inference_path("torch", "avx2") == "eager"
    if BACKEND == "tensorflow":  # asks TensorFlow whether it sees a GPU
        for isa in ("avx2", "avx512", "avx512_bf16"):
            assert performance.inference_path("tensorflow", isa) == "graph"
        assert performance.inference_path("tensorflow", "baseline") == "xla"


def test_the_choices_import_no_framework():
    """The benchmarks' Markdown (docs build) applies the rules without Keras."""
    import subprocess
    import sys

    code = (
        "import sys; from pneumokeras.utils import performance as p; "
        "p.training_xla('auto', 'tensorflow', 'avx2', False, 'float32'); "
        "assert not {'keras', 'tensorflow', 'jax'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_padded_sizes_reuse_compiled_shapes_and_round_up_to_powers_of_two():
    assert performance._padded_size(1, set()) == 1
    assert performance._padded_size(5, set()) == 8
    assert performance._padded_size(32, set()) == 32
    assert performance._padded_size(20, {32}) == 32  # a compiled shape up to 2x the batch
    assert performance._padded_size(3, {32}) == 4  # not 10x the work
    assert performance._padded_size(50, {64, 128}) == 64


PATHS = {"tensorflow": ["graph", "xla", "eager"], "jax": ["jit", "eager"]}.get(BACKEND, ["eager"])


@pytest.mark.parametrize("path", PATHS)
def test_compiled_forward_equals_the_eager_call(path):
    model = contract_model(16)
    images = np.random.default_rng(0).uniform(0, 255, (7, 16, 16, 1)).astype(np.float32)
    eager = keras.ops.convert_to_numpy(model(images, training=False))
    forward = performance.CompiledForward(model, path, eager_images=0)
    for batch in (images, images[:1], images[:5], images[:3]):
        np.testing.assert_allclose(forward(batch), eager[: len(batch)], rtol=1e-5, atol=1e-6)
    assert forward(images[:0]).shape == (0, 2)
    if path in ("xla", "jit"):  # 7 → 8, 1, 5 → 8, 3 → 4: three shapes compiled
        assert forward._compiled_sizes == {1, 4, 8}
    if path == "jit":  # on a CPU: XNNPACK's forward graph, unless XLA_FLAGS says otherwise
        assert forward.jax_options == environment.jax_cpu_inference_options()
    # Weights changed after the first call are used by the next one.
    model.get_layer("logits").kernel.assign(np.zeros((4, 2), np.float32))
    np.testing.assert_allclose(forward(images[:2]), 0.5, atol=1e-6)


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit's compiler options")
def test_jax_inference_compiles_with_the_xnnpack_options(monkeypatch):
    # Their effect is speed (bench_infer); XLA's HLO dump does not show XNNPACK's
    # subgraphs, so this checks that they reach the compile and that this jaxlib
    # accepts them (an unknown option or value fails the compile).
    import jax

    if not environment.jax_cpu_inference_options():
        pytest.skip("XLA_FLAGS route XNNPACK themselves, or another jaxlib series")
    seen = []
    jit = jax.jit
    monkeypatch.setattr(jax, "jit", lambda f, **kw: seen.append(kw) or jit(f, **kw))
    model = contract_model(16)
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 1)).astype(np.float32)
    forward = performance.CompiledForward(model, "jit", eager_images=0)
    flags_only = performance.CompiledForward(model, "jit", eager_images=0, jax_options={})
    assert seen == [
        {"compiler_options": environment.XNN_INFERENCE_OPTIONS},
        {"compiler_options": None},
    ]
    np.testing.assert_allclose(forward(images), flags_only(images), rtol=1e-5, atol=1e-6)


def test_the_first_images_run_eagerly_then_the_compiled_function():
    model = contract_model(16)
    path = performance.inference_path()
    forward = performance.CompiledForward(model, path, eager_images=5)
    compiled_calls = []
    compiled = forward._call
    forward._call = lambda x: compiled_calls.append(len(x)) or compiled(x)
    images = np.zeros((4, 16, 16, 1), np.float32)
    forward(images)  # 4 images seen: eager
    assert not forward.compiled
    forward(images)  # 8 seen (the switch comes after this call's images)
    assert compiled_calls == []
    assert forward.compiled == (path != "eager")
    forward(images[:1])
    assert compiled_calls == ([1] if path != "eager" else [])
    assert forward.images_seen == 9
    assert performance.EAGER_IMAGES["eager"] == 0


def test_compile_now_skips_the_eager_images():
    forward = performance.CompiledForward(contract_model(16))  # this backend's path
    forward.compile(batch_size=2)
    assert forward.eager_images == 0
    assert forward.images_seen == 2
    assert forward.compiled == (forward.path != "eager")


def test_unknown_inference_path_is_refused():
    with pytest.raises(ValueError, match="unknown inference path"):
        performance.CompiledForward(contract_model(16), "onnx")
