r"""ResNet-20's convolutions one at a time: forward pass, input gradient and
kernel gradient, each jitted alone, with XLA's convolution, bn_study's
im2col and Winograd F(2x2, 3x3) (Lavin & Gray 2016) for the 3x3 stride-1
convs. The table docs/performance.md gives for ResNet-20.

  python scripts/conv_profile.py --batch_size=128 --repeats=10

Winograd is checked against XLA's convolution first (values and both
gradients, float32 tolerance); the timings follow, median of --repeats after
two warm-up calls, the kinds taken in turn.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from bn_study.runtime import cpu
from bn_study.runtime import process

# (input size, channels in, channels out, stride, how many in ResNet-20):
# the stem, 6 convs of stage 1, the stride-2 entry and 5 convs of stages 2
# and 3 (option A shortcuts have no convs).
RESNET20 = [(32, 3, 16, 1, 1), (32, 16, 16, 1, 6), (32, 16, 32, 2, 1),
            (16, 32, 32, 1, 5), (16, 32, 64, 2, 1), (8, 64, 64, 1, 5)]

# F(2x2, 3x3): Y = A^T [(G g G^T) * (B^T d B)] A over 4x4 input tiles that
# overlap by 2 (Lavin & Gray 2016, section 4.1).
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
               np.float32)
G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def xla_conv(x, kernel, stride):
  return jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def im2col_conv(x, kernel, stride):
  pads = jax.lax.padtype_to_pads(x.shape[1:3], (3, 3), (stride, stride),
                                 'SAME')
  cols = cpu.patches(jnp.pad(x, ((0, 0), *pads, (0, 0))), 3, 3,
                     (stride, stride))
  return cpu._patches_matmul(cols, kernel.reshape(-1, kernel.shape[-1]))  # pylint: disable=protected-access


def winograd_conv(x, kernel, stride):
  """A 3x3, stride-1, SAME conv of NHWC `x` with HWIO `kernel`, for even
  sizes: 16 batched matmuls of (N * tiles, C) by (C, F)."""
  assert stride == 1 and x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0
  n, h, w, c = x.shape
  th, tw = h // 2, w // 2
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  # d[i][j]: every tile's input pixel (i, j), as (N, th, tw, C).
  d = [[xp[:, i:i + 2 * th:2, j:j + 2 * tw:2, :] for j in range(4)]
       for i in range(4)]
  # B^T d B, with B^T's 0/1/-1 entries as adds: rows, then columns.
  rows = [sum(B_T[a, i] * d[i][j] for i in range(4) if B_T[a, i])
          for a in range(4) for j in range(4)]
  v = jnp.stack([sum(B_T[b, j] * rows[a * 4 + j] for j in range(4)
                     if B_T[b, j]) for a in range(4) for b in range(4)])
  u = jnp.einsum('ai,ijcf,bj->abcf', G, kernel, G).reshape(16, c, -1)
  m = jnp.einsum('tpc,tcf->tpf', v.reshape(16, -1, c), u)
  m = m.reshape(4, 4, n, th, tw, -1)
  y = jnp.einsum('ra,abnhwf,sb->nhrwsf', A_T, m, A_T)
  return y.reshape(n, h, w, -1)


KINDS = {'xla': xla_conv, 'im2col': im2col_conv, 'winograd': winograd_conv}


def parts(conv, stride):
  """Forward, input gradient and kernel gradient, each jitted alone."""
  fwd = jax.jit(lambda x, k: conv(x, k, stride))

  def dx(x, k, dy):
    return jax.vjp(lambda x_: conv(x_, k, stride), x)[1](dy)[0]

  def dk(x, k, dy):
    return jax.vjp(lambda k_: conv(x, k_, stride), k)[1](dy)[0]

  return {'forward': fwd, 'input grad': jax.jit(dx),
          'kernel grad': jax.jit(dk)}


def check_winograd():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(4, 8, 8, 16)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 16, 32)) / 12, jnp.float32)
  dy = jnp.asarray(rng.normal(size=(4, 8, 8, 32)), jnp.float32)
  want, got = parts(xla_conv, 1), parts(winograd_conv, 1)
  for name in want:
    args = (x, k) if name == 'forward' else (x, k, dy)
    a, b = np.asarray(want[name](*args)), np.asarray(got[name](*args))
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max(),
                               err_msg=name)
  print('winograd matches XLA\'s conv: forward, input and kernel gradients')


def median_ms(fn, args, repeats):
  for _ in range(2):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times) * 1e3


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=10)
  args = parser.parse_args()
  # malloc as the benchmark and main.py tune it (re-executes once): fresh
  # memory each call would time the kernel's page faults, not the convs.
  process.setup(compilation_cache_dir=None)
  check_winograd()
  print(f'jax {jax.__version__}, {jax.devices()[0].platform}, batch '
        f'{args.batch_size}, float32, ms (median of {args.repeats})')
  print('| conv (in, channels, stride) x count | kind | forward | input grad '
        '| kernel grad | all three | x count |')
  print('| --- | --- | --- | --- | --- | --- | --- |')
  totals = dict.fromkeys(KINDS, 0.0)
  xla_total = 0.0
  rng = np.random.default_rng(0)
  for size, cin, cout, stride, count in RESNET20:
    x = jnp.asarray(rng.normal(size=(args.batch_size, size, size, cin)),
                    jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, cin, cout)), jnp.float32)
    dy = jnp.asarray(rng.normal(size=(args.batch_size, size // stride,
                                      size // stride, cout)), jnp.float32)
    for kind, conv in KINDS.items():
      if kind == 'winograd' and stride != 1:  # XLA's conv stands in.
        totals[kind] += xla_total * count
        continue
      ms = {name: median_ms(fn, (x, k) if name == 'forward' else (x, k, dy),
                            args.repeats)
            for name, fn in parts(conv, stride).items()}
      total = sum(ms.values())
      xla_total = total if kind == 'xla' else xla_total
      totals[kind] += total * count
      print(f'| {size}x{size}, {cin}->{cout}, /{stride} x {count} | {kind} | '
            + ' | '.join(f'{v:.1f}' for v in ms.values())
            + f' | {total:.1f} | {total * count:.1f} |')
  print('sum over ResNet-20\'s 19 convs (ms): '
        + ', '.join(f'{k} {v:.0f}' for k, v in totals.items())
        + ' (winograd: XLA\'s conv for the two stride-2 convs)')


if __name__ == '__main__':
  main()
