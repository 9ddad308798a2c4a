"""The policy-gradient training loop: one update per episode, a record per
`log_every` episodes, checkpoints, resumption and the solved criterion.

A run directory holds what an SBN run's does (rebar/train.py): metrics.jsonl,
checkpoints/, finished.json, and TensorBoard event files derived from the
records. Checkpoints are taken at record boundaries only, so that a resumed
run's records, and (episodes being seeded by their number) its whole
trajectory, are those of an uninterrupted run.
"""

import os
import time

from absl import logging
import numpy as np
import tensorflow as tf

from rebar.checkpoints import Checkpoints
from rebar.progress import Progress
from rebar.rl import envs
from rebar.rl import returns as returns_lib
from rebar.rl.agent import Agent
from rebar.rl.settings import solved_threshold
from rebar.rundir import Diverged, StopRequest, Stopped, write_json
from rebar.runlog import RunLog

FINISHED_FILE = 'finished.json'


def tensorboard_scalars(record):
  """(tag, value) pairs TensorBoard shows for one RL record."""
  values = record['values']
  pairs = [('mean return (last %d)' % record['solved_window'],
            values['mean_return']),
           ('return', values['window_return']),
           ('episode length', values['mean_length']),
           ('log policy-gradient variance', record.get('log_variance')),
           ('value loss', values.get('value_loss'))]
  return [(tag, v) for tag, v in pairs if v is not None]


def log_variance(g_sum, g_squares, n):
  """log of the mean over parameters of the sample variance of ĝ_θ over
  the n updates of a window (None for n < 2)."""
  if n < 2:
    return None
  mean = g_sum / n
  variance = (g_squares / n - mean ** 2) * n / (n - 1)
  return float(np.log(max(float(np.mean(variance)), 1e-300)))


def train(settings, run_dir, seed, max_episodes, log_every=10,
          checkpoint_secs=300, stop_when_solved=True, out=print, stop=None,
          tensorboard_dir=None):
  """Trains until `max_episodes` episodes (or, with stop_when_solved, until
  the task is solved); returns the episode count reached.

  Prints a line per record: episodes, mean return over the last
  `solved_window` episodes, the policy-gradient log variance, steps/s.
  Raises rundir.Stopped on a stop signal (checkpoint saved), envs.EnvError,
  rundir.Diverged (a non-finite parameter), rundir.RunDirError.
  """
  stop = stop or StopRequest()
  loop = _Loop(settings, run_dir, seed, max_episodes, log_every,
               checkpoint_secs, stop_when_solved, out, stop, tensorboard_dir)
  episode = loop.run()
  write_json(os.path.join(run_dir, FINISHED_FILE), {
      'step': episode, 'solved_at': loop.solved_at,
      'stopped_when_solved': bool(stop_when_solved and loop.solved_at)})
  return episode


class _Loop:
  """One call of `train` (arguments as train's)."""

  def __init__(self, settings, run_dir, seed, max_episodes, log_every,
               checkpoint_secs, stop_when_solved, out, stop, tensorboard_dir):
    self.settings, self.seed = settings, seed
    self.max_episodes, self.log_every = max_episodes, log_every
    self.checkpoint_secs, self.stop_when_solved = checkpoint_secs, \
        stop_when_solved
    self.out, self.stop = out, stop
    self.env = envs.make_env(settings.env)
    obs_dim, n, discrete, self.bounds = envs.describe_spaces(self.env)
    self.discrete = discrete
    self.threshold = solved_threshold(settings, self.env.spec.reward_threshold)
    self.agent = Agent(settings, obs_dim, n, discrete, seed)
    self.agent.build()
    self.episode = tf.Variable(0, dtype=tf.int64, name='episode')
    self.records = tf.Variable(0, dtype=tf.int64, name='records')
    self.checkpoints = Checkpoints(tf.train.Checkpoint(
        agent=self.agent, episode=self.episode, records=self.records),
                                   run_dir)
    resumed = self.checkpoints.restore()
    if resumed:
      logging.info('Resumed from %s at episode %d', resumed,
                   int(self.episode.numpy()))
    self.log = RunLog(run_dir, int(self.records.numpy()) if resumed else 0,
                      int(self.episode.numpy()), tensorboard_dir,
                      settings.values(), scalars=tensorboard_scalars)
    self.returns = [r for rec in self.log.records for r in rec['returns']]
    del self.returns[int(self.episode.numpy()):]
    last = self.log.records[-1] if self.log.records else {}
    self.env_steps = last.get('env_steps', 0)
    self.solved_at = last.get('solved_at')
    self.start_time = time.time() - self.log.wall_s
    self.last_save = time.time()
    self.progress = Progress('training', max_episodes,
                             done=int(self.episode.numpy()), unit='episodes')

  def done(self):
    return (int(self.episode.numpy()) >= self.max_episodes or
            (self.stop_when_solved and self.solved_at is not None))

  def run(self):
    while not self.done():
      self.run_window()
      if self.stop.requested:
        self.save()
        raise Stopped(self.stop.signum, int(self.episode.numpy()))
      if time.time() - self.last_save > self.checkpoint_secs:
        self.save()
    self.save()
    return int(self.episode.numpy())

  def save(self):
    self.records.assign(self.log.count)
    self.checkpoints.save(int(self.episode.numpy()))
    self.last_save = time.time()

  def run_window(self):
    """Up to log_every episodes, one update each, then their record."""
    settings, agent = self.settings, self.agent
    start = int(self.episode.numpy())
    end = min(start + self.log_every, self.max_episodes)
    window = {'returns': [], 'lengths': [], 'value_loss': [],
              'learning_signal': []}
    g_sum = g_squares = None
    mismatches = 0
    act_s = update_s = 0.0
    for number in range(start, end):
      began = time.time()
      episode = envs.run_episode(self.env, agent.actor(), self.seed, number,
                                 self.bounds)
      parts = returns_lib.learning_signals(
          episode.rewards, settings.gamma, settings.n_step, episode.truncated)
      middle = time.time()
      noise = episode.noise
      v = envs.episode_seeds(self.seed, number)[2].uniform(
          size=noise.shape).astype(np.float32)
      v = np.clip(v, np.finfo(np.float32).tiny, 1.0 - 1e-7)
      bootstrap_states = np.concatenate([episode.states,
                                         episode.final_state[None]])
      result = agent.update(episode.states, bootstrap_states, noise, v,
                            *parts)
      g = result['g'].numpy().astype(np.float64)
      if not np.all(np.isfinite(g)):
        raise Diverged('the policy gradient became non-finite at episode %d; '
                       'lower learning_rate (now %g) and start again'
                       % (number + 1, settings.learning_rate))
      if self.discrete:
        mismatches += int(np.sum(result['actions'].numpy() !=
                                 np.asarray(episode.actions)))
      update_s += time.time() - middle
      act_s += middle - began
      g_sum = g if g_sum is None else g_sum + g
      g_squares = g * g if g_squares is None else g_squares + g * g
      total = float(np.sum(episode.rewards))
      self.returns.append(total)
      window['returns'].append(total)
      window['lengths'].append(len(episode.rewards))
      window['value_loss'].append(float(result['value_loss']))
      window['learning_signal'].append(float(result['learning_signal']))
      self.env_steps += len(episode.rewards)
      self.episode.assign(number + 1)
      if self.solved_at is None and self.is_solved():
        self.solved_at = number + 1
        if self.stop_when_solved:
          break
    # A stop request waits for the window's end (at most log_every
    # episodes), so that records fall where an uninterrupted run's do.
    self.write_record(window, g_sum, g_squares, mismatches, act_s, update_s)

  def is_solved(self):
    n = self.settings.solved_window
    return (len(self.returns) >= n and
            float(np.mean(self.returns[-n:])) >= self.threshold)

  def write_record(self, window, g_sum, g_squares, mismatches, act_s,
                   update_s):
    episodes = int(self.episode.numpy())
    n = len(window['returns'])
    steps = sum(window['lengths'])
    recent = self.returns[-self.settings.solved_window:]
    record = {
        'kind': 'train', 'step': episodes, 'wall_s': round(
            time.time() - self.start_time, 3),
        'env_steps': self.env_steps,
        'values': {'mean_return': float(np.mean(recent)),
                   'window_return': float(np.mean(window['returns'])),
                   'mean_length': steps / n,
                   'value_loss': float(np.mean(window['value_loss'])),
                   'learning_signal': float(np.mean(
                       window['learning_signal']))},
        'log_variance': log_variance(g_sum, g_squares, n),
        'returns': window['returns'], 'lengths': window['lengths'],
        'solved_at': self.solved_at, 'solved_return': self.threshold,
        'solved_window': self.settings.solved_window,
        'ms_per_step_acting': 1000.0 * act_s / steps,
        'ms_per_step_update': 1000.0 * update_s / steps,
        'action_mismatches': mismatches,
    }
    self.log.write(record)
    if mismatches:
      logging.warning('%d action(s) of episodes %d-%d differ between acting '
                      'and the update\'s sample (a float32 near-tie)',
                      mismatches, episodes - n + 1, episodes)
    lv = record['log_variance']
    self.out('Episode %d: mean return (last %d) %.2f, log variance %s, '
             '%.0f steps/s%s' % (
                 episodes, len(recent), record['values']['mean_return'],
                 'n/a' if lv is None else '%.3f' % lv,
                 steps / max(act_s + update_s, 1e-9),
                 '' if self.solved_at is None else
                 ', solved at episode %d' % self.solved_at))
    self.progress.update(episodes)
