"""Numpy references written from the papers, independent of bn_study/models/norms.py.

Every function here was written from the formulas in the cited papers (and,
where a paper leaves a convention open, from the convention stated in the
docstring), without reading the module under test. Computations are done in
float64 with numpy only.

Layout conventions:
  * activations are NHWC, shape (N, H, W, C), for conv inputs, or (N, C) for
    dense inputs. A dense input is treated as (N, 1, 1, C), so "over H and W"
    means over a single element; outputs keep the input's shape;
  * per-channel parameters are 1-D arrays of length C (scalars broadcast too);
  * conv kernels are HWIO, shape (kh, kw, cin, cout); dense kernels are
    (in, out). The output unit is always the LAST axis.
"""

import numpy as np

# Initial value of FRN's learned epsilon (the |eps_l| term, see `frn`).
# Where it comes from: the FRN paper (Singh & Krishnan 2020, arXiv 1911.09737,
# Sec. 3.1) motivates a learned eps for 1x1 activation maps, but the paper
# text could not be consulted here to confirm an initial value for it. 1e-4 is
# the value TensorFlow Addons' FilterResponseNormalization uses to initialize
# its `learned_epsilon` weight (eps_total = epsilon + |learned_epsilon|), and
# is also the fallback this file was asked to use when the paper gives none.
FRN_LEARNED_EPS_INIT = 1e-4

# Scaled-WS gain for ReLU (Brock et al. 2021a, NF-ResNets, arXiv 2101.08692).
# Derivation: for z ~ N(0, 1),
#   E[relu(z)]   = integral_0^inf z phi(z) dz   = 1 / sqrt(2 pi),
#   E[relu(z)^2] = (1/2) E[z^2]                 = 1 / 2,
#   Var[relu(z)] = 1/2 - 1/(2 pi) = (1/2) (1 - 1/pi).
# gamma is chosen so that gamma * relu(z) has unit variance:
#   gamma = 1 / sqrt(Var[relu(z)]) = sqrt(2 / (1 - 1/pi)) ~= 1.7129.
RELU_GAMMA = float(np.sqrt(2.0 / (1.0 - 1.0 / np.pi)))


# ----------------------------------------------------------------------------
# Shape helpers.
# ----------------------------------------------------------------------------

def _to_nhwc(x):
  """Returns (x as float64 NHWC, original shape)."""
  x = np.asarray(x, dtype=np.float64)
  if x.ndim == 2:
    return x.reshape(x.shape[0], 1, 1, x.shape[1]), x.shape
  if x.ndim == 4:
    return x, x.shape
  raise ValueError(f'expected (N, C) or (N, H, W, C), got shape {x.shape}')


def _param(p):
  """A per-channel parameter (1-D of length C, or scalar) as float64."""
  return np.asarray(p, dtype=np.float64)


def _sigmoid(z):
  return 0.5 * (1.0 + np.tanh(0.5 * z))  # Overflow-free logistic sigmoid.


def _batch_var(x4):
  """Centered biased variance per channel over (N, H, W), shape (C,)."""
  mu = x4.mean(axis=(0, 1, 2))
  return ((x4 - mu) ** 2).mean(axis=(0, 1, 2))


# ----------------------------------------------------------------------------
# 1. Instance Normalization.
# ----------------------------------------------------------------------------

def instance_norm(x, scale, bias, eps):
  """Instance Normalization (Ulyanov et al. 2016, arXiv 1607.08022).

    mu_{nc}    = 1/(HW) sum_{h,w} x_{nhwc}
    var_{nc}   = 1/(HW) sum_{h,w} (x_{nhwc} - mu_{nc})^2      (biased)
    y_{nhwc}   = (x_{nhwc} - mu_{nc}) / sqrt(var_{nc} + eps) * scale_c + bias_c

  Statistics are per example and per channel. For a dense (N, C) input the
  "spatial" extent is one element, so x - mu = 0 and y = bias.
  """
  x4, shape = _to_nhwc(x)
  mu = x4.mean(axis=(1, 2), keepdims=True)
  var = ((x4 - mu) ** 2).mean(axis=(1, 2), keepdims=True)
  y = (x4 - mu) / np.sqrt(var + eps) * _param(scale) + _param(bias)
  return y.reshape(shape)


# ----------------------------------------------------------------------------
# 2. Filter Response Normalization (+ TLU).
# ----------------------------------------------------------------------------

def frn(x, gamma, beta, eps, tau=None, learned_eps=None):
  """Filter Response Normalization (Singh & Krishnan 2020, arXiv 1911.09737).

    nu2_{nc}  = 1/(HW) sum_{h,w} x_{nhwc}^2        (mean square, NOT centered)
    x_hat     = x / sqrt(nu2 + eps_total)
    y         = gamma * x_hat + beta
    z         = max(y, tau)                         (TLU, only if tau given)

  with eps_total = eps + |learned_eps| if `learned_eps` (scalar or per-channel
  array) is given, else eps.

  On the learned eps (paper Sec. 3.1, about activation maps with N = H*W = 1,
  e.g. fully connected layers or the 1x1 maps late in InceptionV3 / VGG-A):
  with N = 1, x_hat = x / sqrt(x^2 + eps), which for a small eps is close to
  sign(x): almost constant in x, so its gradient is close to zero and learning
  stalls; a larger eps makes the curve smooth. The paper therefore makes eps
  learnable for such layers (its code listing describes eps as "a scalar
  constant or learnable variable"); the learned part enters through its
  absolute value so that eps stays positive, as implemented here. The paper's
  initial value for it could not be confirmed from the paper text here; see
  FRN_LEARNED_EPS_INIT for the value used (1e-4, TF Addons' init).

  The TLU z = max(y, tau) = ReLU(y - tau) + tau replaces the ReLU that would
  follow the normalization (FRN does no mean centering, so the learned
  threshold tau lets the layer recover from an arbitrary bias).
  """
  x4, shape = _to_nhwc(x)
  eps_total = np.float64(eps)
  if learned_eps is not None:
    eps_total = eps_total + np.abs(_param(learned_eps))
  nu2 = (x4 ** 2).mean(axis=(1, 2), keepdims=True)
  y = _param(gamma) * (x4 / np.sqrt(nu2 + eps_total)) + _param(beta)
  if tau is not None:
    y = np.maximum(y, _param(tau))
  return y.reshape(shape)


# ----------------------------------------------------------------------------
# 3. EvoNorm-B0.
# ----------------------------------------------------------------------------

def evonorm_b0(x, gamma, beta, v1, eps, running_var=None, apply_act=True):
  """EvoNorm-B0 (Liu, Brock, Simonyan & Le 2020, arXiv 2004.02967).

    y = x / max( sqrt(s_b^2 + eps), v1 * x + sqrt(s_i^2 + eps) ) * gamma + beta

  s_b^2: batch variance per channel, centered and biased, over (N, H, W);
  s_i^2: instance variance per example and channel, centered and biased, over
         (H, W) (zero for a dense input, where the extent is one element).
  In eval (`running_var` given) the running variance replaces s_b^2; the
  instance term is always computed from the current example.

  apply_act=False (a norm not followed by an activation), as this reference
  was specified:
    y = x / sqrt(s_b^2 + eps) * gamma + beta     (running_var in eval)
  i.e. the batch branch alone, without centering. NOTE: the paper's own
  pseudocode (and its ResNet code) does something different there: with
  `nonlinearity=False` EvoNorm returns the affine transform only,
  y = x * gamma + beta (see `evonorm_no_act_paper`).
  """
  x4, shape = _to_nhwc(x)
  s_b2 = _batch_var(x4) if running_var is None else _param(running_var)
  batch_std = np.sqrt(s_b2 + eps)
  if not apply_act:
    y = x4 / batch_std * _param(gamma) + _param(beta)
    return y.reshape(shape)
  mu_i = x4.mean(axis=(1, 2), keepdims=True)
  s_i2 = ((x4 - mu_i) ** 2).mean(axis=(1, 2), keepdims=True)
  right = _param(v1) * x4 + np.sqrt(s_i2 + eps)
  y = x4 / np.maximum(batch_std, right) * _param(gamma) + _param(beta)
  return y.reshape(shape)


def evonorm_b0_running_var(running_var, x, momentum):
  """New running variance for EvoNorm-B0 (momentum is a decay, Flax/Keras).

    running_var' = momentum * running_var + (1 - momentum) * s_b^2(x)

  with s_b^2 the centered, BIASED batch variance per channel over (N, H, W).
  """
  x4, _ = _to_nhwc(x)
  return momentum * _param(running_var) + (1.0 - momentum) * _batch_var(x4)


def evonorm_b0_running_mean(running_mean, x, momentum):
  """New running mean (momentum is a decay, Flax/Keras convention).

    running_mean' = momentum * running_mean + (1 - momentum) * mean_{N,H,W}(x)
  """
  x4, _ = _to_nhwc(x)
  return (momentum * _param(running_mean)
          + (1.0 - momentum) * x4.mean(axis=(0, 1, 2)))


# ----------------------------------------------------------------------------
# 4. EvoNorm-S0.
# ----------------------------------------------------------------------------

def evonorm_s0(x, gamma, beta, v1, groups, eps, apply_act=True):
  """EvoNorm-S0 (Liu, Brock, Simonyan & Le 2020, arXiv 2004.02967).

    y = x * sigmoid(v1 * x) / sqrt(s_g^2 + eps) * gamma + beta

  s_g^2: group variance per example: the C channels are split into `groups`
  consecutive groups of C/groups channels; the centered biased variance is
  taken over (H, W, channels of the group) and shared by those channels.

  apply_act=False, as this reference was specified:
    y = x / sqrt(s_g^2 + eps) * gamma + beta
  NOTE: the paper's pseudocode instead returns y = x * gamma + beta when
  `nonlinearity=False` (see `evonorm_no_act_paper`).
  """
  x4, shape = _to_nhwc(x)
  n, h, w, c = x4.shape
  if c % groups:
    raise ValueError(f'{c} channels do not split into {groups} groups')
  xg = x4.reshape(n, h, w, groups, c // groups)
  mu = xg.mean(axis=(1, 2, 4), keepdims=True)
  var = ((xg - mu) ** 2).mean(axis=(1, 2, 4), keepdims=True)
  std = np.broadcast_to(np.sqrt(var + eps), xg.shape).reshape(x4.shape)
  num = x4 * _sigmoid(_param(v1) * x4) if apply_act else x4
  y = num / std * _param(gamma) + _param(beta)
  return y.reshape(shape)


def evonorm_no_act_paper(x, gamma, beta):
  """What the EvoNorm paper's pseudocode does without a nonlinearity.

  In the paper's code listing (appendix; both EvoNorm-B0 and EvoNorm-S0 take
  a `nonlinearity` flag) the `else` branch is `return x * gamma + beta`: an
  affine transform only, no statistics. Its ResNet code uses that flag for the
  norm at the end of the residual branch (with gamma initialized to 0) and on
  the projection shortcut.

    y = x * gamma + beta
  """
  x = np.asarray(x, dtype=np.float64)
  return x * _param(gamma) + _param(beta)


# ----------------------------------------------------------------------------
# 5/6. Weight Standardization and Scaled WS.
# ----------------------------------------------------------------------------

def _fan_in_axes(kernel):
  return tuple(range(kernel.ndim - 1))


def weight_standardize(kernel, eps):
  """Weight Standardization (Qiao et al. 2019, arXiv 1903.10520).

    W_hat_{., o} = (W_{., o} - mu_o) / sqrt(var_o + eps)

  mu_o and var_o (biased) are taken per output channel (last axis) over all
  other axes, i.e. over the fan-in kh * kw * cin of an HWIO kernel.
  """
  k = np.asarray(kernel, dtype=np.float64)
  axes = _fan_in_axes(k)
  mu = k.mean(axis=axes, keepdims=True)
  var = ((k - mu) ** 2).mean(axis=axes, keepdims=True)
  return (k - mu) / np.sqrt(var + eps)


def scaled_weight_standardize(kernel, gain, gamma):
  """Scaled WS (Brock et al. 2021a, NF-ResNets, arXiv 2101.08692).

    W_hat_{., o} = gamma * gain_o * (W_{., o} - mu_o) / (sigma_o * sqrt(N))

  N = fan-in = kh * kw * cin (all axes but the last); mu_o and sigma_o (biased
  std) are per output channel over those axes; gain is a per-output-channel
  array; gamma is the activation's gain (RELU_GAMMA for ReLU).
  """
  k = np.asarray(kernel, dtype=np.float64)
  axes = _fan_in_axes(k)
  fan_in = int(np.prod([k.shape[a] for a in axes]))
  mu = k.mean(axis=axes, keepdims=True)
  sigma = np.sqrt(((k - mu) ** 2).mean(axis=axes, keepdims=True))
  return gamma * _param(gain) * (k - mu) / (sigma * np.sqrt(fan_in))


# ----------------------------------------------------------------------------
# 7. Moving averages.
# ----------------------------------------------------------------------------

def zero_debiased_ema(values, momentum):
  """Zero-debiased EMA (TF assign_moving_average(zero_debias=True); Adam's
  bias correction, Kingma & Ba 2015).

    biased_0   = 0
    biased_t   = momentum * biased_{t-1} + (1 - momentum) * value_t
    debiased_t = biased_t / (1 - momentum^t)

  `values` is a list of arrays; returns the list of debiased_t, t = 1..T.
  A constant sequence c gives c from step 1 on.
  """
  out = []
  biased = None
  for t, v in enumerate(values, start=1):
    v = np.asarray(v, dtype=np.float64)
    if biased is None:
      biased = np.zeros_like(v)
    biased = momentum * biased + (1.0 - momentum) * v
    out.append(biased / (1.0 - momentum ** t))
  return out


def plain_ema(values, momentum, init):
  """Plain EMA started at `init`.

    ema_0 = init
    ema_t = momentum * ema_{t-1} + (1 - momentum) * value_t

  Returns the list of ema_t, t = 1..T.
  """
  out = []
  ema = np.asarray(init, dtype=np.float64)
  for v in values:
    ema = momentum * ema + (1.0 - momentum) * np.asarray(v, dtype=np.float64)
    out.append(ema)
  return out


# ----------------------------------------------------------------------------
# 8. Adaptive Gradient Clipping.
# ----------------------------------------------------------------------------

def _unit_norms(a):
  """Frobenius norm per unit: over all axes but the last for ndim >= 2; a
  vector (a bias) or a scalar is one unit, as in the NFNets authors'
  unitwise_norm (the paper defines units as rows of weight matrices only).
  Keeps dims for broadcasting."""
  if a.ndim <= 1:
    return np.sqrt((a ** 2).sum(keepdims=True))
  return np.sqrt((a ** 2).sum(axis=_fan_in_axes(a), keepdims=True))


def adaptive_grad_clip(grads, params, clipping, eps=1e-3):
  """Unit-wise Adaptive Gradient Clipping (Brock et al. 2021b, NFNets,
  arXiv 2102.06171, Sec. 4).

    ||W_i||* = max(||W_i||_F, eps)
    if ||G_i||_F / ||W_i||* > clipping:
      G_i <- clipping * ||W_i||* / ||G_i||_F * G_i
    else G_i is kept.

  Units: for an array of ndim >= 2 a unit is one slice along the LAST axis
  (norm over all other axes: one output channel of an HWIO kernel, one output
  column of an (in, out) dense kernel); a vector or scalar is one unit.
  `grads` and `params` are flat dicts of arrays with the same keys.
  """
  out = {}
  for key, g in grads.items():
    g = np.asarray(g, dtype=np.float64)
    w = np.asarray(params[key], dtype=np.float64)
    w_norm = np.maximum(_unit_norms(w), eps)
    g_norm = _unit_norms(g)
    max_norm = clipping * w_norm
    # Only units with g_norm > max_norm (> 0) are rescaled, so the division
    # by g_norm is safe where it is used.
    scale = np.where(g_norm > max_norm,
                     max_norm / np.where(g_norm > 0, g_norm, 1.0), 1.0)
    out[key] = g * scale
  return out


# ----------------------------------------------------------------------------
# 9. Finite differences.
# ----------------------------------------------------------------------------

def numeric_grad(f, x, h=1e-4):
  """Central finite differences of a scalar function f at x (float64).

    df/dx_k ~= (f(x + h e_k) - f(x - h e_k)) / (2 h)
  """
  x = np.array(x, dtype=np.float64)  # A private copy.
  grad = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    orig = x[idx]
    x[idx] = orig + h
    f_plus = float(f(x))
    x[idx] = orig - h
    f_minus = float(f(x))
    x[idx] = orig
    grad[idx] = (f_plus - f_minus) / (2.0 * h)
  return grad


# ----------------------------------------------------------------------------
# Self-check (not run on import).
# ----------------------------------------------------------------------------

def _self_check():
  """Cheap sanity checks that every reference runs and obeys its definition."""
  rng = np.random.default_rng(0)
  n, h, w, c = 4, 3, 5, 6
  x = rng.normal(1.5, 2.0, (n, h, w, c))
  xd = rng.normal(1.5, 2.0, (8, c))
  scale = rng.uniform(0.5, 1.5, c)
  bias = rng.normal(0, 1, c)
  eps = 1e-5

  # instance_norm: per-(n, c) mean == bias, std ~= scale.
  y = instance_norm(x, scale, bias, eps)
  assert y.shape == x.shape
  np.testing.assert_allclose(y.mean(axis=(1, 2)), np.broadcast_to(bias, (n, c)),
                             atol=1e-12)
  np.testing.assert_allclose(((y - y.mean(axis=(1, 2), keepdims=True)) ** 2)
                             .mean(axis=(1, 2)),
                             np.broadcast_to(scale ** 2, (n, c)), rtol=1e-3)
  np.testing.assert_allclose(instance_norm(xd, scale, bias, eps),
                             np.broadcast_to(bias, xd.shape), atol=1e-12)

  # frn: unit mean square per (n, c) with gamma=1, beta=0; TLU floors at tau;
  # dense input ~ sign(x) for a tiny eps; learned eps adds |eps_l|.
  y = frn(x, np.ones(c), np.zeros(c), 1e-12)
  np.testing.assert_allclose((y ** 2).mean(axis=(1, 2)), 1.0, rtol=1e-9)
  tau = rng.normal(0, 0.5, c)
  z = frn(x, scale, bias, eps, tau=tau)
  assert np.all(z >= tau - 1e-15)
  np.testing.assert_allclose(frn(xd, np.ones(c), np.zeros(c), 1e-12),
                             np.sign(xd), atol=1e-6)
  np.testing.assert_allclose(
      frn(x, scale, bias, 1e-6, learned_eps=-FRN_LEARNED_EPS_INIT),
      frn(x, scale, bias, 1e-6 + FRN_LEARNED_EPS_INIT))

  # evonorm_b0: with v1 = 0 and a big instance term it reduces to the
  # instance branch; apply_act=False is the batch branch; running stats.
  v1 = rng.uniform(0.5, 1.5, c)
  y = evonorm_b0(x, scale, bias, v1, eps)
  assert y.shape == x.shape and np.all(np.isfinite(y))
  s_b2 = x.var(axis=(0, 1, 2))
  np.testing.assert_allclose(
      evonorm_b0(x, scale, bias, v1, eps, apply_act=False),
      x / np.sqrt(s_b2 + eps) * scale + bias)
  rv = rng.uniform(0.5, 2.0, c)
  np.testing.assert_allclose(
      evonorm_b0(x, scale, bias, v1, eps, running_var=rv, apply_act=False),
      x / np.sqrt(rv + eps) * scale + bias)
  s_i = np.sqrt(x.var(axis=(1, 2), keepdims=True) + eps)
  expect = x / np.maximum(np.sqrt(s_b2 + eps), v1 * x + s_i) * scale + bias
  np.testing.assert_allclose(y, expect)
  yd = evonorm_b0(xd, scale, bias, v1, eps)
  np.testing.assert_allclose(
      yd, xd / np.maximum(np.sqrt(xd.var(0) + eps), v1 * xd + np.sqrt(eps))
      * scale + bias)
  np.testing.assert_allclose(evonorm_b0_running_var(rv, x, 0.9),
                             0.9 * rv + 0.1 * s_b2)
  np.testing.assert_allclose(evonorm_b0_running_mean(bias, x, 0.9),
                             0.9 * bias + 0.1 * x.mean(axis=(0, 1, 2)))

  # evonorm_s0: groups == C gives instance std; groups == 1 layer std.
  y = evonorm_s0(x, scale, bias, v1, 2, eps)
  assert y.shape == x.shape and np.all(np.isfinite(y))
  np.testing.assert_allclose(
      evonorm_s0(x, scale, bias, v1, c, eps),
      x * _sigmoid(v1 * x) / s_i * scale + bias)
  s_l = np.sqrt(x.var(axis=(1, 2, 3), keepdims=True) + eps)
  np.testing.assert_allclose(
      evonorm_s0(x, scale, bias, v1, 1, eps, apply_act=False),
      x / s_l * scale + bias)
  np.testing.assert_allclose(evonorm_no_act_paper(x, scale, bias),
                             x * scale + bias)

  # weight_standardize: per-output-channel mean 0, std ~1.
  k = rng.normal(0.3, 0.7, (3, 3, 4, 5))
  kh = weight_standardize(k, 1e-10)
  np.testing.assert_allclose(kh.mean(axis=(0, 1, 2)), 0, atol=1e-12)
  np.testing.assert_allclose(kh.std(axis=(0, 1, 2)), 1, rtol=1e-8)

  # scaled_weight_standardize: per-channel mean 0, std gamma*gain/sqrt(fan_in).
  gain = rng.uniform(0.5, 2.0, 5)
  ks = scaled_weight_standardize(k, gain, RELU_GAMMA)
  np.testing.assert_allclose(ks.mean(axis=(0, 1, 2)), 0, atol=1e-12)
  np.testing.assert_allclose(ks.std(axis=(0, 1, 2)),
                             RELU_GAMMA * gain / np.sqrt(36), rtol=1e-10)
  zz = rng.normal(size=200_000)
  assert abs(np.std(RELU_GAMMA * np.maximum(zz, 0)) - 1) < 0.02

  # EMAs: a constant sequence is exact from step 1 when debiased; the plain
  # EMA from 0 is the biased one.
  const = [np.full(3, 2.5)] * 5
  for d in zero_debiased_ema(const, 0.99):
    np.testing.assert_allclose(d, 2.5)
  p = plain_ema(const, 0.9, np.zeros(3))
  np.testing.assert_allclose(p[0], 0.25)
  np.testing.assert_allclose(p[-1], 2.5 * (1 - 0.9 ** 5))

  # adaptive_grad_clip: clipped units end at ratio == clipping, others kept.
  params = {'k': k, 'b': rng.normal(size=5), 'd': rng.normal(size=(7, 5))}
  grads = {key: rng.normal(size=v.shape) * 5 for key, v in params.items()}
  grads['d'][:, 0] = 1e-6  # A unit that must not be clipped.
  clipped = adaptive_grad_clip(grads, params, 0.1)
  for key in params:
    wn = np.maximum(_unit_norms(params[key]), 1e-3)
    ratio = _unit_norms(clipped[key]) / wn
    assert np.all(ratio <= 0.1 + 1e-12)
    kept = _unit_norms(grads[key]) / wn <= 0.1
    np.testing.assert_array_equal(
        np.broadcast_to(kept, grads[key].shape),
        np.isclose(clipped[key], grads[key]))
  assert np.all(clipped['d'][:, 0] == grads['d'][:, 0])

  # numeric_grad: exact-ish on a cubic.
  a = rng.normal(size=(2, 3))
  np.testing.assert_allclose(numeric_grad(lambda t: np.sum(t ** 3), a),
                             3 * a ** 2, rtol=1e-6, atol=1e-8)
  return True
