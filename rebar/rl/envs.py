"""Gymnasium environments and episodes.

Each episode is reproducible on its own: the environment is reset with a
seed and the policy's noise drawn from a generator, both derived from (run
seed, episode number), so that a run resumed at an episode boundary goes on
exactly as the uninterrupted run would.
"""

import collections

import numpy as np

from rebar.rl import settings as settings_lib


class EnvError(RuntimeError):
  """An environment that cannot be made; one line naming the fix."""


Episode = collections.namedtuple(
    'Episode', 'states final_state noise actions rewards terminated truncated')


def make_env(name):
  """gymnasium.make(name), or EnvError naming what to install."""
  try:
    import gymnasium  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise EnvError('reinforcement learning needs Gymnasium: %s'
                   % settings_lib.INSTALL_HINT) from None
  extra = settings_lib.TASKS.get(name)
  try:
    return gymnasium.make(name)
  except gymnasium.error.DependencyNotInstalled as e:
    raise EnvError('%s needs Gymnasium\'s %s extra (%s): %s'
                   % (name, extra or 'optional', ' '.join(str(e).split())[:120],
                      settings_lib.INSTALL_HINT)) from None
  except gymnasium.error.Error as e:
    raise EnvError('cannot make environment %s (%s); choose one of %s'
                   % (name, ' '.join(str(e).split())[:200],
                      ', '.join(settings_lib.TASKS))) from None


def describe_spaces(env):
  """(obs_dim, n_actions or action dim, discrete, action bounds or None)."""
  import gymnasium  # pylint: disable=g-import-not-at-top
  obs_dim = int(np.prod(env.observation_space.shape))
  space = env.action_space
  if isinstance(space, gymnasium.spaces.Discrete):
    return obs_dim, int(space.n), True, None
  return (obs_dim, int(np.prod(space.shape)), False,
          (space.low.astype(np.float32), space.high.astype(np.float32)))


def episode_seeds(seed, episode):
  """(environment reset seed, acting generator, update generator) of
  episode `episode`: independent streams of (seed, episode)."""
  sequence = np.random.SeedSequence([seed, episode])
  env_seed = int(sequence.generate_state(1)[0])
  acting, update = sequence.spawn(2)
  return env_seed, np.random.default_rng(acting), np.random.default_rng(update)


def run_episode(env, act, seed, episode, bounds=None):
  """Plays one episode with `act(state, rng) -> (action, noise row)`.

  Args:
    env: a Gymnasium environment.
    act: the policy (Agent.actor()).
    seed, episode: the run seed and the episode's number (episode_seeds).
    bounds: (low, high) of a continuous action space: the environment gets
      the action clipped to them (the policy's own sample, unclipped, is
      what the estimators see).
  Returns:
    An Episode: states [T, d], final_state [d] (s_T), noise [T, n],
    actions (ints or [T, A]), rewards [T], terminated, truncated.
  """
  env_seed, rng, _ = episode_seeds(seed, episode)
  state, _ = env.reset(seed=env_seed)
  states, noise, actions, rewards = [], [], [], []
  terminated = truncated = False
  while not (terminated or truncated):
    state = np.asarray(state, np.float32).reshape(-1)
    action, row = act(state, rng)
    states.append(state)
    noise.append(row)
    actions.append(action)
    env_action = action if bounds is None else np.clip(action, *bounds)
    state, reward, terminated, truncated, _ = env.step(env_action)
    rewards.append(float(reward))
  return Episode(np.stack(states), np.asarray(state, np.float32).reshape(-1),
                 np.stack(noise).astype(np.float32), actions,
                 np.asarray(rewards, np.float32), bool(terminated),
                 bool(truncated))
