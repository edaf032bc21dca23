"""Backend settings that make training fast: dtype policy, XLA, XLA:CPU flags.

`pneumokeras/training/train.py` calls `configure_backend(config.train.precision)` before
it builds the model and compiles with `**COMPILE_KWARGS`;
`benchmarks/bench_train.py` does exactly the same, so its figures are the
product's. What each setting buys was measured with that benchmark (ResNet18,
batch 32, 224×224×1, Adam, on a shared 2-core AMD EPYC Zen 3 with AVX2 only;
results in `benchmarks/out/bench_train.json`):

- **TensorFlow: `jit_compile=True`** (XLA). Keras' `"auto"` turns XLA off on
  CPU-only machines. Keras 3's BatchNormalization is not a fused kernel (it is
  `moments` + a few element-wise ops), and without XLA each of those ops makes
  a full pass over large activations; XLA fuses them. Worth about +10–15 % in
  float32 and 12× in `mixed_bfloat16` on an AVX2 CPU (TensorFlow's non-XLA
  bfloat16 convolutions are slow there).
- **JAX: keep convolutions out of YNNPACK on CPU.** jaxlib 0.10 hands every
  convolution to YNNPACK by default (`ynn_fusion_type` default list:
  individual_dot, individual_convolution, reduce), and YNNPACK computes the
  *kernel gradient* of a convolution (a convolution whose window is the whole
  feature map) 10–20× slower than the forward pass. With
  `--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce` convolutions go
  back to XLA's own (Eigen) kernels while dots, element-wise and reduction
  fusions still use YNNPACK: ResNet18 training goes from about 1 to about 7
  images/s. Gradients agree with the default path to float32 rounding.
  The flag is only set for the jaxlib series it was measured on (an unknown
  flag aborts XLA); re-measure before widening
  `environment.YNN_TESTED_JAXLIB`. The CLI sets it at start-up
  (`environment.set_defaults`) when `KERAS_BACKEND=jax`; `configure_backend`
  sets it for library users and warns when JAX started too early to take it.

Settings that were measured and did *not* help, so are left at their
defaults: TensorFlow inter-op threads 1 instead of 2, the XLA flag above under
TensorFlow (TF's XLA does not route convolutions to YNNPACK), XLA's oneDNN
thunks (`--xla_cpu_use_onednn`), XNNPACK graph fusion, and
`steps_per_execution` (a step takes seconds on CPU; per-step overhead is noise).
"""

from __future__ import annotations

import typing
import warnings
from typing import Any

import keras

from pneumokeras.config import TrainConfig
from pneumokeras.utils import environment

# The Keras dtype policies `train.precision` accepts (one list, in the config schema).
PRECISIONS: tuple[str, ...] = typing.get_args(typing.get_type_hints(TrainConfig)["precision"])

# Arguments for `model.compile(...)`. JAX always compiles with XLA (this is
# Keras' default there too); TensorFlow needs it asked for on CPU. The torch
# backend keeps Keras' default (eager), since `jit_compile=True` would mean
# torch.compile there.
COMPILE_KWARGS: dict[str, Any] = (
    {"jit_compile": True} if keras.backend.backend() in ("tensorflow", "jax") else {}
)


def compile_kwargs(xla: bool = True) -> dict[str, Any]:
    """`model.compile` arguments for `train.xla` (see `config.TrainConfig.xla`).

    `xla=False` only changes TensorFlow (`jit_compile=False`: plain graphs, no
    XLA compile); JAX keeps XLA whatever it says, since its alternative is eager
    op-by-op execution.
    """
    if not xla and keras.backend.backend() == "tensorflow":
        return {"jit_compile": False}
    return dict(COMPILE_KWARGS)


def configure_backend(precision: str) -> None:
    """Sets the Keras dtype policy and the backend settings that speed up training.

    Call once per process, before the first model is built (and, under JAX,
    before any JAX computation), then compile with `**COMPILE_KWARGS`. Safe on
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
    if keras.backend.backend() == "jax":
        problem = environment.add_jax_cpu_flags()
        if problem:
            warnings.warn(
                f"JAX CPU training may be several times slower than it could be: {problem}",
                RuntimeWarning,
                stacklevel=2,
            )
    keras.config.set_dtype_policy(precision)
