"""Where a policy-gradient run's time goes: the environment's step, the
policy's action (NumPy) and the update (TensorFlow), per environment step.

  python bench/rl_costs.py [--repeats 5] [--steps 2000]

For each task and method (CartPole-v1 and LunarLander-v3: a2c, relax;
InvertedPendulum-v5: a2c, lax) it plays episodes with the initial policy
until --steps environment steps, timing env.step and the actor separately,
then times the update on each of those episodes. The three measurements
are interleaved within each repeat, and the medians over --repeats are
printed in µs per environment step. Timings on a shared machine swing; only
compare figures from one session.
"""

import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from rebar import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

CELLS = (('CartPole-v1', 'a2c'), ('CartPole-v1', 'relax'),
         ('LunarLander-v3', 'a2c'), ('LunarLander-v3', 'relax'),
         ('InvertedPendulum-v5', 'a2c'), ('InvertedPendulum-v5', 'lax'))


def define_flags(flag_values):
  flags.DEFINE_integer('repeats', 5, 'Interleaved repeats per cell.',
                       lower_bound=1, flag_values=flag_values)
  flags.DEFINE_integer('steps', 2000, 'Environment steps per repeat.',
                       lower_bound=1, flag_values=flag_values)
  cli.define_threads_flag(flag_values)


COMMAND = cli.Command(
    name='rl_costs.py', prog='python bench/rl_costs.py', synopsis='[flags]',
    description=cli.first_paragraph(__doc__), define_flags=define_flags)


def measure(env, agent, bounds, steps, seed):
  """(µs env.step, µs actor, µs update) per environment step, one repeat."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from rebar.rl import envs  # pylint: disable=g-import-not-at-top
  from rebar.rl import returns  # pylint: disable=g-import-not-at-top
  act = agent.actor()
  env_s = act_s = 0.0
  episodes, done_steps, number = [], 0, 0
  while done_steps < steps:
    _, rng, update_rng = envs.episode_seeds(seed, number)
    state, _ = env.reset(seed=number)
    states, noise, rewards, end = [], [], [], False
    truncated = False
    while not end:
      state = np.asarray(state, np.float32).reshape(-1)
      states.append(state)
      began = time.perf_counter()
      action, row = act(state, rng)
      middle = time.perf_counter()
      step = action if bounds is None else np.clip(action, *bounds)
      state, reward, terminated, truncated, _ = env.step(step)
      env_s += time.perf_counter() - middle
      act_s += middle - began
      noise.append(row)
      rewards.append(reward)
      end = terminated or truncated
    final = np.asarray(state, np.float32).reshape(-1)
    states = np.stack(states)
    episodes.append((states, final, np.stack(noise).astype(np.float32),
                     rewards, truncated, update_rng))
    done_steps += len(rewards)
    number += 1
  update_s = 0.0
  for states, final, noise, rewards, truncated, update_rng in episodes:
    parts = returns.learning_signals(rewards, agent.settings.gamma,
                                     agent.settings.n_step, truncated)
    v = update_rng.uniform(0.01, 0.99, size=noise.shape).astype(np.float32)
    began = time.perf_counter()
    agent.policy_gradient(states, np.concatenate([states, final[None]]),
                          noise, v, *parts)
    update_s += time.perf_counter() - began
  return tuple(1e6 * s / done_steps for s in (env_s, act_s, update_s))


def main(argv=None):
  args = COMMAND.parse(sys.argv[1:] if argv is None else argv)
  from rebar import quiet  # pylint: disable=g-import-not-at-top
  quiet.import_tensorflow()
  # pylint: disable=g-import-not-at-top
  from rebar import runtime
  from rebar.rl import envs
  from rebar.rl.agent import Agent
  from rebar.rl.settings import parse_settings
  # pylint: enable=g-import-not-at-top
  runtime.configure(args.threads or 1)
  cells = []
  for env_name, method in CELLS:
    env = envs.make_env(env_name)
    obs_dim, n, discrete, bounds = envs.describe_spaces(env)
    agent = Agent(parse_settings('env=%s,method=%s' % (env_name, method)),
                  obs_dim, n, discrete, seed=1)
    measure(env, agent, bounds, 200, 0)  # traces the update
    cells.append((env_name, method, env, agent, bounds, []))
  for repeat in range(args.repeats):
    for cell in cells:
      cell[5].append(measure(cell[2], cell[3], cell[4], args.steps, repeat))
  print('µs per environment step, medians of %d interleaved repeats of %d '
        'steps (initial policies)' % (args.repeats, args.steps))
  print('| task | method | env.step | policy (NumPy) | update (TensorFlow) |')
  print('|---|---|---|---|---|')
  for env_name, method, _, _, _, figures in cells:
    medians = [statistics.median(f[i] for f in figures) for i in range(3)]
    print('| %s | %s | %.1f | %.1f | %.1f |' % ((env_name, method) +
                                              tuple(medians)))
  return 0


if __name__ == '__main__':
  sys.exit(main())
