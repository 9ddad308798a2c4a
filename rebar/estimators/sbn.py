"""Gradient estimators as surrogate losses (reference section 6).

Each function takes what a step computed (passes, baselines, etas) and returns
surrogate losses: the gradient of a surrogate with respect to the model
variables is the estimator, and the auxiliary losses train baselines and
etas. Notation: f the hard pass's ELBO [B], Q = Σ_i log q_i [B], m the model
term [B] (carries the exact gradient of the generative network), f~ / f~_v the
ELBO of the relaxed / relaxed-conditional pass.
"""

import tensorflow as tf

from rebar.estimators import bernoulli
from rebar.optim import total_sum
from rebar.sbn import center

sg = tf.stop_gradient


def reinforce(hard):
  """REINFORCE with leave-one-out centering (reference 6.1).

  Returns:
    (loss, rms_learning_signal): loss = -mean(sg(center(f)) · Q + m).
  """
  learning_signal = sg(center(hard.elbo))
  loss = -tf.reduce_mean(learning_signal * tf.add_n(hard.log_q)
                         + hard.model_term)
  return loss, tf.sqrt(tf.reduce_mean(tf.square(learning_signal)))


def reinforce_loo(hard, n_samples):
  """REINFORCE with a per-example leave-one-out baseline (Kool et al. 2019):
  the k = n_samples samples of an example (rows s·B + b, s < k, as
  SBNModel.sample_step_inputs lays them out) each take the mean f of the
  other k - 1 as their baseline.

  Returns:
    loss = -mean(sg(f - baseline) · Q + m).
  """
  learning_signal = sg(tf.reshape(
      center(tf.reshape(hard.elbo, [n_samples, -1])), [-1]))
  return -tf.reduce_mean(learning_signal * tf.add_n(hard.log_q)
                         + hard.model_term)


def nvil(hard, baseline):
  """NVIL: an input-dependent baseline c(x) (reference 6.2).

  Args:
    hard: the hard Pass.
    baseline: c(x), [B].
  Returns:
    (loss, baseline_loss): loss = -mean(sg(s) · Q + m) with s = sg(f) - c(x);
    baseline_loss = mean(s²).
  """
  s = sg(hard.elbo) - baseline
  loss = -tf.reduce_mean(sg(s) * tf.add_n(hard.log_q) + hard.model_term)
  return loss, tf.reduce_mean(tf.square(s))


def simple_muprop(hard, mean_elbo, eta, baseline):
  """MuProp's first-order baseline without its correction (reference 6.3).

  Args:
    mean_elbo: f_μ, the ELBO of the mean pass, [B].
    eta: scalar η scale of f_μ.
    baseline: c(x), [B].
  Returns:
    (loss, baseline_loss) with s = f - η f_μ - c(x).
  """
  s = hard.elbo - eta * mean_elbo - baseline
  loss = -tf.reduce_mean(sg(s) * tf.add_n(hard.log_q) + hard.model_term)
  return loss, tf.reduce_mean(tf.square(s))


def muprop(hard, mean, mean_grads, etas0, etas1, baselines):
  """MuProp (reference 6.4): per layer, a Taylor-expansion control variate
  around the mean pass, with its analytic expectation added back.

  Args:
    hard: the hard Pass; mean: the mean Pass (activations μ_i).
    mean_grads: g_i = ∂ Σ_rows f_μ / ∂ μ_i, [B, H] per layer (constants).
    etas0, etas1: per-layer scalars η0_i (scale of f_μ), η1_i (of Δ_i).
    baselines: per-layer c_i(x), [B].
  Returns:
    (loss, baseline_loss):
      Δ_i = Σ_units g_i (b_i - μ_i),  M_i = Σ_units sg(g_i) σ(ℓ_i^hard),
      s_i = f - η0_i f_μ - η1_i Δ_i - c_i(x),
      loss = -mean(Σ_i [sg(s_i) log q_i + sg(η1_i) M_i] + m),
      baseline_loss = mean(Σ_i s_i²).
  """
  score, baseline_loss = 0.0, 0.0
  for i, g in enumerate(mean_grads):
    g = sg(g)
    delta = tf.reduce_sum(g * (hard.activations[i] - mean.activations[i]),
                          axis=-1)
    expectation = tf.reduce_sum(g * tf.sigmoid(hard.logits[i]), axis=-1)
    s = hard.elbo - etas0[i] * mean.elbo - etas1[i] * delta - baselines[i]
    score += sg(s) * hard.log_q[i] + sg(etas1[i]) * expectation
    baseline_loss += tf.square(s)
  loss = -tf.reduce_mean(score + hard.model_term)
  return loss, tf.reduce_mean(baseline_loss)


def gumbel(relaxed):
  """Concrete / Gumbel-softmax (reference 6.5): loss = -mean(f~). Biased."""
  return -tf.reduce_mean(relaxed.elbo)


def rebar_reinforce_part(hard, baseline):
  """F = -mean((sg(f) - c(x)) · Q + m), the REINFORCE part of REBAR (6.6).

  c(x) is not stopped: the variance objective trains it through ∂F/∂θ.
  """
  return -tf.reduce_mean((sg(hard.elbo) - baseline) * tf.add_n(hard.log_q)
                         + hard.model_term)


def rebar_control_variate(terms):
  """REBAR's control variate as a surrogate (reference 6.6).

  Args:
    terms: list of (log_q, f~, f~_v) triples, one per control-variate term:
      one term with Q for `quadratic=false`, one per layer k with log q_k for
      `quadratic=true`. Each is [B].
  Returns:
    h = Σ_terms mean over rows of sg(f~_v) · log_q + f~_v - f~ (a scalar).
    The gradient applied is ∂F/∂θ + η ⊙ ∂h/∂θ.
  """
  return tf.add_n([tf.reduce_mean(sg(f_v) * log_q + f_v - f)
                   for log_q, f, f_v in terms])


def temperature_derivative_surrogate(terms, tangents):
  """A surrogate whose θ-gradient is ∂(∂h/∂θ)/∂t, h the control variate of
  rebar_control_variate, t = log λ (reference 6.7).

  ∂h/∂θ = Σ_k ∂/∂θ mean(sg(f~_v) log q_k + f~_v - f~); differentiating it by
  t moves ∂/∂t inside, also behind sg (which only stops θ):
    Σ_k mean(sg(∂f~_v/∂t) log q_k + ∂f~_v/∂t - ∂f~/∂t).

  Args:
    terms: as for rebar_control_variate.
    tangents: per term (∂f~/∂t, ∂f~_v/∂t), [B] each, with their θ-dependence
      (rebar_modules.rebar_terms with temperature_tangents).
  """
  return tf.add_n([tf.reduce_mean(sg(d_v) * log_q + d_v - d)
                   for (log_q, _, _), (d, d_v) in zip(terms, tangents)])


def rebar_gradient(reinforce_grads, control_variate_grads, etas):
  """REBAR's estimate g = ∂F/∂θ + η ⊙ ∂h/∂θ (reference 6.6), per variable.

  Args:
    reinforce_grads: ∂F/∂θ per model variable (F: rebar_reinforce_part).
    control_variate_grads: ∂h/∂θ per model variable (h:
      rebar_control_variate; exact zeros for the generative variables).
    etas: one scalar η per model variable.
  """
  return [g_f + eta * g_h
          for g_f, g_h, eta in zip(reinforce_grads, control_variate_grads,
                                   etas)]


def mean_over_parameters(a, b, n_params):
  """mean over all N = n_params parameters of a ⊙ b (aligned lists)."""
  return total_sum([x * y for x, y in zip(a, b)]) / n_params


def rebar_variance(grads, n_params):
  """REBAR's variance objective V = mean over all parameters of g² (6.6).

  A single-sample surrogate of the variance: E[g] does not depend on the
  baseline, η or λ, so ∂E[V]/∂(those) is the gradient of the variance.
  """
  return mean_over_parameters(grads, grads, n_params)


def rebar_eta_gradients(grads, control_variate_grads, n_params):
  """∂V/∂η_j = 2/N Σ g_j ⊙ ∂h/∂θ_j, one scalar per model variable j (6.6).

  Formed directly: autodiff of V would emit it as a slow reduction per
  variable.
  """
  return [2.0 * mean_over_parameters([g], [g_h], n_params)
          for g, g_h in zip(grads, control_variate_grads)]


def rebar_temperature_gradient(grads, etas, temperature_grads, n_params):
  """Dynamic REBAR's ∂V/∂t, t = log λ (reference 6.7).

  ∂V/∂t = 2/N Σ g ⊙ ∂g/∂t with ∂g/∂t = η ⊙ ∂(∂h/∂t)/∂θ.

  Args:
    grads: g per model variable (rebar_gradient), treated as constants.
    etas: η per model variable.
    temperature_grads: ∂(∂h/∂t)/∂θ per model variable, the θ-gradient of
      temperature_derivative_surrogate.
    n_params: N.
  """
  return 2.0 * mean_over_parameters(
      [sg(g) for g in grads],
      [eta * g for eta, g in zip(etas, temperature_grads)], n_params)


def relax_layer_estimate(elbo, activation, logits, c_z_tilde, reparam, eta):
  """RELAX's estimate of ∂E[f]/∂ℓ_l for one layer (Grathwohl et al. 2018):
  the single-distribution estimate (bernoulli.relax_estimate) with the
  layer's units as the Bernoulli vector and layers below at their hard
  samples.

  ĝ_l = (f(b) - η c(z~)) ∂log q(b_l)/∂ℓ_l + η (∂c(z)/∂ℓ_l - ∂c(z~)/∂ℓ_l).

  Args:
    elbo: f(b), [B]; activation: b_l, [B, H]; logits: ℓ_l, [B, H].
    c_z_tilde: c(z~_l), [B].
    reparam: ∂c(z)/∂ℓ_l - ∂c(z~)/∂ℓ_l, [B, H].
    eta: scalar η_l.
  Returns:
    ĝ_l, [B, H]; not stopped, so that its variance can be differentiated.
  """
  estimate, _ = bernoulli.relax_estimate(logits, activation, elbo, c_z_tilde,
                                         reparam, eta)
  return estimate


def antithetic_layer_estimate(kind, hard, partner, layer, u):
  """ARM's or DisARM's estimate of ∂E[f]/∂ℓ_l for layer l, per row: the
  single-distribution estimate (bernoulli.arm_estimate,
  bernoulli.disarm_estimate) with the layer's units as the Bernoulli
  vector, the layers below at their hard samples, and f of each member of
  the pair continuing the pass above l.

  Args:
    kind: 'arm' or 'disarm'.
    hard: the hard Pass: b~_l = 1[u_l > σ(-ℓ_l)], f(b~).
    partner: the Pass from layer l up with b_l = 1[u_l < σ(ℓ_l)]
      (sbn.antithetic_sampler), f(b).
    layer: l.
    u: u_l, [B, H].
  Returns:
    ĝ_l, [B, H].
  """
  if kind == 'arm':
    return bernoulli.arm_estimate(u, hard.elbo, partner.elbo)
  return bernoulli.disarm_estimate(
      hard.logits[layer], hard.activations[layer],
      partner.activations[layer], hard.elbo, partner.elbo)


def per_layer_surrogate(hard, estimates):
  """loss = -mean(Σ_l Σ_units sg(ĝ_l) ℓ_l + m): backpropagates each layer's
  logit-gradient estimate to that layer's variables; m gives the generative
  variables their exact gradient."""
  total = hard.model_term
  for g, logits in zip(estimates, hard.logits):
    total += tf.reduce_sum(sg(g) * logits, axis=-1)
  return -tf.reduce_mean(total)
