"""Estimators of ∇_ℓ E_{b ~ Cat(softmax(ℓ))}[f(b)] for any function f of K
independent C-way categorical variables.

One signature for every estimator here:

  estimator(logits, f, u, [v,] <its own parameters>) -> Result

  logits  ℓ, broadcastable to u's shape [..., K, C]: one row of K independent
          Cat(θ_k) variables, θ_k = softmax(ℓ_k) over the last axis, per index
          of the leading axes `...`. ℓ is unnormalised: the estimators use
          log θ = log_softmax(ℓ). A shared ℓ (e.g. [K, C]) is broadcast to
          every row.
  f       a callable [..., K, C] -> [...]: one value per row, row-wise. It
          receives the hard sample b, one-hot (exactly 0 or 1), and, for the
          estimators that relax it, points of the simplex (softmax(z/λ) per
          variable); those estimators need f differentiable there. f may
          close over its own variables (a decoder, the data).
  f_at    ARS and ARSM only, in place of f: a callable (rows, b) -> [N], rows
          int32 [N] indices into the flattened leading axes `...` (which
          example each evaluation belongs to, so that f_at can gather that
          example's data), b [N, K, C] one-hot. The estimator calls it once,
          on the distinct (row, pseudo-action) pairs only.
  u       uniforms in (0, 1), [..., K, C], drawn by the caller; the sample is
          the Gumbel-max sample z = log θ - log(-log u), b = one_hot(argmax_C
          z) (gumbel_sample, hard_sample). Stick-breaking DisARM reads its
          C - 1 binaries' uniforms from u[..., :C-1] instead (its docstring).
  v       REBAR and RELAX only: uniforms in (0, 1), [..., K, C], for the
          conditional sample z~ ~ p(z | b, ℓ) (conditional_gumbel_sample).
          Fresh uniforms, or tied_conditional_noise(ℓ, u) for z~ = z in
          value.

  The noise is treated as constant (stopped). "Rows" are all the indices of
  `...` (for REINFORCE LOO these include the k samples). The surrogate
  estimates ∇ F, F = mean over rows of E[f(b_row)].

  Result fields:
    surrogate           scalar. Its value is the mean over rows of f(b)
                        (Gumbel-softmax: of f at the relaxed sample;
                        stick-breaking DisARM: of the pair mean (f(b) +
                        f(b~))/2); its gradient with respect to ℓ (and
                        whatever ℓ is computed from) is the estimator's
                        estimate of ∇ F, and with respect to f's own variables
                        it is mean ∂f(b)/∂(those) (Gumbel-softmax: at the
                        relaxed sample; straight-through: at b, f's gradient
                        being taken there; stick-breaking DisARM: of the pair
                        mean, both halves being Cat(θ) samples). The
                        control-variate parameters (REBAR's η and λ, RELAX's
                        φ) get no gradient from it.
    estimate            ĝ, [..., K, C]: per row, the estimate of
                        ∂E[f(b_row)]/∂ℓ_row (∂surrogate/∂ℓ_row = ĝ_row / the
                        number of rows; for a shared ℓ, ∂surrogate/∂ℓ is the
                        mean of ĝ over rows). Formed with an inner gradient
                        tape where it involves derivatives, it stays
                        differentiable in the control-variate parameters
                        under an enclosing tape. Its entries sum to 0 over C
                        for every estimator here (each sees ℓ_k only through
                        log_softmax(ℓ_k), invariant to a shift of ℓ_k).
    variance_objective  mean(ĝ²) over all elements (see bernoulli.py: for the
                        unbiased estimators its gradient with respect to the
                        control-variate parameters is that of the mean
                        per-element variance). Differentiate it with respect
                        to those parameters only.
    f_values            f(b), [...], the hard sample's values.
    learning_signal     the factor multiplying ∂log p(b | ℓ)/∂ℓ = b - θ,
                        [...], for the score-function estimators (REINFORCE
                        LOO, RELAX, REBAR); stick-breaking DisARM: f(b) -
                        f(b~); None for Gumbel-softmax, straight-through, ARS
                        and ARSM (whose ĝ has no single such factor).
    n_evaluations       the mean number of evaluations of f per row the
                        estimator made, a Python int (REINFORCE LOO,
                        straight-through: 1; Gumbel-softmax, stick-breaking
                        DisARM: 2; REBAR: 3, f(b), f(σ_λ(z)), f(σ_λ(z~));
                        RELAX: 1, its control variate's calls not counted) or,
                        for ARS and ARSM, a scalar tensor: the mean number of
                        distinct pseudo-actions evaluated per row, the true
                        sample b included.

Usage, with η, λ = exp(log λ) or φ the control-variate parameters:

  with tf.GradientTape(persistent=True) as tape:
    result = rebar(encoder(x), f, u, v, eta, tf.exp(log_temperature))
  model_grads = tape.gradient(result.surrogate, model_variables)
  cv_grads = tape.gradient(result.variance_objective, [eta, log_temperature])

Coupled estimators (Dong, Mnih and Tucker 2021): stick_breaking_disarm is the
conditional mean, given the pair of categorical samples, of multivariate
DisARM on the C - 1 stick-breaking binaries, derived here and checked by
exact enumeration; whether it equals that paper's stick-breaking estimator
(written there with importance weights) was not checked against the paper.

Everything is vectorised and runs inside tf.function; all but ARS and ARSM
also under XLA (jit_compile=True). ARS and ARSM deduplicate with
tf.raw_ops.UniqueV2 and so call f_at on a batch of data-dependent size:
use them in tf.function without jit_compile.
"""

import collections

import numpy as np
import tensorflow as tf

from rebar.estimators import bernoulli
from rebar.sbn import center

sg = tf.stop_gradient

Result = collections.namedtuple(
    'Result', 'surrogate estimate variance_objective f_values learning_signal '
    'n_evaluations')


def _per_row_logits(logits, u):
  """ℓ broadcast to u's shape: each row's own copy, so that one gradient of
  a sum over rows gives every row's derivative."""
  logits = tf.convert_to_tensor(logits, u.dtype)
  return tf.broadcast_to(
      logits, tf.broadcast_dynamic_shape(tf.shape(logits), tf.shape(u)))


def _num_categories(u):
  num_categories = u.shape[-1]
  if num_categories is None:
    raise ValueError('the number of categories C (u.shape[-1]) must be static')
  return int(num_categories)


def gumbel_sample(logits, u):
  """z = log_softmax(ℓ) - log(-log u), [..., K, C]: log θ plus standard
  Gumbel noise (the Gumbel-max parameterisation of the RELAX paper's
  appendix B, with log α = log θ normalised)."""
  return tf.nn.log_softmax(logits, axis=-1) - tf.math.log(-tf.math.log(u))


def hard_sample(z):
  """b = one_hot(argmax_C z), [..., K, C], in z's dtype (Cat(θ) when z is
  gumbel_sample(ℓ, u)). No gradient."""
  return sg(tf.one_hot(tf.argmax(z, axis=-1), tf.shape(z)[-1],
                       dtype=z.dtype))


def relaxed_sample(z, temperature):
  """softmax(z/λ) over C, [..., K, C]: the Concrete / Gumbel-softmax
  relaxation of b (RELAX paper, appendix B, eq. 34)."""
  return tf.nn.softmax(z / temperature, axis=-1)


def _score(logits, b):
  """∂log p(b | ℓ)/∂ℓ = b - softmax(ℓ), stopped: a constant factor of ĝ."""
  return sg(b - tf.nn.softmax(logits, axis=-1))


def _result(estimate, logits, f_values, n_evaluations, objective=None,
            learning_signal=None, values=None):
  """Packs ĝ into a Result: bernoulli.pack_result's fields (its docstring
  says how the surrogate is formed) and n_evaluations."""
  packed = bernoulli.pack_result(estimate, logits, f_values, objective,
                                 learning_signal, values)
  return Result(**packed._asdict(), n_evaluations=n_evaluations)


def reinforce_loo(logits, f, u):
  """REINFORCE with a leave-one-out baseline over k samples per example.

  With f_1..f_k the values of the k samples of one example,
  ĝ_i = (f_i - (1/(k-1)) Σ_{j≠i} f_j) (b_i - softmax(ℓ)) per variable; the
  baseline of sample i uses only the other, independent, samples, so each
  ĝ_i is unbiased.

  Args:
    logits: ℓ, broadcastable to u's shape; typically [..., K, C].
    f: see the module docstring.
    u: [k, ..., K, C] uniforms, the k >= 2 samples on the leading axis.
  Returns:
    A Result with estimate [k, ..., K, C] (one ĝ_i per sample),
    learning_signal [k, ...], n_evaluations 1.
  """
  u = sg(u)
  logits = _per_row_logits(logits, u)
  b = hard_sample(gumbel_sample(logits, u))
  f_values = f(b)
  learning_signal = center(sg(f_values))
  estimate = learning_signal[..., None, None] * _score(logits, b)
  return _result(estimate, logits, f_values, 1,
                 learning_signal=learning_signal)


def gumbel_softmax(logits, f, u, temperature):
  """The Gumbel-softmax / Concrete estimator (Jang et al. 2017, Maddison et
  al. 2017; RELAX paper appendix B, eq. 34): the gradient of f at the
  relaxed sample. Biased.

  ĝ = ∂f(softmax(z/λ))/∂ℓ, z = log_softmax(ℓ) - log(-log u).

  Args:
    logits, f, u: see the module docstring.
    temperature: λ > 0, a scalar.
  Returns:
    A Result; its surrogate is mean f(softmax(z/λ)) (f's own variables are
    trained at the relaxed sample); f_values are f(b); n_evaluations 2
    (the relaxed sample, and b for f_values only).
  """
  u = sg(u)
  logits = _per_row_logits(logits, u)
  with tf.GradientTape() as tape:
    tape.watch(logits)
    z = gumbel_sample(logits, u)
    relaxed_values = f(relaxed_sample(z, temperature))
    total = tf.reduce_sum(relaxed_values)
  estimate = tape.gradient(total, logits)
  f_values = f(hard_sample(z))
  return _result(estimate, logits, f_values, 2, objective=relaxed_values)


def straight_through(logits, f, u, temperature):
  """Straight-through Gumbel-softmax (Jang et al. 2017). Biased.

  f is evaluated at b, and b's derivative taken as that of the relaxed
  sample s = softmax(z/λ): f(b + s - sg(s)), so ĝ = (∂s/∂ℓ)ᵀ ∂f/∂b |_b.

  Args:
    logits, f, u: see the module docstring; f must be differentiable at
      one-hot b.
    temperature: λ > 0, a scalar.
  Returns:
    A Result; n_evaluations 1.
  """
  u = sg(u)
  logits = _per_row_logits(logits, u)
  with tf.GradientTape() as tape:
    tape.watch(logits)
    z = gumbel_sample(logits, u)
    relaxed = relaxed_sample(z, temperature)
    # b in value (relaxed - sg(relaxed) is exactly 0), s's gradient.
    f_values = f(hard_sample(z) + (relaxed - sg(relaxed)))
    total = tf.reduce_sum(f_values)
  estimate = tape.gradient(total, logits)
  return _result(estimate, logits, f_values, 1, objective=f_values)


def conditional_gumbel_sample(logits, b, v):
  """z~ ~ p(z | b, ℓ) from v ~ U(0, 1), differentiable in ℓ at fixed v
  (RELAX paper, appendix B).

  With θ = softmax(ℓ) and z = log θ + Gumbel, max_i z_i is standard Gumbel
  and independent of the argmax b, and given b and z_b each other z_i is
  Gumbel(log θ_i) truncated to (-∞, z_b). Inverting those CDFs:
    z~_b = -log(-log v_b),
    z~_i = -log(-log(v_i)/θ_i - log v_b)   (i ≠ b),
  so argmax z~ = b. Formed as -logaddexp(log(-log v_i) - log θ_i,
  log(-log v_b)) for stability. A z~_i rounds to z~_b (a tie, argmax then
  ambiguous) only where (-log(v_i)/θ_i)/(-log v_b) is below about the
  dtype's epsilon: rare in float32, not seen in float64.

  Args:
    logits: ℓ, [..., K, C]; b: the one-hot hard sample, [..., K, C]; v:
      [..., K, C] in (0, 1).
  Returns:
    z~, [..., K, C].
  """
  log_theta = tf.nn.log_softmax(logits, axis=-1)
  log_e = tf.math.log(-tf.math.log(v))
  log_e_b = tf.broadcast_to(
      tf.reduce_sum(b * log_e, axis=-1, keepdims=True), tf.shape(log_e))
  others = -tf.reduce_logsumexp(tf.stack([log_e - log_theta, log_e_b]),
                                axis=0)
  return tf.where(b > 0.5, -log_e_b, others)


def tied_conditional_noise(logits, u):
  """The v for which conditional_gumbel_sample gives z~ = z in value,
  stopped: with b the sample of u, v_b = u_b^{1/θ_b} and
  v_i = u_i u_b^{-θ_i/θ_b} (i ≠ b), the conditional CDFs of z's entries
  given b (so, given b, v is uniform and a valid v). Clipped into (0, 1) by
  the dtype's epsilon.

  Args:
    logits: ℓ, broadcastable to u's shape; u: [..., K, C].
  Returns:
    v, [..., K, C].
  """
  logits = _per_row_logits(logits, u)
  b = hard_sample(gumbel_sample(logits, u))
  theta = tf.nn.softmax(logits, axis=-1)
  log_u = tf.math.log(u)
  theta_b = tf.reduce_sum(b * theta, axis=-1, keepdims=True)
  log_u_b = tf.reduce_sum(b * log_u, axis=-1, keepdims=True)
  log_v = tf.where(b > 0.5, log_u_b / theta_b,
                   log_u - theta / theta_b * log_u_b)
  eps = float(np.finfo(u.dtype.as_numpy_dtype).eps)
  return sg(tf.clip_by_value(tf.exp(log_v), eps, 1.0 - eps))


def relax_estimate(logits, b, f_values, c_z_tilde, reparameterised, eta):
  """RELAX's ĝ from its parts (Grathwohl et al. 2018, eq. 8 with the
  discrete-b estimator of its section 3.3):
  ĝ = [f(b) - η c(z~)] (b - softmax(ℓ)) + η (∂c(z)/∂ℓ - ∂c(z~)/∂ℓ).

  Args:
    logits: ℓ, [..., K, C]; b: the one-hot hard sample, [..., K, C].
    f_values: f(b), [...] (stopped here).
    c_z_tilde: c(z~), [...], differentiable in the control variate's
      parameters.
    reparameterised: ∂c(z)/∂ℓ - ∂c(z~)/∂ℓ, [..., K, C].
    eta: η, a scalar.
  Returns:
    (ĝ [..., K, C], learning_signal f(b) - η c(z~) [...]).
  """
  learning_signal = sg(f_values) - eta * c_z_tilde
  estimate = (learning_signal[..., None, None] * _score(logits, b)
              + eta * reparameterised)
  return estimate, learning_signal


def _relax(logits, f, u, v, control_variate, eta, n_evaluations):
  u, v = sg(u), sg(v)
  logits = _per_row_logits(logits, u)
  b, c_z_tilde, reparameterised = bernoulli.relax_parts(
      logits, control_variate, lambda l: gumbel_sample(l, u),
      lambda l, z: hard_sample(z),
      lambda l, b: conditional_gumbel_sample(l, b, v))
  f_values = f(b)
  estimate, learning_signal = relax_estimate(logits, b, f_values, c_z_tilde,
                                             reparameterised, eta)
  return _result(estimate, logits, f_values, n_evaluations,
                 learning_signal=learning_signal)


def relax(logits, f, u, v, control_variate, eta=1.0):
  """RELAX for categorical variables (Grathwohl et al. 2018, section 3.3 and
  appendix B).

  With z = log_softmax(ℓ) - log(-log u), b = one_hot(argmax z),
  z~ = conditional_gumbel_sample(ℓ, b, v) and a control variate c
  (differentiable in z):
    ĝ = [f(b) - η c(z~)] (b - softmax(ℓ)) + η ∂c(z)/∂ℓ - η ∂c(z~)/∂ℓ,
  both derivatives total (through z and z~) at fixed u, v. Unbiased for any
  c and η: E[c(z~) ∂log p(b)/∂ℓ + ∂c(z~)/∂ℓ] = ∂E_b[E_{z|b}[c(z)]]/∂ℓ =
  E[∂c(z)/∂ℓ].

  Args:
    logits, f, u, v: see the module docstring.
    control_variate: c_φ, a callable [..., K, C] -> [...], row-wise, on
      the Gumbel sample z; it may close over its parameters φ.
    eta: η, a scalar scale of c.
  Returns:
    A Result; learning_signal = f(b) - η c(z~), differentiable in η and φ;
    n_evaluations 1 (c's two calls are not counted).
  """
  return _relax(logits, f, u, v, control_variate, eta, 1)


def rebar(logits, f, u, v, eta, temperature):
  """REBAR (Tucker et al. 2017) for categorical variables: RELAX with
  c(z) = f(softmax(z/λ)).

  ĝ = [f(b) - η f(σ_λ(z~))] (b - θ) + η ∂f(σ_λ(z))/∂ℓ - η ∂f(σ_λ(z~))/∂ℓ,
  σ_λ(z) = softmax(z/λ). Unbiased for every η and λ, which
  variance_objective can train (λ e.g. as exp of a trained log λ).

  Args:
    logits, f, u, v: see the module docstring.
    eta: η, a scalar.
    temperature: λ > 0, a scalar.
  Returns:
    A Result; learning_signal = f(b) - η f(σ_λ(z~)); n_evaluations 3.
  """
  return _relax(logits, f, u, v,
                lambda z: f(relaxed_sample(z, temperature)), eta, 3)


# ARS and ARSM (Yin, Yue and Zhou 2019).
#
# Augment: E_kc = -log u_kc are Exp(1) and π_k = E_k / Σ_c E_kc is
# Dirichlet(1_C), independent over k. z_k = argmin_c π_kc e^{-ℓ_kc} =
# argmax_c (ℓ_kc - log E_kc) is the Gumbel-max sample b of u. REINFORCE on
# the Exp(e^{ℓ_kc}) variables E_kc e^{-ℓ_kc}, Rao-Blackwellised over the sum
# Σ_c E_kc (Gamma(C), independent of π), gives
#   ∂E[f]/∂ℓ_kc = E_Π[f(z(Π)) (1 - C π_kc)].
# Swap: Π^{c⇌j}, the Dirichlet draws with entries c and j exchanged in every
# variable k at once, has Π's distribution, so with the pseudo-action
# z^{c⇌j} = z(Π^{c⇌j}) (a K-vector), ∂E[f]/∂ℓ_kc = E[f(z^{c⇌j}) (1 - C π_kj)]
# for any reference j; subtracting f̄^j = (1/C) Σ_m f(z^{m⇌j}), the same for
# every c, keeps it unbiased (the estimates then sum to 0 over c, as the true
# gradient does, which forces E[f̄^j (1 - C π_kj)] = 0). Merge: the mean over
# the C references.


def dirichlet_weights(u):
  """π = E / Σ_C E with E = -log u: Dirichlet(1_C) per variable, [..., K, C]
  (ARSM's augmenting variables, from the caller's uniforms)."""
  exponentials = -tf.math.log(u)
  return exponentials / tf.reduce_sum(exponentials, axis=-1, keepdims=True)


def _swap_permutations(num_categories, pairs):
  """[A, C] int32: row a is the identity with entries m_a and j_a
  exchanged."""
  permutations = np.tile(np.arange(num_categories), (len(pairs), 1))
  for a, (m, j) in enumerate(pairs):
    permutations[a, m], permutations[a, j] = j, m
  return permutations.astype(np.int32)


def _swapped_actions(logits, u, pairs):
  """z^{m⇌j} for the (m, j) in `pairs`: int32 [..., A, K], category indices.

  z^{m⇌j}_k = argmin_i π^{m⇌j}_ki e^{-ℓ_ki} = argmin_i
  (log E_k,σ(i) - log θ_ki), σ the transposition of m and j (the
  normaliser Σ E_k does not move the argmin)."""
  log_exponentials = tf.math.log(-tf.math.log(u))
  permuted = tf.gather(log_exponentials,
                       _swap_permutations(_num_categories(u), pairs),
                       axis=-1)                          # [..., K, A, C]
  key = permuted - tf.nn.log_softmax(logits, axis=-1)[..., None, :]
  # Transposed as floats: oneDNN's int32 transpose logs an error line on
  # CPUs without AVX-512.
  return tf.argmin(tf.einsum('...kac->...akc', key), axis=-1,
                   output_type=tf.int32)


def pseudo_actions(logits, u, reference=None):
  """ARSM's pseudo-actions z^{m⇌j} (Yin, Yue and Zhou 2019, section 2.2 for
  one variable; their multivariate form swaps m and j in every variable's
  π at once), as category indices.

  Args:
    logits: ℓ, broadcastable to u's shape; u: [..., K, C].
    reference: None for every (m, j), or a reference category j.
  Returns:
    int32 [..., C, C, K] (entry [m, j] = z^{m⇌j}), or [..., C, K] (entry m
    = z^{m⇌reference}); z^{j⇌j} = b.
  """
  u = sg(u)
  logits = _per_row_logits(logits, u)
  num_categories = _num_categories(u)
  if reference is not None:
    return _swapped_actions(
        logits, u, [(m, reference) for m in range(num_categories)])
  actions = _swapped_actions(logits, u, [(m, j) for m in range(num_categories)
                                         for j in range(num_categories)])
  return tf.reshape(actions, tf.concat(
      [tf.shape(actions)[:-2], [num_categories, num_categories, -1]], 0))


def evaluate_distinct(f_at, actions, num_categories, dtype):
  """f at every (row, pseudo-action), each distinct pair evaluated once.

  Args:
    f_at: see the module docstring.
    actions: int32 [..., A, K], A candidate actions per row of `...`.
    num_categories: C.
    dtype: the float dtype of the one-hot b passed to f_at.
  Returns:
    ([..., A] f at every candidate, differentiable in f_at's variables; the
    mean number of distinct evaluations per row, a scalar tensor of dtype).
    Rows are the flattened indices of `...`, in row-major order.
  """
  shape = tf.shape(actions)
  num_rows = tf.reduce_prod(shape[:-2])
  flat = tf.reshape(actions, [num_rows, shape[-2], shape[-1]])
  rows = tf.broadcast_to(tf.range(num_rows)[:, None, None],
                         [num_rows, shape[-2], 1])
  # One integer vector (row, z_1..z_K) per pair: exact for every K and C.
  keys = tf.reshape(tf.concat([rows, flat], axis=-1), [-1, shape[-1] + 1])
  distinct, index = tf.raw_ops.UniqueV2(x=keys, axis=[0])
  values = f_at(distinct[:, 0],
                tf.one_hot(distinct[:, 1:], num_categories, dtype=dtype))
  n_evaluations = (tf.cast(tf.shape(distinct)[0], dtype)
                   / tf.cast(num_rows, dtype))
  return tf.reshape(tf.gather(values, index), shape[:-1]), n_evaluations


def arsm_estimate(u, f_swapped):
  """ARSM's ĝ from its parts (Yin, Yue and Zhou 2019, the ARSM estimator,
  eq. 11, in its multivariate form):

    ĝ_kc = Σ_j [f(z^{c⇌j}) - (1/C) Σ_m f(z^{m⇌j})] (1/C - π_kj).

  Args:
    u: [..., K, C], the noise (π = dirichlet_weights(u)).
    f_swapped: [..., C, C], entry [m, j] = f(z^{m⇌j}) (stopped here).
  Returns:
    ĝ, [..., K, C].
  """
  pi = dirichlet_weights(sg(u))
  f_swapped = sg(f_swapped)
  centred = f_swapped - tf.reduce_mean(f_swapped, axis=-2, keepdims=True)
  weight = 1.0 / _num_categories(u) - pi
  return tf.einsum('...cj,...kj->...kc', centred, weight)


def ars_estimate(u, f_swapped, reference):
  """ARS's ĝ from its parts (Yin, Yue and Zhou 2019, the ARS estimator with
  reference category j, multivariate form):

    ĝ_kc = [f(z^{c⇌j}) - (1/C) Σ_m f(z^{m⇌j})] (1 - C π_kj).

  Args:
    u: [..., K, C], the noise (π = dirichlet_weights(u)).
    f_swapped: [..., C], entry m = f(z^{m⇌j}) (stopped here).
    reference: j, a Python int.
  Returns:
    ĝ, [..., K, C].
  """
  pi_reference = dirichlet_weights(sg(u))[..., reference]
  f_swapped = sg(f_swapped)
  centred = f_swapped - tf.reduce_mean(f_swapped, axis=-1, keepdims=True)
  return (centred[..., None, :]
          * (1.0 - _num_categories(u) * pi_reference)[..., :, None])


def ars(logits, f_at, u, reference=0):
  """ARS, augment-REINFORCE-swap (Yin, Yue and Zhou 2019), with a fixed
  reference category j: ĝ = ars_estimate (the comment above it derives it;
  unbiased for any fixed j, checked by exact enumeration).

  Evaluates f at the C pseudo-actions z^{m⇌j} (m = 1..C; z^{j⇌j} = b), each
  distinct one once (evaluate_distinct). Needs tf.function without
  jit_compile (module docstring).

  Args:
    logits, f_at, u: see the module docstring; u is [..., K, C].
    reference: j, a Python int in [0, C).
  Returns:
    A Result; f_values = f(b) [...], which the surrogate's value is the mean
    of (f's variables are trained at b); learning_signal None;
    n_evaluations the mean number of distinct pseudo-actions per row (b
    included), between 1 and C.
  """
  u = sg(u)
  logits = _per_row_logits(logits, u)
  num_categories = _num_categories(u)
  actions = _swapped_actions(
      logits, u, [(m, reference) for m in range(num_categories)])
  f_swapped, n_evaluations = evaluate_distinct(f_at, actions, num_categories,
                                               u.dtype)
  estimate = ars_estimate(u, f_swapped, reference)
  return _result(estimate, logits, f_swapped[..., reference], n_evaluations)


def arsm(logits, f_at, u):
  """ARSM, augment-REINFORCE-swap-merge (Yin, Yue and Zhou 2019; the
  multivariate ARSM estimator): ĝ = arsm_estimate, the mean of ARS over the
  C references (the comment above dirichlet_weights derives it; unbiased,
  checked by exact enumeration).

  z^{m⇌j} = z^{j⇌m} and z^{j⇌j} = b, so there are at most 1 + C(C-1)/2
  different pseudo-actions per row; only those are formed, and each
  distinct one is evaluated once (evaluate_distinct). Needs tf.function
  without jit_compile (module docstring).

  Args:
    logits, f_at, u: see the module docstring; u is [..., K, C].
  Returns:
    A Result; f_values = f(b) [...], which the surrogate's value is the mean
    of (f's variables are trained at b); learning_signal None;
    n_evaluations the mean number of distinct pseudo-actions per row (b
    included), between 1 and 1 + C(C-1)/2.
  """
  u = sg(u)
  logits = _per_row_logits(logits, u)
  num_categories = _num_categories(u)
  pairs = [(0, 0)] + [(m, j) for m in range(num_categories)
                      for j in range(m + 1, num_categories)]
  slot = np.zeros([num_categories, num_categories], np.int32)
  for a, (m, j) in enumerate(pairs):
    slot[m, j] = slot[j, m] = a
  actions = _swapped_actions(logits, u, pairs)
  f_slots, n_evaluations = evaluate_distinct(f_at, actions, num_categories,
                                             u.dtype)
  f_swapped = tf.gather(f_slots, slot, axis=-1)          # [..., C, C]
  estimate = arsm_estimate(u, f_swapped)
  return _result(estimate, logits, f_slots[..., 0], n_evaluations)


def stick_breaking_logits(logits):
  """α_i = log θ_i - log Σ_{j>i} θ_j, i < C - 1, [..., K, C-1]: z = i with
  probability σ(α_i) given z >= i, so that b_i ~ Bernoulli(σ(α_i)) and
  z = min{i: b_i = 1} (C - 1 if none) is Cat(θ)."""
  log_theta = tf.nn.log_softmax(logits, axis=-1)
  num_categories = log_theta.shape[-1]
  later = np.where(np.arange(num_categories)[None, :]
                   > np.arange(num_categories - 1)[:, None], 0.0, -np.inf)
  rest = tf.reduce_logsumexp(
      log_theta[..., None, :] + tf.constant(later, log_theta.dtype), axis=-1)
  return log_theta[..., :-1] - rest


def _first_one(binaries):
  """min{i: b_i = 1}, or the number of binaries if none: int32 [...]."""
  return tf.cast(tf.reduce_sum(tf.math.cumprod(1.0 - binaries, axis=-1),
                               axis=-1), tf.int32)


def stick_breaking_disarm(logits, f, u):
  """A coupled estimator in the manner of Dong, Mnih and Tucker 2021: DisARM
  (Dong, Mnih and Tucker 2020) on the stick-breaking binaries, averaged
  over the binaries that do not affect the pair of samples.

  Per variable, with α = stick_breaking_logits(ℓ) and σ_i = σ(α_i), the
  antithetic binaries b_i = 1[u_i < σ_i] and b~_i = 1[u_i > 1 - σ_i]
  (u_i = u[..., i], i < C - 1) give two Cat(θ) samples n = first one of b,
  m = first one of b~ (C - 1 if none). Multivariate DisARM on all K(C - 1)
  binaries, ĝ_α,i = (f(b) - f(b~)) (b_i - 1/2) 1[b_i ≠ b~_i] σ(|α_i|), is
  unbiased for ∂E[f]/∂α; its mean given (n, m) (the pairs beyond the
  stopping points being independent of them) is derived here as
    ĝ_α = 1/2 (f(b) - f(b~)) s w,  s = sign(m - n), lo = min(n, m),
    hi = max(n, m), w_lo = σ(|α_lo|), w_i = σ_i (lo < i < hi),
    w_hi = -(1 - σ_hi) (if hi < C - 1), 0 elsewhere,
  i.e. s (∇_α log q(lo) - ∇_α log q(hi)) with the entry at lo scaled by
  σ(|α_lo|). ĝ = (∂α/∂ℓ)ᵀ ĝ_α by an inner tape. b and b~ here are the
  one-hot samples n and m; u[..., C-1] is unused.

  Args:
    logits, f, u: see the module docstring; u is [..., K, C].
  Returns:
    A Result; f_values = f(b); learning_signal f(b) - f(b~); the surrogate's
    value is the mean pair mean (f(b) + f(b~))/2; n_evaluations 2.
  """
  u = sg(u)
  logits = _per_row_logits(logits, u)
  num_categories = _num_categories(u)
  with tf.GradientTape() as tape:
    tape.watch(logits)
    alpha = stick_breaking_logits(logits)
  sigma = sg(tf.sigmoid(alpha))
  u_sticks = u[..., :-1]
  first = _first_one(tf.cast(u_sticks < sigma, u.dtype))
  second = _first_one(tf.cast(u_sticks > 1.0 - sigma, u.dtype))
  b = tf.one_hot(first, num_categories, dtype=u.dtype)
  b_tilde = tf.one_hot(second, num_categories, dtype=u.dtype)
  f_values, f_tilde = f(b), f(b_tilde)
  index = tf.range(num_categories - 1)
  lo = tf.minimum(first, second)[..., None]
  hi = tf.maximum(first, second)[..., None]
  zero = tf.zeros_like(sigma)
  weight = (tf.where(tf.equal(index, lo), sg(tf.sigmoid(tf.abs(alpha))), zero)
            + tf.where((index > lo) & (index < hi), sigma, zero)
            - tf.where(tf.equal(index, hi), 1.0 - sigma, zero))
  sign = tf.cast(tf.sign(second - first), u.dtype)[..., None]
  learning_signal = sg(f_values) - sg(f_tilde)
  estimate_alpha = 0.5 * learning_signal[..., None, None] * sign * weight
  estimate = tape.gradient(alpha, logits, output_gradients=estimate_alpha)
  return _result(estimate, logits, f_values, 2,
                 learning_signal=learning_signal,
                 values=0.5 * (f_values + f_tilde))
