"""How the CPU computes, never what: every CPU-specific speed technique.

The model, the train step and the instruments read as the math; what makes
them fast on XLA:CPU lives here, each with what it bought in
docs/performance.md:

- `Im2colConv`: a convolution as one matmul over the input's patches, its
  kernel gradient spelled so Eigen runs it fast (`conv_module` picks it for
  `model.conv_impl`);
- `compiler_options`: the train step's XLA options on CPU;
- `global_norm`: optax.global_norm written so XLA:CPU fuses its squares;
- `identity`: which CPU this is, for decisions measured on it (conv_impl=auto).

How malloc serves XLA:CPU's buffers is in malloc.py.
"""

import os
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

# model.conv_impl: the same convolution, computed by XLA's conv or as im2col;
# auto is im2col on CPU and XLA's conv elsewhere.
CONV_IMPLS = ('auto', 'xla', 'im2col')


def patches(x, kh: int, kw: int, strides: Tuple[int, int]):
  """(N, Ho, Wo, kh * kw * C): each output position's receptive field, taps
  in the order of an HWIO kernel reshaped to (kh * kw * C, F)."""
  (sh, sw) = strides
  ho = (x.shape[1] - kh) // sh + 1
  wo = (x.shape[2] - kw) // sw + 1
  return jnp.concatenate(
      [x[:, i:i + (ho - 1) * sh + 1:sh, j:j + (wo - 1) * sw + 1:sw, :]
       for i in range(kh) for j in range(kw)], axis=-1)


@jax.custom_jvp
def _patches_matmul(patches, kernel):
  """patches (..., K) @ kernel (K, F), its kernel gradient spelled for
  XLA:CPU (see the JVP below)."""
  return patches @ kernel


@_patches_matmul.defjvp
def _patches_matmul_jvp(primals, tangents):
  patches, kernel = primals
  d_patches, d_kernel = tangents
  rows = patches.reshape(-1, patches.shape[-1])
  # The kernel's term, written so that its transpose, the kernel gradient,
  # comes out as (g^T rows)^T: a (F, K) matmul over every output position
  # (N * Ho * Wo, hundreds of thousands), then a small transpose. XLA's own
  # (K, F) form of it runs slower in Eigen on CPU (docs/performance.md);
  # the barrier keeps XLA from folding the transpose back into the dot.
  kernel_term = (jax.lax.optimization_barrier(d_kernel.T) @ rows.T).T
  return (patches @ kernel,
          d_patches @ kernel + kernel_term.reshape(*patches.shape[:-1], -1))


class Im2colConv(nn.Module):
  """nn.Conv computed as one matmul over the input's patches (im2col).

  On CPU, XLA's convolutions run far below its matmuls, the kernel gradient
  worst (docs/performance.md); as a matmul, forward pass and both gradients
  (JAX's derivatives of slicing, `_patches_matmul`'s of the dot) are matmuls
  and copies. The same sums in another order. Parameters are nn.Conv's
  (`kernel` (kh, kw, C, F), `bias`), initialized the same way, so checkpoints
  and initial values match.
  """
  features: int
  kernel_size: Tuple[int, int]
  strides: Tuple[int, int] = (1, 1)
  padding: str = 'SAME'
  use_bias: bool = True
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros
  dtype: Any = None  # Compute dtype (None: as nn.Conv, input and kernel's).

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param('kernel', self.kernel_init,
                        (kh, kw, x.shape[-1], self.features))
    dtype = self.dtype or jnp.result_type(x.dtype, kernel.dtype)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if self.padding == 'SAME':
      pads = jax.lax.padtype_to_pads(x.shape[1:3], self.kernel_size,
                                     self.strides, 'SAME')
      x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    cols = patches(x, kh, kw, tuple(self.strides))
    y = _patches_matmul(cols, kernel.reshape(-1, self.features))
    if self.use_bias:
      y = y + self.param('bias', self.bias_init, (self.features,)).astype(dtype)
    return y


# Where auto picks im2col on CPU: the model families and compute dtypes it
# was measured faster for. ResNet-20 at batch 128 (float32) trained at the
# same speed either way and evaluated 3.2x faster with XLA's convs; in
# bfloat16 its im2col step was 1.6x slower (docs/performance.md).
IM2COL_FAMILIES = ('cnn', 'mlp')


def conv_module(conv_impl: str, platform: Optional[str] = None,
                dtype: str = 'float32', kind: str = 'cnn'):
  """The conv module class for `model.conv_impl` on `platform` (default:
  JAX's default backend), for a model of family `kind` computing in
  `dtype`: Im2colConv or nn.Conv, same parameters. auto: im2col on CPU for
  IM2COL_FAMILIES in float32, XLA's conv everywhere else."""
  if conv_impl == 'auto':
    on_cpu = (platform or jax.default_backend()) == 'cpu'
    conv_impl = ('im2col' if on_cpu and dtype == 'float32'
                 and kind in IM2COL_FAMILIES else 'xla')
  return Im2colConv if conv_impl == 'im2col' else nn.Conv


def steps_in_one_loop(platform: str, model_config) -> bool:
  """Whether a call of several train steps may be one XLA loop on
  `platform`, or must dispatch its steps one by one.

  XLA:CPU computes a conv's kernel gradient far slower inside a loop body
  than outside one (jax#12868): on this project's 2-core VMs a 3x3 conv's
  train step on (128, 32, 32, 16) took 0.87 s a step inside any loop
  (fori_loop, scan) against 0.037 s outside or unrolled, and ResNet-20 at
  batch 128 17 s against 0.66 s (docs/performance.md). So on CPU a model
  with XLA's convs dispatches its steps one by one (asynchronously, the
  same math); dense layers and im2col's convs (matmuls) loop.
  """
  if platform != 'cpu' or model_config.kind == 'mlp':
    return True
  return conv_module(model_config.conv_impl, platform, model_config.dtype,
                     model_config.kind) is Im2colConv


def compiler_options(platform: str) -> Optional[dict]:
  """XLA options for the train step on `platform` (None: XLA's defaults).

  On CPU, XLA's tree reduction rewriter turns some large sums into a
  32 x 32 reduce-window and a second sum. It did so for the gradient norm
  over dense1's 25M weights, and YNNPACK ran that form several times slower
  than the other norms' plain sums of the same size (docs/performance.md).
  Without the pass every sum is one reduction; float32 accuracy is tested
  against float64 (train_test).
  """
  if platform == 'cpu':
    return {'xla_disable_hlo_passes': 'tree_reduction_rewriter'}
  return None


def global_norm(tree):
  """optax.global_norm, with each square written |x|*|x|: XLA:CPU would
  share x*x with Adam's second moment, keep it in memory and sum it in a
  separate pass over the parameters (docs/performance.md)."""
  return jnp.sqrt(sum(jnp.sum(jnp.abs(x) * jnp.abs(x))
                      for x in jax.tree.leaves(tree)))


def identity() -> str:
  """The CPU's model name and core count: a speed measured on one CPU is
  reused only on the same kind (huge pages, say, helped a Xeon and slowed an
  EPYC)."""
  name = ''
  try:
    with open('/proc/cpuinfo') as f:
      name = next((line.split(':', 1)[1].strip() for line in f
                   if line.startswith('model name')), '')
  except OSError:
    pass
  return f'{name or "unknown CPU"} x{os.cpu_count()}'
