"""The policy, the value function V(s) and the control variate ĉ, and one
policy-gradient update per episode.

Every method estimates the gradient of the expected return per time step t
with one estimator of rebar/estimators, the episode's learning signal R_t
(returns.py) playing the black box f:

  discrete actions (Cat(softmax ℓ_t), ℓ_t = policy(s_t)): categorical.relax
      with the control variate c(z, s_t) on the Gumbel sample z of ℓ_t;
  continuous actions (N(μ_t, σ²), μ_t = policy(s_t), σ one learned vector):
      gaussian.lax with c(a, s_t) on the reparameterised action.

The methods differ only in c (RELAX paper, section 6.3):
  a2c:   c = V(s_t), constant in z (or a): the score-function estimator with
         the value baseline, (R_t - V(s_t)) ∂log π(a_t|s_t);
  relax: c = V(s_t) + ĉ(softmax(z), s_t), with the conditional sample z~;
  lax:   c = V(s_t) + ĉ(a, s_t).

The policy-parameter estimate is ĝ_θ = Σ_t (∂ℓ_t/∂θ)ᵀ ĝ_t, the sum over the
episode's steps of each step's estimate pulled back through the network (a
vector-Jacobian product). V is fitted by squared error to R_t; ĉ by the
variance objective: ∂/∂φ Var(ĝ_θ) = ∂/∂φ E[|ĝ_θ|²] for an unbiased ĝ
(RELAX paper eq. 16), with |ĝ_θ|² summed over all policy parameters.
"""

import numpy as np
import tensorflow as tf

from rebar.estimators import categorical
from rebar.estimators import gaussian

sg = tf.stop_gradient


class MLP(tf.Module):
  """tanh hidden layers and a linear output: [N, d_in] -> [N, d_out].

  Weights are Glorot-uniform from `rng` (a NumPy Generator), biases 0; the
  output layer's weights are scaled by `output_scale` (a policy starts near
  uniform). `numpy_fn()` returns the same function in NumPy on a snapshot of
  the weights, for acting one state at a time without TensorFlow's per-call
  overhead.
  """

  def __init__(self, d_in, hidden, d_out, rng, output_scale=1.0, name=None):
    super().__init__(name=name)
    sizes = [d_in] + list(hidden) + [d_out]
    self.weights, self.biases = [], []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
      limit = np.sqrt(6.0 / (fan_in + fan_out))
      w = rng.uniform(-limit, limit, (fan_in, fan_out))
      if i == len(sizes) - 2:
        w = w * output_scale
      self.weights.append(tf.Variable(w.astype(np.float32), name='w%d' % i))
      self.biases.append(tf.Variable(np.zeros(fan_out, np.float32),
                                     name='b%d' % i))

  def __call__(self, x):
    for i, (w, b) in enumerate(zip(self.weights, self.biases)):
      x = tf.matmul(x, w) + b
      if i < len(self.weights) - 1:
        x = tf.tanh(x)
    return x

  def numpy_fn(self):
    layers = [(w.numpy(), b.numpy()) for w, b in zip(self.weights,
                                                      self.biases)]

    def forward(x):
      for i, (w, b) in enumerate(layers):
        x = x @ w + b
        if i < len(layers) - 1:
          x = np.tanh(x)
      return x

    return forward


class Agent(tf.Module):
  """Policy, V and (relax, lax) ĉ for one task, with their optimizers.

  Args:
    settings: rl.settings.RLSettings.
    obs_dim: the observation's size.
    n_actions: discrete tasks: the number of actions; continuous: the
      action's dimension.
    discrete: the action space's kind.
    seed: initialises the weights.
  """

  def __init__(self, settings, obs_dim, n_actions, discrete, seed):
    super().__init__(name='agent')
    self.settings, self.discrete = settings, discrete
    self.n_actions = n_actions
    rng = np.random.default_rng(seed)
    hidden = [settings.n_hidden] * settings.n_layers
    self.policy = MLP(obs_dim, hidden, n_actions, rng, output_scale=0.01,
                      name='policy')
    self.log_std = None if discrete else tf.Variable(
        np.zeros(n_actions, np.float32), name='log_std')
    self.value = MLP(obs_dim, hidden, 1, rng, name='value')
    self.cv = None
    if settings.method in ('relax', 'lax'):
      self.cv = MLP(obs_dim + n_actions, hidden, 1, rng, name='cv')
    self.policy_optimizer = tf.keras.optimizers.Adam(settings.learning_rate)
    self.critic_optimizer = tf.keras.optimizers.Adam(
        settings.critic_learning_rate)
    self.policy_variables = tuple(self.policy.trainable_variables) + (
        () if discrete else (self.log_std,))
    self.critic_variables = tuple(self.value.trainable_variables) + (
        tuple(self.cv.trainable_variables) if self.cv else ())
    # The actions taken are implied by the noise that drew them.
    noise = tf.TensorSpec([None, n_actions], tf.float32)
    signature = [
        tf.TensorSpec([None, obs_dim], tf.float32),  # states s_0..s_{T-1}
        tf.TensorSpec([None, obs_dim], tf.float32),  # bootstrap states
        noise,  # u (discrete: Gumbel uniforms) or ε (continuous)
        noise,  # v: the conditional sample's uniforms (relax; else unused)
        tf.TensorSpec([None], tf.float32),  # reward part of R_t
        tf.TensorSpec([None], tf.int32),  # bootstrap state of each t
        tf.TensorSpec([None], tf.float32),  # its weight γ^k (0: none)
    ]
    self.update = tf.function(self._update, input_signature=signature)
    self.policy_gradient = tf.function(self._policy_gradient,
                                       input_signature=signature)

  def build(self):
    """Creates the optimizers' slots (so that a checkpoint restores them
    before the first update)."""
    self.policy_optimizer.build(self.policy_variables)
    self.critic_optimizer.build(self.critic_variables)

  # ------------------------------------------------------------- acting

  def actor(self):
    """act(state, rng) -> (action for the env, noise row): the policy on a
    snapshot of the current weights, in NumPy.

    Discrete: u ~ U(0, 1)^C, a = argmax(ℓ - log(-log u)) (the Gumbel-max
    sample, the same law as Cat(softmax ℓ)); the noise row is u.
    Continuous: ε ~ N(0, 1)^A, a = μ + σ ε; the noise row is ε (the
    environment gets a clipped to its bounds by the caller).
    """
    forward = self.policy.numpy_fn()
    if self.discrete:
      tiny = np.finfo(np.float32).tiny

      def act(state, rng):
        logits = forward(state[None].astype(np.float32))[0]
        u = rng.uniform(size=self.n_actions).astype(np.float32)
        u = np.clip(u, tiny, 1.0 - 1e-7)
        return int(np.argmax(logits - np.log(-np.log(u)))), u
    else:
      std = np.exp(self.log_std.numpy())

      def act(state, rng):
        mean = forward(state[None].astype(np.float32))[0]
        eps = rng.standard_normal(self.n_actions).astype(np.float32)
        return mean + std * eps, eps
    return act

  # ------------------------------------------------------------- update

  def control_variate(self, states):
    """c(x, s) for the rows of `states` [T, d]: x is the softmax of the
    Gumbel sample z [T, 1, C] (discrete) or the action a [T, A]."""
    baseline = self.value(states)[:, 0]
    if self.cv is None:
      # Constant in x; the zero term keeps x connected, so that the
      # estimators' ∂c/∂x is 0 rather than missing.
      axes = [-2, -1] if self.discrete else [-1]
      return lambda x: baseline + 0.0 * tf.reduce_sum(x, axis=axes)
    if self.discrete:
      def c(z):
        relaxed = tf.nn.softmax(z[:, 0, :], axis=-1)
        return baseline + self.cv(tf.concat([states, relaxed], 1))[:, 0]
    else:
      def c(a):
        return baseline + self.cv(tf.concat([states, a], 1))[:, 0]
    return c

  def _gradients(self, states, bootstrap_states, noise, v, reward_part,
                 bootstrap_index, bootstrap_weight):
    """The estimates of one episode (or a segment of one) of T steps.

    R_t = reward_part_t + bootstrap_weight_t · V(bootstrap_states[index_t]),
    V there stopped (returns.learning_signals).

    Returns a dict: g_theta, ĝ_θ per policy variable (the ascent direction
    of the expected return); critic_grads, per critic variable (V: of the
    squared error; ĉ: of |ĝ_θ|²); value_loss; learning_signal, its mean
    over t; actions, those the update's own sample gives (discrete: argmax
    of z, to check against the actions taken; continuous: empty).
    """
    returns = reward_part + bootstrap_weight * sg(tf.gather(
        self.value(bootstrap_states)[:, 0], bootstrap_index))
    with tf.GradientTape(persistent=True) as outer:
      with tf.GradientTape() as inner:
        outputs = self._policy_outputs(states)
      c = self.control_variate(states)
      if self.discrete:
        result = categorical.relax(outputs[0][:, None, :], lambda b: returns,
                                   noise[:, None, :], v[:, None, :], c)
        estimates = [result.estimate[:, 0, :]]
        actions = tf.argmax(categorical.gumbel_sample(
            outputs[0][:, None, :], noise[:, None, :])[:, 0, :], axis=-1,
                            output_type=tf.int32)
      else:
        result = gaussian.lax(outputs[0], outputs[1], returns, noise, c)
        estimates = list(result.estimate)
        actions = tf.zeros([0], tf.int32)
      # ĝ_θ = Σ_t (∂outputs_t/∂θ)ᵀ ĝ_t, differentiable in ĉ's parameters.
      g_theta = inner.gradient(outputs, self.policy_variables,
                               output_gradients=estimates,
                               unconnected_gradients='zero')
      squared = tf.add_n([tf.reduce_sum(tf.square(g)) for g in g_theta])
      value_loss = tf.reduce_mean(tf.square(returns - self.value(states)[:, 0]))
    # V by squared error alone, ĉ by the variance alone.
    critic_grads = outer.gradient(value_loss, self.value.trainable_variables)
    if self.cv is not None:
      critic_grads += outer.gradient(squared, self.cv.trainable_variables)
    del outer
    return {'g_theta': [sg(g) for g in g_theta], 'critic_grads': critic_grads,
            'value_loss': value_loss,
            'learning_signal': tf.reduce_mean(sg(result.learning_signal)),
            'actions': actions}

  def _policy_gradient(self, *batch):
    """ĝ_θ of one episode, flattened over the policy variables; nothing is
    applied (the estimator tests average it)."""
    return tf.concat([tf.reshape(g, [-1])
                      for g in self._gradients(*batch)['g_theta']], 0)

  def _update(self, *batch):
    """`_gradients`, applied: Adam ascends ĝ_θ and descends the critics'
    losses. Returns _gradients' dict with g (ĝ_θ flattened) in place of the
    per-variable lists."""
    out = self._gradients(*batch)
    self.critic_optimizer.apply_gradients(
        zip(out.pop('critic_grads'), self.critic_variables))
    g_theta = out.pop('g_theta')
    self.policy_optimizer.apply_gradients(
        [(-g, w) for g, w in zip(g_theta, self.policy_variables)])
    out['g'] = tf.concat([tf.reshape(g, [-1]) for g in g_theta], 0)
    return out

  def _policy_outputs(self, states):
    """[ℓ] (discrete, [T, C]) or [μ, log σ broadcast] (continuous, [T, A])."""
    out = self.policy(states)
    if self.discrete:
      return [out]
    return [out, tf.broadcast_to(self.log_std, tf.shape(out))]
