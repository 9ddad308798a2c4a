"""The hyperparameters of a policy-gradient run, their per-task defaults and
the run-directory name.

A run is named by its settings as an SBN run is: `RLSettings.run_name()` is
the sorted `name_value` pairs joined by `.`, so that `python -m rebar.rl`
and the sweep runner (`configs/rl_*.json`, program `rl`) agree on where a
run lives. `parse_settings("env=CartPole-v1,method=relax,...")` reads the
`--hparams` form; what it leaves out comes from TASK_DEFAULTS for the task,
then from the dataclass defaults. docs/rl.md says where each default comes
from (the RELAX paper's text, or our choice where its appendix is not to
hand).
"""

import dataclasses
import math

from rebar.hparams import HParamsError, parse_assignments

# Methods: the control variate is all that differs between them.
#   a2c    score function with the value baseline V(s) (advantage
#          actor-critic with Monte-Carlo or n-step returns);
#   relax  discrete actions: c(z, s) = V(s) + ĉ(z, s) on the Gumbel sample
#          z of the softmax policy, with the conditional sample z~ (RELAX
#          paper section 6.3, its eq. (8) per time step);
#   lax    continuous actions: c(a, s) = V(s) + ĉ(a, s) on the
#          reparameterised Gaussian action (eq. (5) per time step).
METHODS = ('a2c', 'relax', 'lax')
DISCRETE_METHODS = ('a2c', 'relax')
CONTINUOUS_METHODS = ('a2c', 'lax')

# The RELAX paper's three tasks, as Gymnasium names them, with the extra
# each needs ('' for none) and the install line that provides it.
TASKS = {
    'CartPole-v1': '',
    'LunarLander-v3': 'box2d',
    'InvertedPendulum-v5': 'mujoco',
}
INSTALL_HINT = "pip install '.[rl]'"

# Per-task defaults over the dataclass's (docs/rl.md, "Settings").
TASK_DEFAULTS = {
    'CartPole-v1': {},
    'LunarLander-v3': {'learning_rate': 0.003, 'critic_learning_rate': 0.003,
                       'n_hidden': 64},
    'InvertedPendulum-v5': {'n_step': 20, 'learning_rate': 0.003,
                            'critic_learning_rate': 0.003, 'n_hidden': 64},
}

HELP = {
    'env': 'Gymnasium environment id (%s)' % ', '.join(TASKS),
    'method': 'policy-gradient estimator: %s (relax: discrete actions, lax: '
              'continuous)' % ', '.join(METHODS),
    'learning_rate': 'Adam learning rate of the policy, the same for every '
                     'method',
    'critic_learning_rate': 'Adam learning rate of V(s) (squared error to '
                            'the returns) and of the control variate ĉ '
                            '(the variance of the policy gradient)',
    'gamma': 'discount of the returns',
    'n_step': '0: Monte-Carlo returns to the episode\'s end; N > 0: N-step '
              'returns bootstrapped with V(s) (the continuous task)',
    'n_hidden': 'units per hidden layer (tanh) of the policy, V and ĉ',
    'n_layers': 'hidden layers of each of those networks',
    'solved_return': 'the task counts as solved when the mean return of the '
                     'last solved_window episodes reaches this (nan: the '
                     'environment\'s registered reward_threshold)',
    'solved_window': 'episodes the solved criterion averages over',
    'trial': 'trial number (a sweep\'s seed)',
}


@dataclasses.dataclass
class RLSettings:
  """Hyperparameters of one policy-gradient run (HELP says each)."""
  env: str = 'CartPole-v1'
  method: str = 'a2c'
  learning_rate: float = 0.01
  critic_learning_rate: float = 0.01
  gamma: float = 0.99
  n_step: int = 0
  n_hidden: int = 32
  n_layers: int = 2
  solved_return: float = math.nan
  solved_window: int = 100
  trial: int = 1

  def values(self):
    return dataclasses.asdict(self)

  def run_name(self):
    """`env_<env>.method_<method>...`: every pair, sorted, joined by `.`
    (the environment's `-` kept; nan written as `nan`)."""
    return '.'.join('%s_%s' % (k, v) for k, v in sorted(self.values().items()))

  def short_name(self):
    """`env=...,method=...` and the pairs that differ from the task's
    defaults: the --hparams text of the run, for TensorBoard."""
    defaults = task_defaults(self.env)
    pairs = ['env=%s' % self.env, 'method=%s' % self.method]
    for name, value in sorted(self.values().items()):
      if name not in ('env', 'method') and not _same(value, defaults[name]):
        pairs.append('%s=%s' % (name, value))
    return ','.join(pairs)

  def validate(self):
    """Raises HParamsError (one line naming the fix) for what cannot work."""
    if self.env not in TASKS:
      raise HParamsError('unknown environment %r; choose one of %s'
                         % (self.env, ', '.join(TASKS)))
    if self.method not in METHODS:
      raise HParamsError('unknown method %r; choose one of %s'
                         % (self.method, ', '.join(METHODS)))
    kind = TASK_KIND[self.env]
    allowed = DISCRETE_METHODS if kind == 'discrete' else CONTINUOUS_METHODS
    if self.method not in allowed:
      raise HParamsError('%s has %s actions; method %s does not apply, choose '
                         '%s' % (self.env, kind, self.method,
                                 ' or '.join(allowed)))
    for name in ('learning_rate', 'critic_learning_rate'):
      if not getattr(self, name) > 0:
        raise HParamsError('%s must be positive, got %r'
                           % (name, getattr(self, name)))
    if not 0 < self.gamma <= 1:
      raise HParamsError('gamma must be in (0, 1], got %r' % self.gamma)
    for name, lowest in (('n_step', 0), ('n_hidden', 1), ('n_layers', 1),
                         ('solved_window', 1)):
      if getattr(self, name) < lowest:
        raise HParamsError('%s must be at least %d, got %d'
                           % (name, lowest, getattr(self, name)))


# The action space of each task (checked against the environment when made).
TASK_KIND = {'CartPole-v1': 'discrete', 'LunarLander-v3': 'discrete',
             'InvertedPendulum-v5': 'continuous'}

_FIELDS = {f.name: f for f in dataclasses.fields(RLSettings)}


def _same(a, b):
  if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
    return math.isnan(b)
  return a == b


def task_defaults(env):
  """Every setting's default for task `env`: the dataclass's, then the
  task's own."""
  values = {f.name: f.default for f in dataclasses.fields(RLSettings)}
  values.update(TASK_DEFAULTS.get(env, {}))
  values['env'] = env
  return values


def parse_pairs(text):
  """{name: typed value} of a `name=value,...` string (no defaults)."""
  return parse_assignments(text, _FIELDS)


def parse_settings(text='', validate=True, **overrides):
  """RLSettings from `name=value,...` over the task's defaults; `overrides`
  (typed) apply last. Raises HParamsError (one line)."""
  values = parse_pairs(text)
  values.update(overrides)
  env = values.get('env', _FIELDS['env'].default)
  settings = RLSettings(**dict(task_defaults(env), **values))
  if validate:
    settings.validate()
  return settings


def solved_threshold(settings, env_spec_threshold):
  """The return the solved criterion uses: solved_return, or the
  environment's registered threshold where that is nan."""
  if not math.isnan(settings.solved_return):
    return settings.solved_return
  if env_spec_threshold is None:
    raise HParamsError('%s registers no reward_threshold; set solved_return'
                       % settings.env)
  return float(env_spec_threshold)


def describe():
  """The settings with their defaults and meanings, for --help."""
  lines = ['hparams (--hparams="name=value,..."; default, then meaning; '
           'per-task defaults: %s):' % '; '.join(
               '%s %s' % (env, ', '.join('%s=%s' % kv for kv in d.items()))
               for env, d in TASK_DEFAULTS.items() if d)]
  for field in dataclasses.fields(RLSettings):
    lines.append('  %s=%s: %s' % (field.name, field.default, HELP[field.name]))
  return '\n'.join(lines)
