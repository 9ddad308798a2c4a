"""rebar/rl: the agent's policy gradients are unbiased for the expected
return (checked against exact gradients on small problems), A2C is the
textbook estimator, returns.learning_signals by hand, and gaussian.lax
directly.

The unbiasedness check. Each problem's exact gradient ∇_θ E[return] is
differentiated with tf.GradientTape through the agent's own policy network
(agent.policy, agent.log_std), by enumeration of the actions (discrete) or
in closed form / Gauss-Hermite quadrature (continuous), independently of
the estimators. Episodes are acted with agent.actor()'s rule (Gumbel-max on
u, or μ + σ ε), vectorised over episodes on the same NumPy snapshot of the
policy, the noise going to the update as in rl/train.py; the estimate is
agent.policy_gradient (the tf.function the training loop's update uses,
nothing applied).
policy_gradient sums its per-step estimates over its rows, each row's
estimate depending on that row alone, so one call on BATCH = 200 episodes
stacked as rows is the sum of their 200 per-episode ĝ_θ
(test_stacked_episodes_are_the_sum_of_their_estimates checks this to
float32 round-off); a check makes BATCHES = 100 such calls (N = 20,000
episodes) and, per policy parameter, with the 100 batch means m_j,
  z = (mean_j m_j - exact) / SE,  SE = max(std_j(m_j) / sqrt(100), SE_FLOOR),
SE the standard error of the mean over all N episodes (batch means: the
std of a batch mean is that of one episode's ĝ over sqrt(200), so this is
std/sqrt(N)); SE_FLOOR = 1e-6 guards elements whose SE is about 0. An
unbiased estimator passes when every |z| < Z_BELOW = 4.5 (two-sided
probability about 2e-5 per element, z being t-distributed with 99 degrees
of freedom under the CLT; at most 60 elements, so a correct estimator fails
by chance with probability about 1e-3 per check).
The seeds are fixed, so every outcome is reproducible. A deliberately
broken variant must show some |z| > BROKEN_ABOVE = 10: the check has
power against it.

The agents are small (n_hidden=8, n_layers=1) and their initial weights
are redrawn (perturb) so that the policy is far from uniform and V(s) and ĉ
are large: an unbiased estimator must be unbiased for any baseline and
control variate, and a large ĉ makes a wrong one's bias visible.

The conditional sample's law (argmax z~ = b, and z~ given b distributed as
z given argmax z = b) is tested in tests/test_categorical.py
(test_conditional_sample_has_the_conditional_distribution and
test_conditional_sample_argmax_is_b_at_extreme_logits), not here.
"""

import numpy as np
import pytest
import tensorflow as tf

from rebar.estimators import categorical
from rebar.estimators import gaussian
from rebar.rl import returns
from rebar.rl.agent import Agent
from rebar.rl.settings import parse_settings

Z_BELOW = 4.5
BROKEN_ABOVE = 10.0
SE_FLOOR = 1e-6
BATCHES = 100             # policy_gradient calls per check
BATCH = 200               # episodes stacked as rows in each call
TINY = np.finfo(np.float32).tiny
SMALL = 'n_hidden=8,n_layers=1'

# The discrete problems: 3-dimensional states, C = 3 actions.
S0 = np.array([0.5, -1.0, 0.3], np.float32)
BANDIT_REWARDS = np.array([1.0, -0.5, 2.0], np.float32)
# Two steps: s1 = NEXT_STATE[a0], then reward TABLE[a0, a1] at step 1.
NEXT_STATE = np.array([[1.0, 0.2, -0.5], [-0.3, 1.0, 0.4],
                       [0.6, -0.7, 1.0]], np.float32)
TABLE = np.array([[1.0, -1.0, 0.5], [2.0, 0.0, -0.5], [-1.5, 1.0, 3.0]],
                 np.float32)
# The continuous problems: 4-dimensional states (InvertedPendulum's size).
S0_CONTINUOUS = np.array([0.4, -0.8, 0.6, 0.2], np.float32)
TARGET = np.array([0.7, -0.4], np.float32)     # one step: f = -|a - t|²
TARGET_1 = 0.5                                 # two steps: -(a0 + a1 - t)²


# ------------------------------------------------------------ helpers


def perturb(module, rng, std):
  """Every weight and bias of an MLP redrawn from N(0, std²)."""
  for var in module.trainable_variables:
    var.assign(rng.normal(0.0, std, var.shape).astype(np.float32))


def make_agent(text, obs_dim, n_actions, discrete, seed, cv_std=1.0):
  """A small Agent with a far-from-uniform policy, a large V and ĉ."""
  settings = parse_settings('%s,%s' % (text, SMALL))
  agent = Agent(settings, obs_dim, n_actions, discrete, seed)
  rng = np.random.default_rng(seed + 1000)
  perturb(agent.policy, rng, 0.8)
  perturb(agent.value, rng, 1.0)
  if agent.cv is not None:
    perturb(agent.cv, rng, cv_std)
  if agent.log_std is not None:
    agent.log_std.assign(rng.uniform(-0.5, 0.2, n_actions).astype(np.float32))
  return agent


_AGENTS = {}


def shared_agent(*args):
  """make_agent(*args), built once per module run: tracing policy_gradient
  costs about a second per agent, and these agents are never changed (the
  checks apply nothing). Not for the monkeypatched tests, whose agents must
  trace under the patch."""
  if args not in _AGENTS:
    _AGENTS[args] = make_agent(*args)
  return _AGENTS[args]


def flat(grads):
  return np.concatenate([np.reshape(g.numpy(), [-1]) for g in grads]).astype(
      np.float64)


def exact_gradient(agent, objective):
  """∂objective()/∂(agent.policy_variables), flattened in policy_gradient's
  order."""
  with tf.GradientTape() as tape:
    value = objective()
  return flat(tape.gradient(value, agent.policy_variables,
                            unconnected_gradients='zero'))


def uniforms(rng, shape):
  """The actor's clipping, so that -log(-log u) is finite."""
  return np.clip(rng.uniform(size=shape), TINY, 1.0 - 1e-7).astype(np.float32)


def stack(episodes, rng, n_actions):
  """policy_gradient's arguments for episodes stacked as rows.

  Each episode is (states [T, d], noise [T, n], rewards [T]); its R_t are
  learning_signals(rewards, γ = 1, n_step = 0) (no bootstrap: weight 0,
  index 0 into the bootstrap states, here the rows' states). v: fresh
  uniforms."""
  states = np.concatenate([e[0] for e in episodes]).astype(np.float32)
  noise = np.concatenate([e[1] for e in episodes]).astype(np.float32)
  parts = [returns.learning_signals(e[2], 1.0, 0, False) for e in episodes]
  reward_part, index, weight = (np.concatenate(p) for p in zip(*parts))
  v = uniforms(rng, [len(states), n_actions])
  return states, states, noise, v, reward_part, index, weight


def estimate_batches(agent, play, seed):
  """[BATCHES, P]: per call, the mean ĝ_θ of its BATCH episodes.

  play(policy, std, rng) -> (states [BATCH·T, d], noise, R [BATCH·T]) plays
  BATCH episodes at once with Agent.actor's formulas (act_discrete,
  act_continuous) on the same NumPy snapshot of the policy; R_t has no
  bootstrap term (weight 0). v: fresh uniforms."""
  rng = np.random.default_rng(seed)
  policy = agent.policy.numpy_fn()
  std = None if agent.discrete else np.exp(agent.log_std.numpy())
  means = []
  for _ in range(BATCHES):
    states, noise, signal = play(policy, std, rng)
    rows = len(states)
    v = uniforms(rng, noise.shape)
    estimate = agent.policy_gradient(
        states, states, noise, v, signal.astype(np.float32),
        np.zeros(rows, np.int32), np.zeros(rows, np.float32))
    means.append(flat([estimate]) / BATCH)
  return np.array(means)


def act_discrete(policy, states, rng):
  """Agent.actor's discrete rule for many states at once: u ~ U(0, 1)^C
  (clipped as there), a = argmax(ℓ - log(-log u))."""
  logits = policy(states)
  u = uniforms(rng, logits.shape)
  return np.argmax(logits - np.log(-np.log(u)), -1), u


def act_continuous(policy, std, states, rng):
  """Agent.actor's continuous rule: ε ~ N(0, 1)^A, a = μ + σ ε."""
  mean = policy(states)
  eps = rng.standard_normal(mean.shape).astype(np.float32)
  return mean + std * eps, eps


def z_scores(samples, exact):
  """(mean - exact) / max(SE, SE_FLOOR) per element, samples [N, P]."""
  samples = np.asarray(samples, np.float64)
  se = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
  return (samples.mean(axis=0) - exact) / np.maximum(se, SE_FLOOR)


def report(name, z):
  print('%s: max |z| = %.2f over %d elements' % (name, np.abs(z).max(),
                                                 z.size))
  return np.abs(z).max()


# ------------------------------------------------- the discrete problems


def bandit_play(policy, std, rng):
  """BATCH one-step episodes from S0, reward (and R_0) BANDIT_REWARDS[a]."""
  del std
  states = np.tile(S0, (BATCH, 1))
  actions, u = act_discrete(policy, states, rng)
  return states, u, BANDIT_REWARDS[actions]


def bandit_exact(agent):
  """∇_θ Σ_a π_θ(a|s0) r(a)."""
  def objective():
    probs = tf.nn.softmax(agent.policy(S0[None])[0])
    return tf.reduce_sum(probs * BANDIT_REWARDS)
  return exact_gradient(agent, objective)


def two_step_episode(act, rng):
  """a0 from S0, s1 = NEXT_STATE[a0], a1 from s1; rewards (0, TABLE[a0,
  a1]), so with γ = 1, n_step = 0 both steps' R_t are TABLE[a0, a1]."""
  a0, u0 = act(S0, rng)
  s1 = NEXT_STATE[a0]
  a1, u1 = act(s1, rng)
  return np.stack([S0, s1]), np.stack([u0, u1]), [0.0, TABLE[a0, a1]]


# learning_signals((0, TABLE[a0, a1]), γ = 1, n_step = 0) per (a0, a1):
# [a0, a1, t], both entries TABLE[a0, a1].
TWO_STEP_SIGNALS = np.array([[returns.learning_signals([0.0, r], 1.0, 0,
                                                       False)[0]
                              for r in row] for row in TABLE])


def two_step_play(policy, std, rng):
  """two_step_episode for BATCH episodes at once: rows s0 of every episode,
  then their s1; R_t from TWO_STEP_SIGNALS."""
  del std
  first = np.tile(S0, (BATCH, 1))
  a0, u0 = act_discrete(policy, first, rng)
  second = NEXT_STATE[a0]
  a1, u1 = act_discrete(policy, second, rng)
  signals = TWO_STEP_SIGNALS[a0, a1]                       # [BATCH, 2]
  return (np.concatenate([first, second]), np.concatenate([u0, u1]),
          np.concatenate([signals[:, 0], signals[:, 1]]))


def two_step_exact(agent):
  """∇_θ Σ_{a0, a1} π(a0|s0) π(a1|s1(a0)) TABLE[a0, a1]."""
  def objective():
    p0 = tf.nn.softmax(agent.policy(S0[None])[0])
    p1 = tf.nn.softmax(agent.policy(NEXT_STATE), axis=-1)   # [a0, a1]
    return tf.reduce_sum(p0[:, None] * p1 * TABLE)
  return exact_gradient(agent, objective)


DISCRETE = {'bandit': (bandit_play, bandit_exact),
            'two_step': (two_step_play, two_step_exact)}


def discrete_z(method, problem, seed=0, cv_std=1.0, build=shared_agent):
  play, exact = DISCRETE[problem]
  agent = build('env=CartPole-v1,method=%s' % method, 3, 3, True, seed,
                cv_std)
  return z_scores(estimate_batches(agent, play, seed + 1), exact(agent))


@pytest.mark.parametrize('method', ['a2c', 'relax'])
@pytest.mark.parametrize('problem', sorted(DISCRETE))
def test_discrete_policy_gradient_is_unbiased(problem, method):
  """Every |z| < 4.5 (module docstring): N = 20,000 episodes, seeds 0
  (weights; perturb: seed 1000) and 1 (noise), 59 policy parameters.
  bandit: one step from S0, r(a) = BANDIT_REWARDS; two_step: the MDP of
  two_step_episode (played by two_step_play). a2c: c = V(s); relax: c =
  V(s) + ĉ(softmax z, s)."""
  z = discrete_z(method, problem)
  assert report('%s %s' % (problem, method), z) < Z_BELOW, z


def unnormalised_conditional(logits, b, v):
  """z~ by the appendix formula with the unnormalised logits ℓ in place of
  log θ = log_softmax(ℓ) (a plausible slip): p(z | b) only where Σ e^ℓ =
  1, so E[c(z~) | b] is not E[c(z) | b] and RELAX is biased."""
  log_e = tf.math.log(-tf.math.log(v))
  log_e_b = tf.broadcast_to(tf.reduce_sum(b * log_e, axis=-1, keepdims=True),
                            tf.shape(log_e))
  others = -tf.reduce_logsumexp(tf.stack([log_e - logits, log_e_b]), axis=0)
  return tf.where(b > 0.5, -log_e_b, others)


def unconditional(logits, b, v):
  """z~ = log θ - log(-log v), a fresh Gumbel sample ignoring b."""
  del b
  return categorical.gumbel_sample(logits, v)


@pytest.mark.parametrize('problem', sorted(DISCRETE))
def test_relax_with_a_wrong_conditional_sample_fails_the_check(
    problem, monkeypatch):
  """categorical._relax calls the module attribute
  categorical.conditional_gumbel_sample (looked up when the agent's
  tf.function traces, so the agent is built after patching); with the
  unnormalised conditional some |z| > 10 (seeds as
  test_discrete_policy_gradient_is_unbiased, ĉ's weights drawn with std 2)."""
  monkeypatch.setattr(categorical, 'conditional_gumbel_sample',
                      unnormalised_conditional)
  z = discrete_z('relax', problem, cv_std=2.0, build=make_agent)
  assert report('%s relax, unnormalised z~' % problem, z) > BROKEN_ABOVE, z


def test_relax_with_z_tilde_independent_of_b_is_still_unbiased(monkeypatch):
  """z~ drawn afresh, ignoring b, looks broken but is unbiased:
  E[c(z~)(b - θ)] = E[c(z~)] E[b - θ] = 0 and E[∂c(z~)/∂ℓ] = E[∂c(z)/∂ℓ]
  (z~ and z have one law), so the control variate only adds variance
  (tests/test_categorical.py's relax_unconditional). So it is no test of
  the check's power; this records that it passes: every |z| < 4.5 on the
  bandit (seeds as above, ĉ std 2)."""
  monkeypatch.setattr(categorical, 'conditional_gumbel_sample', unconditional)
  z = discrete_z('relax', 'bandit', cv_std=2.0, build=make_agent)
  assert report('bandit relax, unconditional z~', z) < Z_BELOW, z


# ----------------------------------------------- the continuous problems


def continuous_agent(method, n_actions, seed):
  return shared_agent('env=InvertedPendulum-v5,method=%s' % method, 4,
                      n_actions, False, seed)


def one_step_play(policy, std, rng):
  """BATCH one-step episodes from S0_CONTINUOUS, f(a) = -|a - TARGET|²
  (A = 2)."""
  states = np.tile(S0_CONTINUOUS, (BATCH, 1))
  actions, eps = act_continuous(policy, std, states, rng)
  return states, eps, -np.sum(np.square(actions - TARGET), -1)


def one_step_exact(agent):
  """∇_θ E[f] = ∇_θ -(|μ - t|² + Σ σ²), μ = policy(s0), σ = exp(log_std)."""
  def objective():
    mean = agent.policy(S0_CONTINUOUS[None])[0]
    return -(tf.reduce_sum(tf.square(mean - TARGET))
             + tf.reduce_sum(tf.exp(2.0 * agent.log_std)))
  return exact_gradient(agent, objective)


NEXT_REST = np.array([1.0, -0.5, 0.3], np.float32)


def two_step_continuous_play(policy, std, rng):
  """BATCH episodes (A = 1): a0 from S0_CONTINUOUS, s1 = [a0, NEXT_REST]
  (the next state depends on a0), a1 from s1; rewards (0, r), r = -(a0 +
  a1 - TARGET_1)², so that with γ = 1 and no bootstrap R_0 = R_1 = r
  (learning_signals; test_learning_signals_monte_carlo_by_hand)."""
  first = np.tile(S0_CONTINUOUS, (BATCH, 1))
  a0, eps0 = act_continuous(policy, std, first, rng)
  second = np.concatenate([a0, np.tile(NEXT_REST, (BATCH, 1))], 1)
  a1, eps1 = act_continuous(policy, std, second, rng)
  reward = -np.square(a0[:, 0] + a1[:, 0] - TARGET_1)
  return (np.concatenate([first, second]), np.concatenate([eps0, eps1]),
          np.concatenate([reward, reward]))


def two_step_continuous_objective(agent, nodes):
  """E[-(a0 + a1 - t)²] = E_{a0}[-((a0 + μ(s1(a0)) - t)² + σ²)]: the inner
  expectation in closed form, the outer over a0 ~ N(μ0, σ²) by Gauss-Hermite
  quadrature with `nodes` nodes (μ(s1(a0)) is the policy network's smooth
  function of a0)."""
  x, w = np.polynomial.hermite_e.hermegauss(nodes)
  x, w = x.astype(np.float32), (w / w.sum()).astype(np.float32)
  sigma = tf.exp(agent.log_std[0])
  a0 = agent.policy(S0_CONTINUOUS[None])[0, 0] + sigma * x     # [nodes]
  rest = tf.broadcast_to(tf.constant(NEXT_REST), [nodes, 3])
  mean1 = agent.policy(tf.concat([a0[:, None], rest], 1))[:, 0]
  return -tf.reduce_sum(w * (tf.square(a0 + mean1 - TARGET_1)
                             + tf.square(sigma)))


def two_step_continuous_exact(agent):
  return exact_gradient(agent, lambda: two_step_continuous_objective(agent,
                                                                     60))


CONTINUOUS = {'one_step': (one_step_play, one_step_exact, 2),
              'two_step': (two_step_continuous_play,
                           two_step_continuous_exact, 1)}


@pytest.mark.parametrize('method', ['a2c', 'lax'])
@pytest.mark.parametrize('problem', sorted(CONTINUOUS))
def test_continuous_policy_gradient_is_unbiased(problem, method):
  """Every |z| < 4.5 (module docstring): N = 20,000 episodes, seeds 0
  (weights) and 1 (noise); the policy parameters include log σ. one_step:
  A = 2, f(a) = -|a - t|², exact in closed form; two_step: A = 1, the MDP
  of two_step_continuous_play, exact by 60-node quadrature (within
  1e-5 relative of 30 nodes: test_two_step_quadrature_has_converged).
  a2c: c = V(s); lax: c = V(s) + ĉ(a, s)."""
  play, exact, n_actions = CONTINUOUS[problem]
  agent = continuous_agent(method, n_actions, 0)
  z = z_scores(estimate_batches(agent, play, 1), exact(agent))
  assert report('continuous %s %s' % (problem, method), z) < Z_BELOW, z


def test_two_step_quadrature_has_converged():
  """The exact gradient of the two-step continuous problem with 30 and 60
  quadrature nodes agrees to 1e-5 relative (float32), and its value matches
  a 10^6-episode Monte-Carlo mean within 5 SE (seed 3)."""
  agent = continuous_agent('lax', 1, 0)
  coarse = exact_gradient(agent,
                          lambda: two_step_continuous_objective(agent, 30))
  fine = two_step_continuous_exact(agent)
  np.testing.assert_allclose(fine, coarse, rtol=1e-5,
                             atol=1e-5 * np.abs(fine).max())
  # The value by plain simulation, vectorised in numpy.
  forward = agent.policy.numpy_fn()
  sigma = float(np.exp(agent.log_std.numpy()[0]))
  rng = np.random.default_rng(3)
  n = 10 ** 6
  mean0 = forward(S0_CONTINUOUS[None])[0, 0]
  a0 = mean0 + sigma * rng.standard_normal(n)
  s1 = np.concatenate([a0[:, None], np.tile(NEXT_REST, (n, 1))], 1)
  a1 = forward(s1.astype(np.float32))[:, 0] + sigma * rng.standard_normal(n)
  values = -np.square(a0 + a1 - TARGET_1)
  value = float(two_step_continuous_objective(agent, 60))
  assert abs(values.mean() - value) < 5 * values.std() / np.sqrt(n)


def two_step_continuous_episode(act, rng):
  """One episode of two_step_continuous_play, acted by agent.actor()."""
  a0, eps0 = act(S0_CONTINUOUS, rng)
  s1 = np.concatenate([a0, NEXT_REST])
  a1, eps1 = act(s1, rng)
  return (np.stack([S0_CONTINUOUS, s1]), np.stack([eps0, eps1]),
          [0.0, -float(np.square(a0[0] + a1[0] - TARGET_1))])


@pytest.mark.parametrize('method', ['relax', 'lax'])
def test_stacked_episodes_are_the_sum_of_their_estimates(method):
  """policy_gradient on 5 two-step episodes (acted by agent.actor(), R_t
  by learning_signals per episode) stacked as rows equals the sum of its
  calls on each episode, to 1e-5 relative (seed 0; relax: the discrete
  two-step MDP, lax: the continuous one): what estimate_batches relies
  on."""
  if method == 'relax':
    agent = shared_agent('env=CartPole-v1,method=relax', 3, 3, True, 0, 1.0)
    play = two_step_episode
  else:
    agent = continuous_agent('lax', 1, 0)
    play = two_step_continuous_episode
  rng = np.random.default_rng(7)
  act = agent.actor()
  episodes = [play(act, rng) for _ in range(5)]
  batch = stack(episodes, rng, agent.n_actions)
  separate = 0.0
  for e in range(5):
    rows = slice(2 * e, 2 * e + 2)
    one = [x[rows] for x in batch]
    separate = separate + flat([agent.policy_gradient(*one)])
  together = flat([agent.policy_gradient(*batch)])
  np.testing.assert_allclose(together, separate, rtol=1e-5,
                             atol=1e-5 * np.abs(separate).max())


# ----------------------------------------------------- gaussian.lax


LAX_MEAN = np.array([0.3, -0.8, 1.1], np.float32)
LAX_LOG_STD = np.array([-0.2, 0.3, -0.6], np.float32)
LAX_W = np.array([2.0, -1.5, 3.0], np.float32)
LAX_ROWS = 50000


def lax_draws(control_variate, seed=11):
  """ĝ_μ, ĝ_log σ [LAX_ROWS, 3] for f(a) = Σ sin(a_j), one draw per row."""
  eps = tf.constant(np.random.default_rng(seed).standard_normal(
      [LAX_ROWS, 3]).astype(np.float32))
  mean = tf.broadcast_to(tf.constant(LAX_MEAN), [LAX_ROWS, 3])
  log_std = tf.constant(LAX_LOG_STD)
  f_values = tf.reduce_sum(tf.sin(gaussian.sample(mean, log_std, eps)), -1)
  result = gaussian.lax(mean, log_std, f_values, eps, control_variate)
  return np.concatenate([result.estimate[0].numpy(),
                         result.estimate[1].numpy()], 1)


def lax_exact():
  """E[sin a] = sin μ e^{-σ²/2}: ∂/∂μ = cos μ e^{-σ²/2}, ∂/∂log σ =
  -σ² sin μ e^{-σ²/2}."""
  mean, var = LAX_MEAN.astype(np.float64), np.exp(2.0 * LAX_LOG_STD)
  damp = np.exp(-var / 2)
  return np.concatenate([np.cos(mean) * damp, -var * np.sin(mean) * damp])


def tanh_cv(a):
  """c(a) = Σ w tanh(a) + 1: non-linear, far from f."""
  return tf.reduce_sum(LAX_W * tf.tanh(a), -1) + 1.0


def test_lax_estimate_by_hand():
  """One row, A = 2, f(a) = 1.5, c(a) = Σ w tanh(a_j) + 1:
    ĝ_μ = (f - c) ε/σ + w (1 - tanh² a),
    ĝ_log σ = (f - c)(ε² - 1) + w (1 - tanh² a) σ ε,
  a = μ + σ ε (numpy, float64), to 1e-5."""
  mean, log_std = LAX_MEAN[:2], LAX_LOG_STD[:2]
  eps = np.array([0.7, -1.3], np.float32)
  weights = LAX_W[:2]
  result = gaussian.lax(tf.constant(mean[None]), tf.constant(log_std),
                        tf.constant([1.5]), tf.constant(eps[None]),
                        lambda a: tf.reduce_sum(weights * tf.tanh(a), -1)
                        + 1.0)
  sigma = np.exp(log_std.astype(np.float64))
  action = mean + sigma * eps
  signal = 1.5 - (np.sum(weights * np.tanh(action)) + 1.0)
  slope = weights * (1.0 - np.tanh(action) ** 2)            # ∂c/∂a
  np.testing.assert_allclose(result.learning_signal.numpy(), [signal],
                             rtol=1e-5)
  np.testing.assert_allclose(result.estimate[0].numpy()[0],
                             signal * eps / sigma + slope, rtol=1e-5)
  np.testing.assert_allclose(result.estimate[1].numpy()[0],
                             signal * (eps ** 2 - 1) + slope * sigma * eps,
                             rtol=1e-5)


def test_lax_is_unbiased_with_a_nonlinear_control_variate():
  """gaussian.lax on 50,000 rows (one draw each, seed 11), f = Σ sin a_j,
  c = Σ w tanh(a_j) + 1: every |z| < 4.5 over the 6 elements (SE =
  std/sqrt(N) over the rows)."""
  z = z_scores(lax_draws(tanh_cv), lax_exact())
  assert report('gaussian.lax', z) < Z_BELOW, z


def test_lax_without_the_reparameterised_term_fails_the_check():
  """The same with c's value stopped (c(a) = sg(c(a))), which drops
  ∂c/∂μ and ∂c/∂log σ (the score-function estimator with a sample-dependent
  baseline): some |z| > 10."""
  z = z_scores(lax_draws(lambda a: tf.stop_gradient(tanh_cv(a))),
               lax_exact())
  assert report('gaussian.lax without ∂c', z) > BROKEN_ABOVE, z


def test_lax_surrogate_gradient_is_the_mean_estimate():
  """∂surrogate/∂(μ, log σ) for a μ and log σ shared by all rows is the
  mean of ĝ over the rows (1e-5 relative), and its value is mean f(a)."""
  mean_var = tf.Variable(LAX_MEAN)
  log_std_var = tf.Variable(LAX_LOG_STD)
  eps = tf.constant(np.random.default_rng(12).standard_normal(
      [1000, 3]).astype(np.float32))
  with tf.GradientTape() as tape:
    mean = tf.broadcast_to(mean_var, [1000, 3])
    f_values = tf.reduce_sum(tf.sin(gaussian.sample(mean, log_std_var, eps)),
                             -1)
    result = gaussian.lax(mean, log_std_var, f_values, eps, tanh_cv)
  grads = tape.gradient(result.surrogate, [mean_var, log_std_var])
  for grad, estimate in zip(grads, result.estimate):
    np.testing.assert_allclose(grad.numpy(), estimate.numpy().mean(0),
                               rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(result.surrogate),
                             f_values.numpy().mean(), rtol=1e-6)


# ------------------------------------------- A2C, the textbook form


RETURNS_REWARDS = [1.0, 0.0, 2.0]
# γ = 0.9: G_2 = 2, G_1 = 0 + 0.9 · 2 = 1.8, G_0 = 1 + 0.9 · 1.8 = 2.62.
RETURNS_G = [2.62, 1.8, 2.0]


@pytest.mark.parametrize('method', ['a2c', 'relax'])
def test_a2c_is_the_textbook_estimator(method):
  """A 3-step episode (states, u fixed by hand, actions 0, 1, 2), rewards
  (1, 0, 2), γ = 0.9, n_step = 0: policy_gradient equals
  Σ_t (G_t - V(s_t)) ∇_θ log π(a_t|s_t), the latter by GradientTape on
  log_softmax of agent.policy, to 1e-5 relative. relax with ĉ ≡ 0 (its
  weights zeroed) is the same estimator."""
  settings = parse_settings('env=CartPole-v1,method=%s,gamma=0.9,%s'
                            % (method, SMALL))
  agent = Agent(settings, 3, 3, True, 5)
  rng = np.random.default_rng(5)
  perturb(agent.policy, rng, 0.8)
  perturb(agent.value, rng, 1.0)
  if agent.cv is not None:
    perturb(agent.cv, rng, 0.0)
  states = np.array([[0.5, -1.0, 0.3], [0.1, 0.7, -0.2], [-0.6, 0.4, 0.9],
                     [0.2, 0.2, 0.2]], np.float32)       # s_0..s_3
  # One uniform near 1 per step picks the actions 0, 1, 2.
  u = np.array([[0.999, 0.2, 0.5], [0.3, 0.999, 0.1], [0.4, 0.35, 0.999]],
               np.float32)
  v = np.array([[0.5, 0.6, 0.7], [0.1, 0.2, 0.3], [0.8, 0.4, 0.6]],
               np.float32)
  reward_part, index, weight = returns.learning_signals(
      RETURNS_REWARDS, settings.gamma, settings.n_step, False)
  np.testing.assert_allclose(reward_part, RETURNS_G, rtol=1e-6)
  assert not weight.any()
  estimate = flat([agent.policy_gradient(states[:3], states, u, v,
                                         reward_part, index, weight)])
  logits = agent.policy(states[:3]).numpy()
  actions = np.argmax(logits - np.log(-np.log(u)), -1)
  advantages = np.float32(RETURNS_G) - agent.value(states[:3]).numpy()[:, 0]
  with tf.GradientTape() as tape:
    log_probs = tf.nn.log_softmax(agent.policy(states[:3]), -1)
    chosen = tf.gather(log_probs, actions, batch_dims=1)
    total = tf.reduce_sum(advantages * chosen)
  textbook = flat(tape.gradient(total, agent.policy_variables))
  np.testing.assert_array_equal(actions, [0, 1, 2])
  np.testing.assert_allclose(estimate, textbook, rtol=1e-5,
                             atol=1e-5 * np.abs(textbook).max())


# ------------------------------------------------------- returns.py


def brute_force_returns(rewards, values, gamma, n_step, truncated):
  """R_t from the definitions (returns.py's docstring), values = V(s_0..s_T)."""
  steps = len(rewards)
  out = []
  for t in range(steps):
    end = steps if n_step == 0 else min(t + n_step, steps)
    total = sum(gamma ** (k - t) * rewards[k] for k in range(t, end))
    if n_step and (end < steps or truncated):
      total += gamma ** (end - t) * values[end]
    out.append(total)
  return np.array(out)


def test_learning_signals_monte_carlo_by_hand():
  """n_step = 0: the discounted return to the end, no bootstrap."""
  part, index, weight = returns.learning_signals(RETURNS_REWARDS, 0.9, 0,
                                                 False)
  np.testing.assert_allclose(part, RETURNS_G, rtol=1e-6)
  np.testing.assert_array_equal(index, [0, 0, 0])
  np.testing.assert_array_equal(weight, [0, 0, 0])
  assert part.dtype == np.float32 and index.dtype == np.int32
  assert weight.dtype == np.float32
  # Truncation does not matter without bootstrapping; γ = 1 sums.
  np.testing.assert_allclose(
      returns.learning_signals([1, 2, 3, 4], 1.0, 0, True)[0], [10, 9, 7, 4])
  assert not returns.learning_signals([1, 2, 3, 4], 1.0, 0, True)[2].any()
  # The two-step problems' rewards (0, r): R_0 = R_1 = r, also with
  # InvertedPendulum's n_step = 20 on a terminated episode.
  for n_step in (0, 20):
    part, _, weight = returns.learning_signals([0.0, -1.25], 1.0, n_step,
                                               False)
    np.testing.assert_array_equal(part, [-1.25, -1.25])
    assert not weight.any()


def test_learning_signals_n_step_by_hand():
  """n_step = 2, rewards (1, 2, 3, 4), γ = 0.5:
    reward parts 1 + .5·2 = 2, 2 + .5·3 = 3.5, 3 + .5·4 = 5, 4;
    bootstrap state indices (into s_0..s_4) 2, 3, 4, 4; weights .25, .25,
    then .25, .5 if truncated, 0, 0 if terminated.
  γ = 1: parts 3, 5, 7, 4, weights 1, 1, (1, 1) or (0, 0)."""
  rewards = [1.0, 2.0, 3.0, 4.0]
  for truncated, tail in ((True, [0.25, 0.5]), (False, [0.0, 0.0])):
    part, index, weight = returns.learning_signals(rewards, 0.5, 2, truncated)
    np.testing.assert_allclose(part, [2.0, 3.5, 5.0, 4.0], rtol=1e-6)
    np.testing.assert_array_equal(index, [2, 3, 4, 4])
    np.testing.assert_allclose(weight, [0.25, 0.25] + tail, rtol=1e-6)
  for truncated, tail in ((True, [1.0, 1.0]), (False, [0.0, 0.0])):
    part, index, weight = returns.learning_signals(rewards, 1.0, 2, truncated)
    np.testing.assert_allclose(part, [3.0, 5.0, 7.0, 4.0], rtol=1e-6)
    np.testing.assert_array_equal(index, [2, 3, 4, 4])
    np.testing.assert_allclose(weight, [1.0, 1.0] + tail, rtol=1e-6)
  # n_step beyond the episode: every step bootstraps from s_T.
  part, index, weight = returns.learning_signals([1.0, 2.0], 0.5, 5, True)
  np.testing.assert_allclose(part, [2.0, 2.0])
  np.testing.assert_array_equal(index, [2, 2])
  np.testing.assert_allclose(weight, [0.25, 0.5])


@pytest.mark.parametrize('n_step', [0, 1, 3, 20])
@pytest.mark.parametrize('truncated', [False, True])
def test_learning_signals_match_the_definition(n_step, truncated):
  """reward_part + weight · V[index] equals R_t summed from the definition,
  for random rewards (T = 7) and values V(s_0..s_7), γ = 0.95 (seed 4)."""
  rng = np.random.default_rng(4)
  rewards, values = rng.normal(size=7), rng.normal(size=8)
  part, index, weight = returns.learning_signals(rewards, 0.95, n_step,
                                                 truncated)
  np.testing.assert_allclose(part + weight * values[index],
                             brute_force_returns(rewards, values, 0.95,
                                                 n_step, truncated),
                             rtol=1e-5, atol=1e-5)
