"""A variational autoencoder with categorical latent variables (the ARSM
paper's MNIST model, Yin, Yue and Zhou 2019), trained with any estimator
of rebar/estimators/categorical.py.

  q(b | x) = Π_k Cat(b_k; softmax(ℓ_k(x))), k = 1..K (n_latent), C classes
             (n_categories); ℓ(x): 784 - 512 - 256 - K·C, leaky ReLU (0.2);
  p(b)     = uniform over the C classes of each variable;
  p(x | b) = Π_d Bernoulli(x_d; σ(g(b)_d)), g: K·C - 256 - 512 - 784, leaky
             ReLU (0.2), b one-hot.

The learning signal is the single-sample ELBO term
  f(b) = log p(x | b) + log p(b) - log q(b | x),
with ℓ held fixed inside f (its derivative through log q has mean zero
under q, so dropping it leaves every estimator's expectation unchanged).
At a point s of the simplex (the relaxed samples) the log-probabilities are
the one-hot formula's linear extension, Σ s · log θ. The estimator's
surrogate gives the encoder its gradient, and the decoder gets ∂f(b)/∂(its
variables) at the hard sample (the relaxations: at theirs), the generative
gradient of the SBN models.

Estimators with auxiliary variables (rebar: η and the temperature; relax: η,
the temperature and r_ρ) train them on the estimator's variance objective
with their own Adam at var_lr_scale × learning_rate.

The model interface is the SBN models' (rebar.models.SBNModel): train_step,
take_accumulated, iw_bound, sample_eval_noise, printed_names, temperature.
"""

import math

import tensorflow as tf

from rebar.estimators import categorical
from rebar.hparams import TRACKED_CATEGORICAL
from rebar.networks import Dense
from rebar.optim import Adam, GradVarianceTracker
from rebar.optim import MultiEstimatorVarianceTracker

HIDDEN = (512, 256)  # the encoder's; the decoder's reversed
LEAKY_SLOPE = 0.2
RELAX_HIDDEN = 200  # units of each of r_ρ's relax_depth ReLU layers
# Estimators whose deduplication of pseudo-actions (tf.unique) XLA cannot
# compile: their steps run in TensorFlow's graph executor.
NOT_XLA = ('ars', 'arsm')


def leaky_relu(x):
  return tf.nn.leaky_relu(x, LEAKY_SLOPE)


class MLP(tf.Module):
  """Dense layers with leaky ReLU between them, linear output."""

  def __init__(self, sizes, generator, name, activation=leaky_relu):
    super().__init__(name=name.replace('/', '_'))
    self.layers = [Dense(n_in, n_out, generator, '%s/%d' % (name, i))
                   for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]))]
    self.activation = activation
    self.variables_in_order = [v for layer in self.layers
                               for v in layer.variables_in_order]

  def __call__(self, x):
    for layer in self.layers[:-1]:
      x = self.activation(layer(x))
    return self.layers[-1](x)


class CategoricalNetwork(tf.Module):
  """Encoder ℓ(x) and decoder g(b) (module docstring)."""

  def __init__(self, hparams, mean_xs, generator):
    super().__init__(name='categorical_vae')
    del mean_xs  # the ARSM model feeds the raw binary pixels
    self.n_latent, self.n_categories = hparams.n_latent, hparams.n_categories
    n_z = self.n_latent * self.n_categories
    self.encoder = MLP((hparams.n_input,) + HIDDEN + (n_z,), generator,
                       'encoder')
    self.decoder = MLP((n_z,) + HIDDEN[::-1] + (hparams.n_input,), generator,
                       'decoder')
    self.q_variables = self.encoder.variables_in_order
    self.p_variables = self.decoder.variables_in_order
    self.variables_in_order = self.q_variables + self.p_variables

  def logits(self, x):
    """ℓ: [B, D] -> [B, K, C]."""
    return tf.reshape(self.encoder(x),
                      [-1, self.n_latent, self.n_categories])

  def elbo(self, x, b, logits):
    """f(b) = log p(x | b) + log p(b) - log q(b | x) per row: x [N, D],
    b [N, K, C] (one-hot or on the simplex), logits [N, K, C] (held fixed
    here). Returns [N]."""
    x_logits = self.decoder(tf.reshape(b, [-1, self.n_latent
                                           * self.n_categories]))
    log_p_x = -tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=x, logits=x_logits), axis=-1)
    log_q = tf.reduce_sum(b * tf.nn.log_softmax(tf.stop_gradient(logits)),
                          axis=[-2, -1])
    log_prior = -tf.reduce_sum(b, axis=[-2, -1]) * math.log(self.n_categories)
    return log_p_x + log_prior - log_q


def uniforms(generator, shape):
  """Uniforms in (0, 1) kept off the ends, where log(-log u) is infinite."""
  return generator.uniform(shape, minval=1e-7, maxval=1.0 - 1e-7)


class Relaxation(tf.Module):
  """The auxiliary variables of one REBAR or RELAX estimator: η, log λ
  (the learned temperature, from hparam temperature) and, for RELAX with
  relax_cv relax or free, r_ρ (relax_depth ReLU layers of RELAX_HIDDEN
  units on the flattened z)."""

  def __init__(self, estimator, hparams, generator):
    super().__init__(name=estimator + '_relaxation')
    self.estimator, self.hparams = estimator, hparams
    self.eta = tf.Variable(1.0, name=estimator + '/eta')
    self.log_temperature = tf.Variable(math.log(hparams.temperature),
                                       name=estimator + '/log_temperature')
    self.r_rho = None
    self.variables_in_order = [self.eta, self.log_temperature]
    if estimator == 'relax' and hparams.relax_cv != 'rebar':
      n_z = hparams.n_latent * hparams.n_categories
      self.r_rho = MLP((n_z,) + (RELAX_HIDDEN,) * hparams.relax_depth + (1,),
                       generator, estimator + '/r_rho', activation=tf.nn.relu)
      self.variables_in_order += self.r_rho.variables_in_order

  def temperature(self):
    return tf.exp(self.log_temperature)

  def estimate(self, logits, f, u, v):
    """REBAR, or RELAX with the control variate relax_cv chooses."""
    temperature = self.temperature()
    if self.estimator == 'rebar':
      return categorical.rebar(logits, f, u, v, self.eta, temperature)

    def control_variate(z):
      terms = []
      if self.hparams.relax_cv != 'free':
        terms.append(f(tf.nn.softmax(z / temperature)))
      if self.r_rho is not None:
        flat = tf.reshape(z, [-1, z.shape[-2] * z.shape[-1]])
        terms.append(tf.reshape(self.r_rho(flat)[:, 0], tf.shape(z)[:-2]))
      return tf.add_n(terms)

    return categorical.relax(logits, f, u, v, control_variate, eta=self.eta)

  def penalty(self):
    """relax_weight_decay × Σ ρ², added to the variance objective."""
    if self.r_rho is None or not self.hparams.relax_weight_decay:
      return 0.0
    return self.hparams.relax_weight_decay * tf.add_n(
        [tf.reduce_sum(tf.square(w)) for w in self.r_rho.variables_in_order])


class CategoricalVAE(tf.Module):
  """The model trained by rebar_train for `model=CategoricalVAE`.

  Args:
    hparams: HParams (estimator, n_latent, n_categories, n_samples,
      learning_rate, beta2, temperature, relax_cv, relax_depth,
      relax_weight_decay, var_lr_scale are read).
    mean_xs: [D] per-pixel training mean (unused).
    seed: int seed of the initial weights and the noise generators.
  """

  variance_names = ('model',)
  variances_by_name = False
  printed_names = ('elbo', 'n_evaluations', 'temperature')

  def __init__(self, hparams, mean_xs, seed):
    super().__init__(name=hparams.model)
    self.hparams = hparams
    self.estimator = hparams.estimator
    init_generator = tf.random.Generator.from_seed(seed)
    self.network = CategoricalNetwork(hparams, mean_xs, init_generator)
    self.model_variables = self.network.variables_in_order
    self.relaxations = {
        name: Relaxation(name, hparams, init_generator)
        for name in self.estimator_names if name in ('rebar', 'relax')}
    self.xla_compatible = not set(self.estimator_names) & set(NOT_XLA)
    self.aux_variables = [v for r in self.relaxations.values()
                          for v in r.variables_in_order]
    self.noise_generator = tf.random.Generator.from_seed(seed + 1)
    self.eval_generator = tf.random.Generator.from_seed(seed + 2)
    self.model_optimizer = Adam(self.model_variables, hparams.learning_rate,
                                beta2=hparams.beta2, name='model_adam')
    self.aux_optimizer = Adam(
        self.aux_variables, hparams.var_lr_scale * hparams.learning_rate,
        beta2=hparams.beta2, name='aux_adam')
    self.tracker = self.build_tracker()

  @property
  def estimator_names(self):
    """The estimators this model runs each step."""
    return (self.estimator,)

  def build_tracker(self):
    return GradVarianceTracker(self.model_variables)

  def temperature(self):
    """λ: the applied estimator's learned one (rebar, relax) or the
    hparam."""
    if self.estimator in self.relaxations:
      return self.relaxations[self.estimator].temperature()
    return tf.constant(self.hparams.temperature, tf.float32)

  def samples_of(self, name):
    """Rows per example that estimator `name` runs on: n_samples."""
    del name
    return self.hparams.n_samples

  def step_noise(self, x):
    """The uniforms u and v one step's estimators share, each
    [S · B, K, C] for the most samples per example S any of them runs on
    (an estimator on fewer reads the first rows)."""
    hp = self.hparams
    most = max(self.samples_of(name) for name in self.estimator_names)
    shape = [most * tf.shape(x)[0], hp.n_latent, hp.n_categories]
    return {'u': uniforms(self.noise_generator, shape),
            'v': uniforms(self.noise_generator, shape)}

  def run_estimator(self, name, x, logits, noise, samples):
    """categorical.Result of estimator `name` on x [B, D] with the
    encoder's logits of x [B, K, C] (computed once per step), each row
    `samples` times, with the step's noise (its first B·samples rows).
    Call under the step's tape."""
    hp = self.hparams
    rows = tf.tile(x, [samples, 1])
    n_rows = tf.shape(rows)[0]
    shape = [n_rows, hp.n_latent, hp.n_categories]
    logits = tf.tile(logits, [samples, 1, 1])
    u, v = noise['u'][:n_rows], noise['v'][:n_rows]

    def f(b):
      return tf.reshape(self.network.elbo(rows, tf.reshape(b, shape), logits),
                        tf.shape(b)[:-2])

    def f_at(index, b):
      return self.network.elbo(tf.gather(rows, index), b,
                               tf.gather(logits, index))

    if name == 'reinforce_loo':
      split = [samples, -1, hp.n_latent, hp.n_categories]
      return categorical.reinforce_loo(tf.reshape(logits, split), f,
                                       tf.reshape(u, split))
    if name in ('gumbel_softmax', 'straight_through'):
      return getattr(categorical, name)(logits, f, u, hp.temperature)
    if name in ('ars', 'arsm'):
      return getattr(categorical, name)(logits, f_at, u)
    if name == 'stick_breaking_disarm':
      return categorical.stick_breaking_disarm(logits, f, u)
    return self.relaxations[name].estimate(logits, f, u, v)

  def estimate(self, x):
    """(categorical.Result, tape) of the estimator on rows x [B, D] (each
    n_samples times), under a persistent tape that watched everything."""
    tape = tf.GradientTape(persistent=True)
    noise = self.step_noise(x)
    with tape:
      result = self.run_estimator(self.estimator, x, self.network.logits(x),
                                  noise, self.samples_of(self.estimator))
    return result, tape

  def train_step(self, x):
    """One update on a batch [batch, D]; returns the printed metrics."""
    result, tape = self.estimate(x)
    grads = tape.gradient(self.loss(tape, result), self.model_variables)
    self.apply(tape, {self.estimator: result}, grads)
    del tape
    self.tracker.update(grads)
    return {'elbo': tf.reduce_mean(result.f_values),
            'n_evaluations': self.decoder_evaluations(self.estimator, result),
            'temperature': self.temperature()}

  @staticmethod
  def loss(tape, result):
    """-surrogate, recorded on `tape`."""
    with tape:
      return -result.surrogate

  def apply(self, tape, results, model_grads):
    """Applies `model_grads`, and to each estimator's auxiliary variables
    the gradient of its variance objective (plus r_ρ's weight decay);
    `results` by estimator name, computed under `tape`."""
    self.model_optimizer.apply(model_grads)
    if not self.aux_variables:
      return
    with tape:  # the objectives must be on the tape too
      objectives = [results[name].variance_objective + relaxation.penalty()
                    for name, relaxation in self.relaxations.items()]
    self.aux_optimizer.apply([
        g for objective, relaxation in zip(objectives,
                                           self.relaxations.values())
        for g in tape.gradient(objective, relaxation.variables_in_order)])

  def decoder_evaluations(self, name, result):
    """Decoder passes per example of estimator `name`: its f evaluations
    per row (categorical.Result.n_evaluations), times its rows per example
    (samples_of), plus those of RELAX's control variate f(softmax(z/λ)) at
    z and z~, which the estimator does not count."""
    per_row = tf.cast(result.n_evaluations, tf.float32)
    if name == 'relax' and self.hparams.relax_cv != 'free':
      per_row += 2.0
    return per_row * self.samples_of(name)

  def take_accumulated(self):
    """({}, {'model': Σ of the variance figure}): as SBNModel's."""
    return {}, {'model': self.tracker.take()}

  def iw_bound(self, x, n_samples, noise):
    """Importance-weighted bound per image with `n_samples` samples of q:
    log(1/S Σ_s exp f(b_s)), and the mean single-sample ELBO. x [n, D];
    noise [S·n, K, C] uniforms (sample-major). Returns ([n], [n])."""
    n = tf.shape(x)[0]
    rows = tf.tile(x, [n_samples, 1])
    logits = self.network.logits(rows)
    b = categorical.hard_sample(categorical.gumbel_sample(logits, noise))
    f = tf.reshape(self.network.elbo(rows, b, logits), [n_samples, n])
    return (tf.reduce_logsumexp(f, axis=0) - math.log(n_samples),
            tf.reduce_mean(f, axis=0))

  def sample_eval_noise(self, x, n_samples):
    """iw_bound's uniforms: [n_samples · n, K, C]."""
    return uniforms(self.eval_generator,
                    [n_samples * tf.shape(x)[0], self.hparams.n_latent,
                     self.hparams.n_categories])


class CategoricalTrackGradVariances(CategoricalVAE):
  """The unbiased categorical estimators on one batch, noise and
  trajectory: the categorical SBNTrackGradVariances (reference 6.8).

  Each step every estimator of TRACKED estimates the gradient from the same
  uniforms (REINFORCE LOO on LOO_SAMPLES samples per example, its first
  the others' sample); hparam estimator's gradient is applied, and every
  REBAR and RELAX estimator trains its own η, temperature and r_ρ. The
  variance figures are those of SBNTrackGradVariances
  (optim.MultiEstimatorVarianceTracker: EMAs of each g_k and g_k², μ their
  mean over estimators, all unbiased); the epoch line has the ELBO and each
  estimator's decoder evaluations per example, its cost.
  """

  TRACKED = TRACKED_CATEGORICAL
  LOO_SAMPLES = 2
  variances_by_name = True
  variance_names = tuple(sorted(TRACKED))
  printed_names = ('elbo',) + tuple('n_evaluations_' + n for n in TRACKED)

  @property
  def estimator_names(self):
    return self.TRACKED

  def samples_of(self, name):
    return self.LOO_SAMPLES if name == 'reinforce_loo' else 1

  def build_tracker(self):
    return MultiEstimatorVarianceTracker(self.model_variables, self.TRACKED)

  def train_step(self, x):
    noise = self.step_noise(x)
    tape = tf.GradientTape(persistent=True)
    with tape:
      logits = self.network.logits(x)
      results = {name: self.run_estimator(name, x, logits, noise,
                                          self.samples_of(name))
                 for name in self.TRACKED}
    grads = {name: tape.gradient(self.loss(tape, results[name]),
                                 self.model_variables)
             for name in self.TRACKED}
    self.tracker.update([grads[name] for name in self.TRACKED])
    self.apply(tape, results, grads[self.estimator])
    del tape
    metrics = {'elbo': tf.reduce_mean(results[self.estimator].f_values)}
    for name in self.TRACKED:
      metrics['n_evaluations_' + name] = self.decoder_evaluations(
          name, results[name])
    return metrics

  def take_accumulated(self):
    """({}, variance sum by estimator name); the deviations are not
    printed."""
    variances, _ = self.tracker.take()
    return {}, {name: variances[i] for i, name in enumerate(self.TRACKED)}
