"""The sigmoid belief network: networks, noise and samplers (reference 3-4).

Shapes: `B` rows in a step, `H` = n_hidden, `L` = n_layer, `D` = n_input.
A *pass* runs the recognition network q layer by layer (each layer's input
depends on the previous layer's activation under that pass's sampler) and then
the generative network p on the activations. Every pass of a step uses the
same uniform noise `u_i ~ U(0,1)^{B x H}` per layer.
"""

import collections

import numpy as np
import tensorflow as tf

from rebar.networks import DeterministicMap
from rebar.optim import row_sum

# Result of one pass. Lists are indexed by stochastic layer i = 0..L-1.
#   logits:      ℓ_i, [B, H]
#   activations: a_i, [B, H] (b, μ, or a relaxed sample)
#   log_q:       log q_i(a_i | input_i), [B]
#   model_term:  m, every term of f but the q terms, [B]
#   elbo:        f, [B]
Pass = collections.namedtuple('Pass', 'logits activations log_q model_term elbo')


def safe_log(t):
  return tf.math.log(tf.clip_by_value(t, 1e-8, 1.0))


def bernoulli_log_prob(a, logits):
  """Σ_units a log σ(ℓ) + (1 - a) log(1 - σ(ℓ)); [B, n] -> [B].

  Written as Σ a ℓ - softplus(ℓ) (log σ(ℓ) = ℓ - softplus(ℓ)): the same value,
  stable, with one transcendental per unit instead of two. Also used for
  relaxed activations a in (0, 1), as the original does.
  """
  return tf.reduce_sum(a * logits - tf.nn.softplus(logits), axis=-1)


def bernoulli_log_prob_no_grad(a, logits):
  """bernoulli_log_prob's value, computed faster, for evaluation only.

  softplus(ℓ) = max(ℓ, 0) + log(1 + e^{-|ℓ|}): log instead of log1p (the
  difference, below 6e-8 per unit, is under float32 rounding of the sum),
  and the sum over units by row_sum. Together 1.5x faster on 100-sample
  evaluation (docs/performance.md). Its gradient at ℓ = 0 is wrong (0, not 1/2):
  never differentiate it.
  """
  softplus = tf.nn.relu(logits) + tf.math.log(1.0 + tf.exp(-tf.abs(logits)))
  terms = a * logits - softplus
  return row_sum(terms)


def logistic_sample(logits, u):
  """z = ℓ + log u - log(1 - u): the logistic sample behind b = 1[z > 0]."""
  return logits + safe_log(u) - safe_log(1.0 - u)


def hard_sample(logits, u):
  """b = sg(1[z > 0]) with z = ℓ + log u - log(1 - u).

  Computed as 1[u > σ(-ℓ)], the same event (z is increasing in u and is 0 at
  u = σ(-ℓ)) with one sigmoid per unit instead of two logarithms.
  """
  return tf.stop_gradient(tf.cast(u > tf.sigmoid(-logits), tf.float32))


def relaxed_sample(logits, u, temperature, muprop_relaxation):
  """Relaxed sample σ(z/λ + ℓ·λ/(λ+1)) (REBAR paper 4.3) or σ(z/λ) (Concrete).

  `temperature` is a scalar or [B, 1] (one value per row).
  """
  z = logistic_sample(logits, u) / temperature
  if muprop_relaxation:
    z += logits * temperature / (temperature + 1.0)
  return tf.sigmoid(z)


def relaxed_sample_tangent(activation, logits, d_logits, u, temperature,
                           muprop_relaxation):
  """∂a/∂t of a = relaxed_sample(logits, u, λ, ...) with t = log λ.

  With s = λ/(λ+1): z = (ℓ + L(u))/λ [+ ℓ s], so (dλ/dt = λ, ds/dt = s/(λ+1))
  dz/dt = (dℓ/dt - (ℓ + L(u)))/λ [+ s dℓ/dt + ℓ s/(λ+1)], da/dt = a(1-a) dz/dt.

  Args:
    activation: a, [B, H]; logits: ℓ, [B, H]; d_logits: ∂ℓ/∂t, [B, H], or
      None where ℓ does not depend on t.
  """
  d_z = -logistic_sample(logits, u)
  if d_logits is not None:
    d_z += d_logits
  d_z /= temperature
  if muprop_relaxation:
    s = temperature / (temperature + 1.0)
    d_z += logits * s / (temperature + 1.0)
    if d_logits is not None:
      d_z += d_logits * s
  return activation * (1.0 - activation) * d_z


def bernoulli_log_prob_tangent(a, d_a, logits, d_logits):
  """∂/∂t of bernoulli_log_prob(a, ℓ): Σ_units ȧ ℓ + (a - σ(ℓ)) ℓ̇; [B].
  d_a / d_logits may be None (zero)."""
  terms = []
  if d_a is not None:
    terms.append(d_a * logits)
  if d_logits is not None:
    terms.append((a - tf.sigmoid(logits)) * d_logits)
  return tf.reduce_sum(tf.add_n(terms), axis=-1)


def conditional_noise(logits, u):
  """Noise `v` equal to u in value whose gradient w.r.t. ℓ is that of z | b.

  With u' = σ(-ℓ) (so b = 1 iff u > u'), v rescales u into the part of (0, 1)
  that is consistent with b, written as a function of ℓ; u + (v - sg(v))
  has u's value and v's gradient (reference section 4).
  """
  u_prime = tf.sigmoid(-logits)
  v_one = (tf.stop_gradient(tf.clip_by_value(
      (u - u_prime) / tf.clip_by_value(1.0 - u_prime, 1e-8, 1.0), 0.0, 1.0))
           * (1.0 - u_prime) + u_prime)
  v_zero = tf.stop_gradient(tf.clip_by_value(
      u / tf.clip_by_value(u_prime, 1e-8, 1.0), 0.0, 1.0)) * u_prime
  v = tf.where(u > u_prime, v_one, v_zero)
  # The original's v + sg(u - v), arranged so that the value is u exactly
  # (v - v is exactly 0; u - v then + v may differ from u in the last bit).
  # Passes with v and with u then agree bit for bit, which keeps the etas of
  # generative variables at exactly 1 (reference 6.6).
  return u + (v - tf.stop_gradient(v))


def center(f):
  """Leave-one-out centering along the leading axis: f_r minus the mean of
  the other entries, f_r - (Σ_s f_s - f_r) / (K - 1); [K, ...] -> [K, ...]
  (the batch's rows for REINFORCE, an example's samples for REINFORCE
  LOO)."""
  n = tf.cast(tf.shape(f)[0], f.dtype)
  return f - (tf.reduce_sum(f, axis=0) - f) / (n - 1.0)


# Samplers: functions (layer, logits) -> activation, built per pass.
def hard_sampler(noise):
  return lambda i, logits: hard_sample(logits, noise[i])


def mean_sampler():
  return lambda i, logits: tf.sigmoid(logits)


def antithetic_sampler(noise, layer):
  """The hard sampler, except at `layer`, where it draws the antithetic
  partner 1[u < σ(ℓ)] of the hard sample 1[u > σ(-ℓ)] (ARM, DisARM)."""
  def sample(i, logits):
    if i == layer:
      return tf.stop_gradient(
          tf.cast(noise[i] < tf.sigmoid(logits), tf.float32))
    return hard_sample(logits, noise[i])
  return sample


def relaxed_sampler(noise, temperature, muprop_relaxation):
  return lambda i, logits: relaxed_sample(logits, noise[i], temperature,
                                          muprop_relaxation)


class SBNNetwork(tf.Module):
  """Recognition network q and generative network p of reference section 3.

  Args:
    hparams: HParams (n_hidden, n_input, n_layer, nonlinear, task,
      muprop_relaxation, sp_multilayer are read).
    mean_xs: [D] per-pixel mean of the training rows.
    generator: tf.random.Generator for the initial weights.
  Attributes:
    variables_in_order: model variables in creation order (prior, q_0..,
      p_{L-1}..p_0; each W then b; tanh layers first).
    q_variables / p_variables: the recognition / generative part.
  """

  def __init__(self, hparams, mean_xs, generator):
    super().__init__(name='sbn')
    self.hparams = hparams
    n_hidden, n_layer = hparams.n_hidden, hparams.n_layer
    n_input = hparams.n_input
    self.conditional = hparams.task == 'sp'
    mean_xs = np.asarray(mean_xs, np.float32)
    self.mean_xs = tf.constant(mean_xs)
    train_bias = -np.log(1.0 / np.clip(mean_xs, 0.001, 0.999) - 1.0)
    if self.conditional:
      half = n_input // 2
      self.q_mean = tf.constant(mean_xs[:half])
      self.train_bias = tf.constant(train_bias[half:].astype(np.float32))
      n_q_in, n_out = half, n_input - half
    else:
      self.q_mean = tf.constant(mean_xs)
      self.train_bias = tf.constant(train_bias.astype(np.float32))
      n_q_in, n_out = n_input, n_input
    # The original's `sp` generator has one stochastic layer (its errata).
    self.multilayer_p = not self.conditional or hparams.sp_multilayer

    make = lambda n_in, n_o, name: DeterministicMap(  # noqa: E731
        n_in, n_o, n_hidden, hparams.nonlinear, generator, name)
    self.prior = None
    if self.multilayer_p:
      self.prior = tf.Variable(tf.zeros([n_hidden]), name='prior')
    self.q_layers = [make(n_q_in if i == 0 else n_hidden, n_hidden, 'q_%d' % i)
                     for i in range(n_layer)]
    # p_layers[i] maps a_i to the logits of a_{i-1} (or of x for i = 0);
    # created top-down. The single-layer `sp` generator has only the top one.
    self.p_layers = [None] * n_layer
    for i in reversed(range(n_layer)):
      if self.multilayer_p or i == n_layer - 1:
        self.p_layers[i] = make(n_hidden, n_hidden if i > 0 and self.multilayer_p
                                else n_out, 'p_%d' % i)
    self.q_variables = [v for layer in self.q_layers
                        for v in layer.variables_in_order]
    self.p_variables = ([self.prior] if self.prior is not None else []) + [
        v for layer in reversed(self.p_layers) if layer is not None
        for v in layer.variables_in_order]
    self.variables_in_order = (
        ([self.prior] if self.prior is not None else []) + self.q_variables
        + self.p_variables[1 if self.prior is not None else 0:])

  @property
  def n_layer(self):
    return self.hparams.n_layer

  def split(self, x):
    """Returns (q's input x - mean_xs, the pixels p models)."""
    if self.conditional:
      half = self.hparams.n_input // 2
      return x[:, :half] - self.q_mean, x[:, half:]
    return x - self.q_mean, x

  def sample_noise(self, generator, n_rows):
    """One uniform tensor [B, H] per stochastic layer."""
    return [generator.uniform([n_rows, self.hparams.n_hidden])
            for _ in range(self.n_layer)]

  def recognition(self, x, sampler, start=None, start_layer=0,
                  log_prob=bernoulli_log_prob):
    """Runs q from `start_layer` with `sampler` (hard below it, from `start`).

    Args:
      x: [B, D] data.
      sampler: function (layer i, logits [B, H]) -> activation [B, H].
      start: a Pass whose layers below `start_layer` (and the logits of
        `start_layer` itself, whose input is the same) are reused. This is the
        switch sampler: the hard pass below layer k, `sampler` from k on.
      start_layer: first layer computed with `sampler`.
      log_prob: bernoulli_log_prob, or bernoulli_log_prob_no_grad where
        nothing is differentiated.
    Returns:
      (logits, activations, log_q) lists over layers.
    """
    if start_layer > 0:
      logits = list(start.logits[:start_layer + 1])
      activations = list(start.activations[:start_layer])
      log_q = list(start.log_q[:start_layer])
    else:
      logits, activations, log_q = [], [], []
    q_input = self.split(x)[0]
    for i in range(start_layer, self.n_layer):
      if i >= len(logits):
        layer_input = q_input if i == 0 else 2.0 * activations[i - 1] - 1.0
        logits.append(self.q_layers[i](layer_input))
      activations.append(sampler(i, logits[i]))
      log_q.append(log_prob(activations[i], logits[i]))
    return logits, activations, log_q

  def model_term(self, x, activations, log_prob=bernoulli_log_prob):
    """m: log p(x | a_0) + Σ log p(a_{i-1} | a_i) + log p(a_{L-1}); [B].

    For `sp` with the original's single-layer generator:
    m = log p(x_bottom | a_{L-1}).
    """
    target = self.split(x)[1]
    top = self.n_layer - 1
    if not self.multilayer_p:
      logits = self.p_layers[top](2.0 * activations[top] - 1.0)
      return log_prob(target, logits + self.train_bias)
    log_p = log_prob(activations[top], self.prior)
    for i in reversed(range(self.n_layer)):
      logits = self.p_layers[i](2.0 * activations[i] - 1.0)
      if i == 0:
        log_p += log_prob(target, logits + self.train_bias)
      else:
        log_p += log_prob(activations[i - 1], logits)
    return log_p

  def run_pass(self, x, sampler, start=None, start_layer=0,
               log_prob=bernoulli_log_prob):
    """A full pass (recognition then generative); returns a Pass.

    f = m - Σ_i log q_i, except for `sp` with the single-layer generator,
    where f = m = log p(x_bottom | a_{L-1}) (reference section 3).
    """
    logits, activations, log_q = self.recognition(
        x, sampler, start, start_layer, log_prob)
    m = self.model_term(x, activations, log_prob)
    f = m if not self.multilayer_p else m - tf.add_n(log_q)
    return Pass(logits, activations, log_q, m, f)

  def temperature_tangent(self, x, relaxed, noise, temperature,
                          muprop_relaxation, start_layer=0):
    """∂f/∂t per row of a relaxed pass, t = log λ, by forward mode.

    Each row's f depends on λ through that row's relaxed activations only,
    so one forward pass of tangents gives every row's derivative (reverse
    mode would need a backward pass, and its θ-gradient a reverse pass over
    that). The tangent ops are recorded like any others: their θ-gradient
    is ∂(∂f/∂θ)/∂t, which Dynamic REBAR needs (reference 6.7).

    Args:
      x: [B, D] rows.
      relaxed: the Pass of run_pass(x, relaxed_sampler(noise, temperature,
        muprop_relaxation), start=..., start_layer=start_layer).
      noise, temperature, muprop_relaxation, start_layer: as for that pass.
    Returns:
      ∂f/∂t, [B].
    """
    activations = relaxed.activations
    d_activations = [None] * start_layer
    d_log_q = []
    for i in range(start_layer, self.n_layer):
      d_logits = None
      if i > start_layer:
        _, d_logits = self.q_layers[i].jvp(2.0 * activations[i - 1] - 1.0,
                                           2.0 * d_activations[i - 1])
      d_activations.append(relaxed_sample_tangent(
          activations[i], relaxed.logits[i], d_logits, noise[i], temperature,
          muprop_relaxation))
      d_log_q.append(bernoulli_log_prob_tangent(
          activations[i], d_activations[i], relaxed.logits[i], d_logits))
    target = self.split(x)[1]
    top = self.n_layer - 1
    d_m = []
    if self.multilayer_p:
      d_m.append(bernoulli_log_prob_tangent(
          activations[top], d_activations[top], self.prior, None))
    for i in reversed(range(start_layer, self.n_layer)):
      if self.p_layers[i] is None:
        continue
      logits, d_logits = self.p_layers[i].jvp(2.0 * activations[i] - 1.0,
                                              2.0 * d_activations[i])
      if i == 0 or not self.multilayer_p:
        d_m.append(bernoulli_log_prob_tangent(
            target, None, logits + self.train_bias, d_logits))
      else:
        d_m.append(bernoulli_log_prob_tangent(
            activations[i - 1], d_activations[i - 1], logits, d_logits))
    d_f = tf.add_n(d_m)
    if self.multilayer_p:
      d_f -= tf.add_n(d_log_q)
    return d_f

  def hard_pass(self, x, noise):
    return self.run_pass(x, hard_sampler(noise))

  def hard_pass_of_copies(self, x, noise, n_copies):
    """The hard pass of `n_copies` copies of each image, without gradients.

    Layer 0's logits, its threshold σ(-ℓ) and Σ softplus(ℓ) depend on the
    image only, so they are computed once per image and broadcast over the
    copies (XLA would otherwise recompute them per row).

    Args:
      x: [n, D] images.
      noise: per layer [n_copies * n, H] uniforms, rows copy-major.
      n_copies: K.
    Returns:
      A Pass over the K * n rows (copy-major), but with layer 0's logits
      [n, H] per image.
    """
    n = tf.shape(x)[0]
    logits = self.q_layers[0](self.split(x)[0])
    u = tf.reshape(noise[0], [n_copies, n, -1])
    b = hard_sample(logits, u)
    log_q = bernoulli_log_prob_no_grad(b, logits)
    layer_0 = Pass([logits], [tf.reshape(b, tf.shape(noise[0]))],
                   [tf.reshape(log_q, [-1])], None, None)
    return self.run_pass(tf.tile(x, [n_copies, 1]), hard_sampler(noise),
                         start=layer_0, start_layer=1,
                         log_prob=bernoulli_log_prob_no_grad)

  def mean_pass(self, x):
    return self.run_pass(x, mean_sampler())
