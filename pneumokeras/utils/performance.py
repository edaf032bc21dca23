"""Backend settings that make training and inference fast, chosen per backend and CPU.

`pneumokeras/training/train.py` calls `configure_backend(config.train.precision)` before
it builds the model and compiles with `**compile_kwargs(config.train.xla, precision)`;
`benchmarks/bench_train.py` does exactly the same, so its figures are the product's.
`models.model_card.Classifier.forward` runs every inference through `CompiledForward`.
What each choice buys is measured by `python -m benchmarks.bench_train` and
`bench_infer` (the Benchmarks pages of the manual, one table per CPU, AVX2 emulated on
an AVX-512 machine with `--isa avx2`):

- **TensorFlow on CPUs: plain graphs, not XLA** (`training_xla`). TensorFlow's graph
  kernels for convolutions come from oneDNN (`TF_ENABLE_ONEDNN_OPTS`, on by default),
  which dispatches on the CPU at run time (AVX2, AVX-512, AVX-512 with native
  bfloat16, AMX); XLA generates its own code and keeps oneDNN out. Training and
  inference both ran faster as graphs on every CPU level measured, in float32 and,
  where the CPU computes bfloat16 natively (`avx512_bf16`, AMX), in mixed bfloat16.
  Without native bfloat16, TensorFlow's graph kernels for bfloat16 are many times
  slower (or missing), so mixed precision compiles with XLA there. On GPUs XLA (its
  fusions help there, and Keras picks it too). Keras' own `"auto"` never XLA-compiles
  on a CPU-only machine.
- **JAX: keep convolutions out of YNNPACK on CPU.** jaxlib 0.10 hands every
  convolution to YNNPACK by default (`ynn_fusion_type` default list:
  individual_dot, individual_convolution, reduce), and YNNPACK computes the
  *kernel gradient* of a convolution (a convolution whose window is the whole
  feature map) much more slowly than XLA's own kernels, on AVX2 CPUs by an order of
  magnitude. With `--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce`
  convolutions go back to XLA's own (Eigen) kernels while dots, element-wise and
  reduction fusions still use YNNPACK. Gradients agree with the default path to
  float32 rounding. The flag is only set for the jaxlib series it was measured on
  (an unknown flag aborts XLA); re-measure before widening
  `environment.YNN_TESTED_JAXLIB`. The CLI sets it at start-up
  (`environment.set_defaults`) when `KERAS_BACKEND=jax`; `configure_backend` sets it
  for library users and warns when JAX started too early to take it. XLA's oneDNN
  custom calls (`--xla_cpu_use_onednn=true`) measured level with it, so they are not set.
- **JAX inference: the forward graph on XNNPACK.** Forward passes have no kernel
  gradients, and there XNNPACK wins: `CompiledForward` compiles them with
  `environment.XNN_INFERENCE_OPTIONS` (XLA's greedy XNNPACK graph fusion, YNNPACK
  off), given per compile so that training in the same process keeps its flag:
  ResNet18 at 224 px ran 1.8x as fast at batch 1 and 1.05x at batch 32 on an
  AVX-512 CPU, outputs equal to 5e-7. For training steps the same options measured
  slower than XLA's kernels (8.5-9.1 against 10.7 img/s, fp32), so training keeps them.
- **Inference compiles when it pays** (`CompiledForward`): one traced function
  (TensorFlow graph or XLA as above, `jax.jit`) instead of one eager call per layer,
  after a process has run its first images eagerly (a compile costs seconds to tens
  of seconds, more than a few images take).

Settings measured and left at their defaults: TensorFlow inter-op threads 1 instead of 2
(`bench_train` variant `tf-graph-inter1`), XLA auto-clustering of the element-wise and
reduction ops around TensorFlow's oneDNN convolutions (`tf-graph-fuse`,
`bench_train_tf_bf16.json`: Keras' batch normalisation is a quarter of a mixed_bfloat16
step there, but clustering it gained 1-5 %, within the spread), the JAX flag above under
TensorFlow (TF's XLA does not route convolutions to YNNPACK), XNNPACK for training
steps, and `steps_per_execution` (a step takes seconds on a CPU; per-step overhead is
noise). `train.precision` is never changed automatically: bfloat16 trains a different
model (8 bits of mantissa), so a run's numbers would depend on the machine it ran on.
"""

from __future__ import annotations

import typing
import warnings
from typing import Any

from pneumokeras.config import TrainConfig
from pneumokeras.utils import environment

# The Keras dtype policies `train.precision` accepts (one list, in the config schema).
PRECISIONS: tuple[str, ...] = typing.get_args(typing.get_type_hints(TrainConfig)["precision"])


def _backend() -> str:
    """The Keras backend (imports Keras: the functions above take `backend` to avoid it)."""
    import keras

    return str(keras.backend.backend())


# CPU levels whose oneDNN kernels compute bfloat16 natively (`environment.ISA_LEVELS`).
NATIVE_BF16 = ("avx512_bf16", "amx")


def training_xla(
    setting: bool | str = "auto",
    backend: str | None = None,
    isa: str | None = None,
    gpu: bool | None = None,
    precision: str = "float32",
) -> bool:
    """Whether training XLA-compiles its steps: `train.xla`, with `auto` resolved.

    An explicit `True`/`False` is returned as it is. `auto` picks what measured
    fastest (`benchmarks/bench_train.py`, module docstring): under JAX always XLA
    (its only compiled path); under TensorFlow XLA on GPUs; on CPUs plain TensorFlow
    graphs, whose oneDNN kernels beat XLA's own code, except for mixed precision on
    CPUs without native bfloat16 (TensorFlow's graph kernels are many times slower
    there) and on CPUs below AVX2 (not measured). The torch backend is never
    compiled here.

    Args:
        setting: `True`, `False` or `"auto"`.
        backend: Keras backend (default: the current one).
        isa: CPU level from `environment.cpu_isa` (default: this machine's, capped
            by `ONEDNN_MAX_CPU_ISA`).
        gpu: whether TensorFlow sees a GPU (default: asks TensorFlow).
        precision: the Keras dtype policy trained with (`train.precision`).

    Raises:
        ValueError: `setting` is none of true, false, auto.
    """
    if isinstance(setting, bool):
        return setting
    if setting != "auto":
        raise ValueError(f"xla must be true, false or auto. Received: xla={setting!r}")
    backend = backend or _backend()
    if backend == "jax":
        return True
    if backend != "tensorflow":
        return False
    if gpu is None:
        import tensorflow as tf

        gpu = bool(tf.config.list_physical_devices("GPU"))
    if gpu:
        return True
    isa = isa or environment.cpu_isa()
    if isa == "baseline":
        return True
    return precision != "float32" and isa not in NATIVE_BF16


def compile_kwargs(xla: bool | str = "auto", precision: str = "float32") -> dict[str, Any]:
    """`model.compile` arguments for `train.xla` and `train.precision` (`TrainConfig`).

    JAX always compiles with XLA (its alternative is eager op-by-op execution),
    whatever `xla` says; TensorFlow gets `jit_compile` from `training_xla`; the
    torch backend keeps Keras' default (`jit_compile=True` would mean
    `torch.compile` there).
    """
    backend = _backend()
    if backend == "jax":
        return {"jit_compile": True}
    if backend == "tensorflow":
        return {"jit_compile": training_xla(xla, backend, precision=precision)}
    return {}


def configure_backend(precision: str) -> None:
    """Sets the Keras dtype policy and the backend settings that speed up training.

    Call once per process, before the first model is built (and, under JAX,
    before any JAX computation), then compile with `**compile_kwargs(...)`. Safe on
    GPUs: the XLA flag only concerns XLA's CPU backend.

    Args:
        precision: `float32`, `mixed_bfloat16` or `mixed_float16` (a Keras
            dtype policy name; mixed policies keep float32 variables).

    Raises:
        ValueError: unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(PRECISIONS)}. Received: precision={precision!r}"
        )
    import keras

    if keras.backend.backend() == "jax":
        problem = environment.add_jax_cpu_flags()
        if problem:
            warnings.warn(
                f"JAX CPU training may be several times slower than it could be: {problem}",
                RuntimeWarning,
                stacklevel=2,
            )
    keras.config.set_dtype_policy(precision)


# ------------------------------------------------------------------ inference


def inference_path(
    backend: str | None = None, isa: str | None = None, gpu: bool | None = None
) -> str:
    """How a model's forward pass runs for inference, as measured fastest here.

    Returns:
        `graph` (TensorFlow: one traced `tf.function`, oneDNN kernels), `xla`
        (TensorFlow: `tf.function(jit_compile=True)`), `jit` (JAX: `jax.jit`) or
        `eager` (other backends). TensorFlow takes `graph` on CPUs from AVX2 up and
        `xla` on GPUs and below AVX2 (`benchmarks/bench_infer.py`); see
        `training_xla` for `isa` and `gpu`.
    """
    backend = backend or _backend()
    if backend == "jax":
        return "jit"
    if backend != "tensorflow":
        return "eager"
    return "xla" if training_xla("auto", backend, isa, gpu) else "graph"


def _padded_size(count: int, compiled: set[int]) -> int:
    """Batch size to run `count` images at: a compiled size up to 2× `count`, or the next
    power of two (so a run of odd last batches compiles a handful of shapes, not one each).
    """
    fits = [size for size in compiled if count <= size <= 2 * count]
    return min(fits) if fits else 1 << (count - 1).bit_length()


# Images a process runs eagerly before it compiles the forward pass (`CompiledForward`):
# compiling costs seconds (tracing a graph) to tens of seconds (XLA, ResNet18 at 224 px
# on a small CPU), which pays off only over many images; `bench_infer` gives each
# path's compile time and the images after which it has paid for itself.
EAGER_IMAGES = {"graph": 64, "xla": 256, "jit": 64, "eager": 0}


class CompiledForward:
    """A model's inference forward pass `(n, ...) → (n, ...)` NumPy, compiled when it pays.

    `path` (`inference_path`) picks how: a traced TensorFlow graph, XLA through
    TensorFlow or `jax.jit` over `model.stateless_call` (the current weights are
    passed at every call, so later weight changes are seen), or the eager call. The
    first `eager_images` images (over all calls) run eagerly, the rest through the
    compiled function, so a command that predicts a handful of images does not wait
    for a compile; `compile()` switches at once (a server, before its first request).
    XLA and `jax.jit` compile one program per batch shape, so a batch of a size not
    compiled yet is zero-padded to one that is (up to twice its size) or to the next
    power of two, and the padding's outputs dropped: at most a few shapes per run.

    Args:
        model: a Keras model with one input and one output.
        path: `graph`, `xla`, `jit` or `eager` (default `inference_path()`).
        eager_images: images to run eagerly first (default `EAGER_IMAGES[path]`).
        jax_options: XLA compiler options of the `jit` path (default: XNNPACK for
            the whole forward graph on CPUs, `environment.jax_cpu_inference_options`;
            `{}` compiles with XLA_FLAGS alone).
    """

    def __init__(
        self,
        model: Any,
        path: str | None = None,
        eager_images: int | None = None,
        jax_options: dict[str, str] | None = None,
    ):
        self.model = model
        self.path = path or inference_path()
        if self.path not in EAGER_IMAGES:
            raise ValueError(f"unknown inference path {self.path!r}")
        self.eager_images = EAGER_IMAGES[self.path] if eager_images is None else eager_images
        self.images_seen = 0
        self._compiled_sizes: set[int] = set()
        self._eager = lambda x: model(x, training=False)
        self._call = self._eager
        self.jax_options: dict[str, str] = {}
        if self.path in ("graph", "xla"):
            import tensorflow as tf

            self._call = tf.function(
                self._eager,
                jit_compile=self.path == "xla",
                reduce_retracing=True,
                autograph=False,
            )
        elif self.path == "jit":
            import jax

            def run(trainable: Any, non_trainable: Any, x: Any) -> Any:
                outputs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
                return outputs

            if jax_options is None:
                cpu = jax.default_backend() == "cpu"
                jax_options = environment.jax_cpu_inference_options() if cpu else {}
            self.jax_options = jax_options
            jitted = jax.jit(run, compiler_options=jax_options or None)
            self._call = lambda x: jitted(
                [v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables],
                x,
            )

    @property
    def compiled(self) -> bool:
        """Whether calls now go through the compiled function."""
        return self.path != "eager" and self.images_seen >= self.eager_images

    def compile(self, batch_size: int = 1) -> None:
        """Compiles now, for batches of `batch_size`, instead of after `eager_images`."""
        import numpy as np

        self.eager_images = 0
        shape = (batch_size, *self.model.input_shape[1:])
        self(np.zeros(shape, np.float32))

    def __call__(self, batch: Any) -> Any:
        """The model's outputs for one batch, as a NumPy array."""
        import keras
        import numpy as np

        batch = np.asarray(batch)
        count = len(batch)
        compiled = self.compiled
        self.images_seen += count
        if not compiled:
            return keras.ops.convert_to_numpy(self._eager(batch))
        if self.path in ("xla", "jit") and count:
            size = _padded_size(count, self._compiled_sizes)
            self._compiled_sizes.add(size)
            if size != count:
                padding = np.zeros((size - count, *batch.shape[1:]), dtype=batch.dtype)
                batch = np.concatenate([batch, padding])
        return keras.ops.convert_to_numpy(self._call(batch))[:count]
