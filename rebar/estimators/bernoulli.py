"""Estimators of ∇_ℓ E_{b ~ Bernoulli(σ(ℓ))}[f(b)] for any function f.

One signature for every estimator here:

  estimator(logits, f, u, [v,] <its own parameters>) -> Result

  logits  ℓ, broadcastable to u's shape [..., d]: one row of d independent
          Bernoulli(σ(ℓ)) units per index of the leading axes `...`. A
          shared ℓ (e.g. [d]) is broadcast to every row.
  f       a callable [..., d] -> [...]: one value per row, row-wise (row r
          of the result depends on row r of the input only). It receives
          the hard sample b (exactly 0 or 1) and, for the estimators that
          relax it, values in (0, 1); those estimators need f differentiable
          there. f may close over its own variables (a decoder, the data).
  u       uniforms in (0, 1), [..., d], drawn by the caller; the sample is
          z = ℓ + log u - log(1 - u), b = 1[z > 0] (b = 1 iff u > σ(-ℓ)).
  b'      ARM and DisARM only: the antithetic partner b' = 1[u < σ(ℓ)] of
          b (the hard sample of 1 - u: 1[1 - u > σ(-ℓ)] is the same event),
          also Bernoulli(σ(ℓ)), at which they evaluate f too.
  v       REBAR and RELAX only: uniforms in (0, 1), [..., d], for the
          conditional sample z~ ~ p(z | b, ℓ) (conditional_logistic_sample).
          Fresh uniforms, or tied_conditional_noise(ℓ, u) for the REBAR
          paper's choice (z~ equal to z in value).

  The noise is treated as constant (stopped). "Rows" are all the indices
  of `...` (for REINFORCE LOO these include the k samples). The surrogate
  estimates ∇ F, F = mean over rows of E[f(b_row)].

  Result fields:
    surrogate           scalar. Its value is the mean over rows of f(b)
                        (Concrete: of f at the relaxed sample; ARM, DisARM:
                        of the pair mean (f(b) + f(b'))/2); its gradient
                        with respect to ℓ (and whatever ℓ is computed from)
                        is the estimator's estimate of ∇ F, and with respect
                        to f's own variables it is mean ∂f(b)/∂(those)
                        (Concrete: at the relaxed sample; ARM, DisARM: the
                        mean of the pair mean (∂f(b) + ∂f(b'))/2, unbiased
                        since b and b' are both Bernoulli(σ(ℓ)) samples, and
                        of variance at most that of ∂f(b) alone, the two
                        halves having equal variances). The
                        control-variate parameters (REBAR's η and λ, RELAX's
                        φ, a REINFORCE baseline) get no gradient from it.
    estimate            ĝ, [..., d]: per row, the estimate of
                        ∂E[f(b_row)]/∂ℓ_row (∂surrogate/∂ℓ_row = ĝ_row / the
                        number of rows; for a shared ℓ, ∂surrogate/∂ℓ is the
                        mean of ĝ over rows). It is formed with an inner
                        gradient tape and stays differentiable in the
                        control-variate parameters (η, λ, φ, a baseline)
                        under an enclosing tape.
    variance_objective  mean(ĝ²) over all elements. For the unbiased
                        estimators E[ĝ] does not depend on the
                        control-variate parameters, so the gradient of
                        E[mean(ĝ²)] with respect to them is that of the mean
                        per-element variance (the RELAX paper's objective for
                        φ). Differentiate it with respect to those
                        parameters only (its gradient with respect to ℓ or
                        f's variables is no training signal). It is the
                        variance of the per-row estimates, a proxy for that
                        of their mean or of a gradient ĝ is chained into.
    f_values            f(b), [...], the hard sample's values (for printing;
                        ARM, DisARM too: f at b, not at b').
    learning_signal     the factor multiplying ∂log p(b | ℓ)/∂ℓ = b - σ(ℓ),
                        [...], for the score-function estimators; ARM and
                        DisARM: f(b) - f(b'), b the hard sample and b' its
                        antithetic partner, the factor of their per-unit
                        weights; None for Concrete and straight-through.

Usage, with η, λ = exp(log λ) or φ the control-variate parameters:

  with tf.GradientTape(persistent=True) as tape:
    result = rebar(encoder(x), f, u, v, eta, tf.exp(log_temperature))
  model_grads = tape.gradient(result.surrogate, model_variables)
  cv_grads = tape.gradient(result.variance_objective, [eta, log_temperature])
"""

import collections

import numpy as np
import tensorflow as tf

from rebar.sbn import center, hard_sample, logistic_sample, relaxed_sample

sg = tf.stop_gradient

Result = collections.namedtuple(
    'Result', 'surrogate estimate variance_objective f_values learning_signal')


def _per_row_logits(logits, u):
  """ℓ broadcast to u's shape: each row's own copy, so that one gradient of
  a sum over rows gives every row's derivative."""
  logits = tf.convert_to_tensor(logits, u.dtype)
  return tf.broadcast_to(
      logits, tf.broadcast_dynamic_shape(tf.shape(logits), tf.shape(u)))


def _hard(logits, u):
  # hard_sample returns float32; 0 and 1 are exact in every float type.
  return tf.cast(hard_sample(logits, u), u.dtype)


def _score(logits, b):
  """∂log p(b | ℓ)/∂ℓ = b - σ(ℓ), stopped: a constant factor of ĝ."""
  return sg(b - tf.sigmoid(logits))


def pack_result(estimate, logits, f_values, objective=None,
                learning_signal=None, values=None):
  """Packs ĝ into a Result (categorical.py's estimators use it too).

  Without `objective` (the score-function estimators, ARM and DisARM, whose
  f values have no path to ℓ): surrogate = mean_rows values +
  Σ sg(ĝ)(ℓ - sg(ℓ)) / rows, the second term 0 in value with gradient
  ĝ / rows with respect to ℓ; `values` ([...], default f_values) is what
  f's own variables are trained at (ARM, DisARM: the pair mean). With
  `objective` (Concrete, straight-through: f at a sample differentiable in
  ℓ, whose gradient is ĝ): surrogate = mean_rows objective.
  """
  if objective is None:
    values = f_values if values is None else values
    rows = tf.cast(tf.size(values), estimate.dtype)
    linear = tf.reduce_sum(sg(estimate) * (logits - sg(logits))) / rows
    surrogate = tf.reduce_mean(values) + linear
  else:
    surrogate = tf.reduce_mean(objective)
  return Result(surrogate=surrogate, estimate=estimate,
                variance_objective=tf.reduce_mean(tf.square(estimate)),
                f_values=f_values, learning_signal=learning_signal)


def _score_function(logits, b, f_values, learning_signal):
  """ĝ = learning_signal · (b - σ(ℓ)), [..., d]."""
  estimate = learning_signal[..., None] * _score(logits, b)
  return pack_result(estimate, logits, f_values,
                     learning_signal=learning_signal)


def reinforce(logits, f, u, baseline=0.0):
  """REINFORCE (Williams 1992) with a baseline independent of b.

  ĝ = (f(b) - c) (b - σ(ℓ)), unbiased when c does not depend on b.

  Args:
    logits, f, u: see the module docstring.
    baseline: c, broadcastable to [...]; it may carry parameters (an NVIL
      baseline c(x)), which variance_objective then trains.
  Returns:
    A Result; learning_signal = f(b) - c.
  """
  u = sg(u)
  logits = _per_row_logits(logits, u)
  b = _hard(logits, u)
  f_values = f(b)
  return _score_function(logits, b, f_values, sg(f_values) - baseline)


def reinforce_loo(logits, f, u):
  """REINFORCE with a leave-one-out baseline over k samples per example.

  With f_1..f_k the values of the k samples of one example,
  ĝ_i = (f_i - (1/(k-1)) Σ_{j≠i} f_j) (b_i - σ(ℓ)); the baseline of sample
  i uses only the other, independent, samples, so each ĝ_i is unbiased.
  Their mean over the k samples (the surrogate's gradient for a shared ℓ)
  is the usual k-sample estimate.

  Args:
    logits: ℓ, broadcastable to u's shape; typically [..., d] per example.
    f: see the module docstring.
    u: [k, ..., d] uniforms, the k >= 2 samples on the leading axis.
  Returns:
    A Result with estimate [k, ..., d] (one ĝ_i per sample) and
    learning_signal [k, ...].
  """
  u = sg(u)
  logits = _per_row_logits(logits, u)
  b = _hard(logits, u)
  f_values = f(b)
  return _score_function(logits, b, f_values, center(sg(f_values)))


def _antithetic_pair(logits, f, u):
  """The hard sample b = 1[u > σ(-ℓ)], its antithetic partner
  b' = 1[u < σ(ℓ)], and f at both.

  Args:
    logits, f, u: see the module docstring (u already stopped).
  Returns:
    (ℓ per row [..., d], b [..., d], b' [..., d], f(b) [...], f(b') [...]).
  """
  logits = _per_row_logits(logits, u)
  b = _hard(logits, u)
  # Compared with σ(ℓ) rather than formed as _hard(ℓ, 1 - u): 1 - u rounds.
  b_anti = tf.cast(u < tf.sigmoid(logits), u.dtype)
  return logits, b, b_anti, f(b), f(b_anti)


def _antithetic_result(logits, estimate, f_values, f_anti):
  """ĝ [..., d] packed with the pair mean as the surrogate's value and
  f(b) - f(b') as the learning signal (module docstring)."""
  return pack_result(estimate, logits, f_values,
                     learning_signal=sg(f_values) - sg(f_anti),
                     values=0.5 * (f_values + f_anti))


def arm_estimate(u, f_values, f_anti):
  """ARM's ĝ from its parts: (f(b) - f(b')) (u - 1/2), [..., d].

  Args:
    u: [..., d], the noise of the hard sample b = 1[u > σ(-ℓ)].
    f_values, f_anti: f(b) and f(b'), b' = 1[u < σ(ℓ)], [...] (stopped
      here).
  """
  return (sg(f_values) - sg(f_anti))[..., None] * (sg(u) - 0.5)


def disarm_estimate(logits, b, b_anti, f_values, f_anti):
  """DisARM's ĝ from its parts: (f(b) - f(b')) (b - 1/2) 1[b ≠ b']
  σ(|ℓ|), [..., d].

  Args:
    logits: ℓ, [..., d].
    b, b_anti: the hard sample 1[u > σ(-ℓ)] and its partner 1[u < σ(ℓ)],
      [..., d].
    f_values, f_anti: f(b) and f(b'), [...] (stopped here).
  """
  # Where b_i = b'_i, u_i lies in an interval symmetric about 1/2, so the
  # conditional mean of ARM's u_i - 1/2 there is 0.
  differ = tf.cast(tf.not_equal(b, b_anti), b.dtype)
  return ((sg(f_values) - sg(f_anti))[..., None] * (b - 0.5) * differ
          * sg(tf.sigmoid(tf.abs(logits))))


def arm(logits, f, u):
  """ARM (Yin and Zhou 2019, "ARM: Augment-REINFORCE-Merge gradient for
  stochastic binary networks", ICLR 2019; the ARM gradient for a vector
  of binary units):

    ĝ_i = (f(1[u > σ(-ℓ)]) - f(1[u < σ(ℓ)])) (u_i - 1/2)
        = (f(b) - f(b')) (u_i - 1/2),

  both f values at whole vectors of the row. Unbiased (the sign and the
  factor are checked by exact enumeration in tests/test_bernoulli.py).

  Args:
    logits, f, u: see the module docstring; u is [..., d].
  Returns:
    A Result, estimate [..., d]; learning_signal = f(b) - f(b'), [...].
  """
  u = sg(u)
  logits, _, _, f_values, f_anti = _antithetic_pair(logits, f, u)
  return _antithetic_result(logits, arm_estimate(u, f_values, f_anti),
                            f_values, f_anti)


def disarm(logits, f, u):
  """DisARM (Dong, Mnih and Tucker 2020, "DisARM: An antithetic gradient
  estimator for binary latent variables", NeurIPS 2020; the multivariate
  estimator). The paper's antithetic pair is (b_p, b~_p) = (b', b) here,
  and its

    ĝ_i = 1/2 (f(b_p) - f(b~_p)) (-1)^{b~_p,i} 1[b_p,i ≠ b~_p,i] σ(|ℓ_i|)
        = (f(b) - f(b')) (b_i - 1/2) 1[b_i ≠ b'_i] σ(|ℓ_i|),

  as (-1)^{b_i} = -(2 b_i - 1) where b_i ≠ b'_i. It is ARM's ĝ with u_i - 1/2
  replaced by its conditional mean given the pair (b, b'), which is its mean
  given (b_i, b'_i), so its variance per unit is at most ARM's
  (Rao-Blackwell; the paper's theorem). The paper's
  formula holds as written: its sign convention is checked by exact
  enumeration in tests/test_bernoulli.py.

  Args:
    logits, f, u: see the module docstring; u is [..., d].
  Returns:
    A Result, estimate [..., d]; learning_signal = f(b) - f(b'), [...].
  """
  u = sg(u)
  logits, b, b_anti, f_values, f_anti = _antithetic_pair(logits, f, u)
  return _antithetic_result(
      logits, disarm_estimate(logits, b, b_anti, f_values, f_anti), f_values,
      f_anti)


def concrete(logits, f, u, temperature):
  """The Concrete / Gumbel-softmax estimator (Maddison et al., Jang et al.
  2017): the gradient of f at the relaxed sample σ(z/λ). Biased.

  ĝ = ∂f(σ((ℓ + log u - log(1 - u))/λ))/∂ℓ.

  Args:
    logits, f, u: see the module docstring.
    temperature: λ > 0, a scalar.
  Returns:
    A Result; its surrogate is mean f(σ(z/λ)) (so f's own variables are
    trained at the relaxed sample too); f_values are still f(b).
  """
  u = sg(u)
  logits = _per_row_logits(logits, u)
  with tf.GradientTape() as tape:
    tape.watch(logits)
    relaxed_values = f(relaxed_sample(logits, u, temperature,
                                      muprop_relaxation=False))
    total = tf.reduce_sum(relaxed_values)
  estimate = tape.gradient(total, logits)
  f_values = f(_hard(logits, u))
  return pack_result(estimate, logits, f_values, objective=relaxed_values)


def straight_through(logits, f, u):
  """The straight-through estimator (Bengio et al. 2013). Biased.

  f is evaluated at b, and b's derivative taken as that of its mean σ(ℓ):
  ĝ = ∂f/∂b |_b ⊙ σ(ℓ)(1 - σ(ℓ)).

  Args:
    logits, f, u: see the module docstring; f must be differentiable at
      b in {0, 1}.
  Returns:
    A Result.
  """
  u = sg(u)
  logits = _per_row_logits(logits, u)
  with tf.GradientTape() as tape:
    tape.watch(logits)
    mean = tf.sigmoid(logits)
    # b in value (mean - sg(mean) is exactly 0), σ(ℓ)'s gradient.
    f_values = f(_hard(logits, u) + (mean - sg(mean)))
    total = tf.reduce_sum(f_values)
  estimate = tape.gradient(total, logits)
  return pack_result(estimate, logits, f_values, objective=f_values)


def conditional_logistic_sample(logits, b, v):
  """z~ ~ p(z | b, ℓ) from v ~ U(0, 1), differentiable in ℓ at fixed v.

  With p = σ(ℓ), u is uniform on (1 - p, 1) given b = 1 and on (0, 1 - p)
  given b = 0, so u~ = 1 - (1 - v) p (b = 1) or u~ = v (1 - p) (b = 0) and
  z~ = ℓ + log u~ - log(1 - u~). The logarithms are formed from log p and
  log(1 - p) so that u~ is never rounded to 0 or 1.

  Args:
    logits: ℓ, [..., d]; b: the hard sample, [..., d]; v: [..., d] in (0, 1).
  Returns:
    z~, [..., d].
  """
  p = tf.sigmoid(logits)
  log_p = tf.math.log_sigmoid(logits)
  log_not_p = tf.math.log_sigmoid(-logits)
  z_one = logits + tf.math.log1p(-(1.0 - v) * p) - (tf.math.log1p(-v) + log_p)
  z_zero = logits + (tf.math.log(v) + log_not_p) - tf.math.log1p(-v * (1.0 - p))
  return tf.where(b > 0.5, z_one, z_zero)


def tied_conditional_noise(logits, u):
  """The v for which z~ = z in value: v = (u - (1 - p))/p if b = 1, else
  u/(1 - p), stopped (the REBAR paper's code ties z~ to z this way).

  Given b, this v is uniform on (0, 1) and independent of b, so it is a
  valid v; it is clipped into (0, 1) by the dtype's epsilon, where
  conditional_logistic_sample is finite.
  """
  logits = tf.convert_to_tensor(logits, u.dtype)
  b = _hard(logits, u)
  not_p = tf.sigmoid(-logits)
  v = tf.where(b > 0.5, (u - not_p) / (1.0 - not_p), u / not_p)
  eps = float(np.finfo(u.dtype.as_numpy_dtype).eps)
  return sg(tf.clip_by_value(v, eps, 1.0 - eps))


def relax(logits, f, u, v, control_variate, eta=1.0):
  """RELAX for binary units (Grathwohl et al. 2018).

  With z = ℓ + log u - log(1 - u), b = 1[z > 0], z~ = z~(ℓ, b, v) and a
  control variate c (differentiable in z):
    ĝ = [f(b) - η c(z~)] (b - σ(ℓ)) + η ∂c(z)/∂ℓ - η ∂c(z~)/∂ℓ,
  both derivatives total (through z and z~) at fixed u, v. Unbiased for any
  c and η: E[c(z~) ∂log p(b)/∂ℓ + ∂c(z~)/∂ℓ] = ∂E_b[E_{z|b}[c(z)]]/∂ℓ =
  ∂E[c(z)]/∂ℓ = E[∂c(z)/∂ℓ], so the terms in c cancel in expectation.

  Args:
    logits, f, u, v: see the module docstring.
    control_variate: c_φ, a callable [..., d] -> [...], row-wise, that may
      close over its parameters φ (and per-row context such as x).
    eta: η, a scalar scale of c (the RELAX paper's c_φ has none: 1).
  Returns:
    A Result; learning_signal = f(b) - η c(z~), differentiable in η and φ.
  """
  u, v = sg(u), sg(v)
  logits = _per_row_logits(logits, u)
  b, c_z_tilde, reparameterised = relax_parts(
      logits, control_variate, lambda l: logistic_sample(l, u),
      lambda l, z: _hard(l, u),
      lambda l, b: conditional_logistic_sample(l, b, v))
  f_values = f(b)
  estimate, learning_signal = relax_estimate(logits, b, f_values, c_z_tilde,
                                             reparameterised, eta)
  return pack_result(estimate, logits, f_values,
                     learning_signal=learning_signal)


def relax_parts(logits, control_variate, sample, hard, conditional):
  """RELAX's sample and control-variate terms, for any discrete family
  (categorical.py uses it too).

  With z = sample(ℓ), b = hard(ℓ, z) and z~ = conditional(ℓ, b), returns
  (b, c(z~), ∂c(z)/∂ℓ - ∂c(z~)/∂ℓ), the derivatives total (through z and
  z~) at fixed noise; the last from one gradient of Σ c(z) - Σ c(z~).
  """
  with tf.GradientTape() as tape:
    tape.watch(logits)
    z = sample(logits)
    b = hard(logits, z)
    c_z_tilde = control_variate(conditional(logits, b))
    difference = tf.reduce_sum(control_variate(z)) - tf.reduce_sum(c_z_tilde)
  return b, c_z_tilde, tape.gradient(difference, logits)


def relax_estimate(logits, b, f_values, c_z_tilde, reparameterised, eta):
  """RELAX's ĝ from its parts (Grathwohl et al. 2018, eq. for binary b):
  ĝ = [f(b) - η c(z~)] (b - σ(ℓ)) + η (∂c(z)/∂ℓ - ∂c(z~)/∂ℓ).

  Args:
    logits: ℓ, [..., d]; b: the hard sample, [..., d].
    f_values: f(b), [...] (stopped here).
    c_z_tilde: c(z~), [...], differentiable in the control variate's
      parameters.
    reparameterised: ∂c(z)/∂ℓ - ∂c(z~)/∂ℓ, [..., d].
    eta: η, a scalar.
  Returns:
    (ĝ [..., d], learning_signal f(b) - η c(z~) [...]).
  """
  learning_signal = sg(f_values) - eta * c_z_tilde
  estimate = (learning_signal[..., None] * _score(logits, b)
              + eta * reparameterised)
  return estimate, learning_signal


def rebar(logits, f, u, v, eta, temperature):
  """REBAR (Tucker et al. 2017): RELAX with c(z) = f(σ(z/λ)).

  ĝ = [f(b) - η f(σ_λ(z~))] (b - σ(ℓ)) + η ∂f(σ_λ(z))/∂ℓ - η ∂f(σ_λ(z~))/∂ℓ,
  σ_λ(z) = σ(z/λ), the Concrete relaxation. Unbiased for every η and λ,
  which variance_objective can train.

  Args:
    logits, f, u, v: see the module docstring.
    eta: η, a scalar.
    temperature: λ > 0, a scalar (e.g. exp of a trained log λ).
  Returns:
    A Result; learning_signal = f(b) - η f(σ_λ(z~)).
  """
  return relax(logits, f, u, v,
               lambda z: f(tf.sigmoid(z / temperature)), eta=eta)
