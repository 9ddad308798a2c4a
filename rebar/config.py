"""The config of a sweep: what to run, checked, and the runs it expands to.

A config is a JSON file naming settings (hparams fragments), models,
learning rates and trials, and how the report selects a learning rate; its
format is described in docs/reproduction.md ("Config format").
`load_config` reads and checks one, raising ConfigError (one line naming the
fix) for anything it cannot use; `expand_runs` lists its runs. Both
`rebar.sweep` and `rebar.report` use them, so that both see the same runs.
"""

import dataclasses
import json
import os
import pathlib

from rebar.hparams import HParamsError, parse_hparams

# Config keys: name -> (required, accepted types, meaning for error messages).
_CONFIG_KEYS = {
    'name': (False, (str,), 'a short name'),
    'description': (False, (str,), 'free text'),
    'source': (False, (str, list), 'provenance, free text'),
    'notes': (False, (str, list), 'free text'),
    'hparams': (False, (str,), 'an hparams fragment applied to every run'),
    'settings': (True, (dict,), 'setting name -> hparams fragment'),
    'models': (True, (list,), 'a list of model names'),
    'learning_rates': (True, (list,), 'a list of positive numbers'),
    'trials': (True, (int, list), 'a count N (trials 1..N) or a list of ints'),
    'seed_from_trial': (False, (bool,),
                        'true: --seed=<trial>; false: rebar_train draws one'),
    'max_steps': (True, (int,), 'a positive int'),
    'eval_freq': (True, (int,), 'evaluation interval in epochs'),
    'flags': (False, (dict,), 'extra rebar_train flags, name -> value'),
    'selection': (True, (dict,), 'the learning-rate selection rule'),
    'published': (False, (dict, type(None)),
                  '{"file": ..., "table": ...} or null'),
}
# Extra rebar_train flags a config may set. The sweep sets the others itself
# (hparams, working_dir, max_steps, eval_freq, seed, threads, data flags).
EXTRA_FLAGS = {'final_eval': bool, 'eval_images': int, 'eval_samples': int,
               'checkpoint_secs': int}
# Selection metrics: per trial, the best value over its records; per learning
# rate, the mean over trials; the highest mean wins.
SELECTION_METRICS = ('valid_iw_bound', 'train_elbo')
# Hparams the sweep sets per run; a setting or the common fragment must not.
_SWEPT_HPARAMS = ('model', 'learning_rate', 'trial')


class ConfigError(ValueError):
  """A config that cannot be used; the message is one line naming the fix."""


@dataclasses.dataclass
class Config:
  """A checked config; `path` is where it was read from."""
  path: pathlib.Path
  name: str
  hparams: str
  settings: dict
  models: list
  learning_rates: list
  trials: list
  seed_from_trial: bool
  max_steps: int
  eval_freq: int
  flags: dict
  selection: dict
  published: dict  # {'file': absolute path, 'table': name} or None
  raw: dict  # the file's content, for the report's provenance


@dataclasses.dataclass(frozen=True)
class Run:
  """One rebar_train invocation of a sweep."""
  setting: str
  model: str
  learning_rate: float
  trial: int
  hparams: str  # the --hparams string
  name: str  # the run directory name, as rebar_train computes it
  seed: int  # None: drawn by rebar_train

  def run_dir(self, working_dir):
    return os.path.join(working_dir, self.name)


def load_config(path):
  """Reads and checks a config JSON file; raises ConfigError (one line)."""
  path = pathlib.Path(path)
  raw = _read_json(path)
  # The checks run in this order, so that a config with several mistakes
  # is always reported by the same one.
  _check_keys(path, raw)
  settings, models, rates, trials = _check_grid(path, raw)
  _check_steps(path, raw)
  extra = _check_flags(path, raw.get('flags', {}))
  _check_selection(path, raw['selection'])
  published = _check_published(path, raw.get('published'))
  config = Config(path=path.resolve(), name=raw.get('name', path.stem),
                  hparams=raw.get('hparams', ''), settings=dict(settings),
                  models=list(models), learning_rates=rates, trials=trials,
                  seed_from_trial=raw.get('seed_from_trial', True),
                  max_steps=raw['max_steps'], eval_freq=raw['eval_freq'],
                  flags=dict(extra), selection=dict(raw['selection']),
                  published=published, raw=raw)
  expand_runs(config)  # checks every hparams string now, not mid-sweep
  return config


def _bad(path, message):
  return ConfigError('config %s: %s' % (path, message))


def _read_json(path):
  """The content of config file `path`."""
  if not path.is_file():
    raise ConfigError('config file %s does not exist; pass the path of a '
                      'config JSON such as configs/smoke/smoke.json' % path)
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ConfigError(
        'config %s is not valid JSON (line %d column %d: %s); fix the file'
        % (path, e.lineno, e.colno, e.msg)) from None
  except (OSError, UnicodeDecodeError) as e:
    raise ConfigError('cannot read config %s (%s); check the file'
                      % (path, e)) from None


def _check_keys(path, raw):
  """Every key known, every required one there, each of its type."""
  if not isinstance(raw, dict):
    raise _bad(path, 'the top level must be a JSON object; see '
               'docs/reproduction.md "Config format" for the format')
  for key in raw:
    if key not in _CONFIG_KEYS:
      raise _bad(path, 'unknown key %r; valid keys: %s'
                 % (key, ', '.join(_CONFIG_KEYS)))
  for key, (required, types, meaning) in _CONFIG_KEYS.items():
    if key not in raw:
      if required:
        raise _bad(path, 'missing key %r (%s); add it' % (key, meaning))
      continue
    value = raw[key]
    # bool is an int in Python; only `seed_from_trial` may be one.
    if not isinstance(value, types) or (
        isinstance(value, bool) and bool not in types):
      raise _bad(path, '%r must be %s, got %r' % (key, meaning, value))


def _check_grid(path, raw):
  """(settings, models, learning rates, trials): what the runs range over."""
  settings = raw['settings']
  if not settings or not all(isinstance(k, str) and isinstance(v, str)
                             for k, v in settings.items()):
    raise _bad(path, '"settings" must map setting names to hparams strings, '
               'e.g. {"linear_1_layer": "n_layer=1,nonlinear=false"}')
  models = raw['models']
  if not models or not all(isinstance(m, str) for m in models):
    raise _bad(path, '"models" must be a non-empty list of model names')
  if len(set(models)) != len(models):
    raise _bad(path, '"models" lists a model twice; list each once')
  rates = raw['learning_rates']
  if not rates or not all(isinstance(r, (int, float)) and
                          not isinstance(r, bool) and r > 0 for r in rates):
    raise _bad(path, '"learning_rates" must be a non-empty list of positive '
               'numbers')
  rates = [float(r) for r in rates]
  if len(set(rates)) != len(rates):
    raise _bad(path, '"learning_rates" lists a rate twice; list each once')
  trials = raw['trials']
  if isinstance(trials, int):
    trials = list(range(1, trials + 1))
  if not trials or not all(isinstance(t, int) and not isinstance(t, bool)
                           for t in trials) or len(set(trials)) != len(trials):
    raise _bad(path, '"trials" must be a positive count or a list of '
               'distinct ints')
  return settings, models, rates, trials


def _check_steps(path, raw):
  if raw['max_steps'] <= 0:
    raise _bad(path, '"max_steps" must be positive')
  if raw['eval_freq'] < 0:
    raise _bad(path, '"eval_freq" must be 0 (never) or a number of epochs')


def _check_flags(path, extra):
  """The extra rebar_train flags, each one the sweep passes on, typed."""
  for flag, value in extra.items():
    if flag not in EXTRA_FLAGS:
      raise _bad(path, '"flags" has %r, which the sweep does not pass on; '
                 'allowed: %s (the sweep sets the others itself)'
                 % (flag, ', '.join(EXTRA_FLAGS)))
    kind = EXTRA_FLAGS[flag]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
      raise _bad(path, 'flag %r takes a%s %s, got %r'
                 % (flag, 'n' if kind is int else '', kind.__name__, value))
  return extra


def _check_selection(path, selection):
  unknown = set(selection) - {'metric', 'description'}
  if unknown:
    raise _bad(path, '"selection" has unknown key(s) %s; it takes "metric" '
               'and "description"' % ', '.join(sorted(unknown)))
  if selection.get('metric') not in SELECTION_METRICS:
    raise _bad(path, '"selection.metric" must be one of %s, got %r'
               % (', '.join(SELECTION_METRICS), selection.get('metric')))


def _check_published(path, published):
  """The published-numbers reference, its file made absolute, or None."""
  if published is None:
    return None
  if set(published) != {'file', 'table'} or not all(
      isinstance(v, str) for v in published.values()):
    raise _bad(path, '"published" must be {"file": <path relative to the '
               'config>, "table": <name in that file>} or null')
  return {'file': str((path.parent / published['file']).resolve()),
          'table': published['table']}


def _check_fragment(config, setting, fragment):
  """ConfigError if an hparams fragment sets what the sweep sets per run."""
  for part in (config.hparams, fragment):
    for item in part.split(','):
      name = item.split('=', 1)[0].strip()
      if name in _SWEPT_HPARAMS:
        raise ConfigError(
            'config %s: setting %r sets %s, which the sweep sets per run; '
            'use "models", "learning_rates" or "trials" instead'
            % (config.path, setting, name))


def expand_runs(config):
  """The runs of a config, in the order settings x models x rates x trials.

  Raises ConfigError if an hparams string is invalid or two runs would share
  a run directory.
  """
  runs = []
  seen = {}
  for setting, fragment in config.settings.items():
    _check_fragment(config, setting, fragment)
    for model in config.models:
      for rate in config.learning_rates:
        for trial in config.trials:
          text = ','.join(p for p in (
              config.hparams, fragment, 'model=%s' % model,
              'learning_rate=%r' % rate, 'trial=%d' % trial) if p)
          try:
            name = parse_hparams(text).run_name()
          except HParamsError as e:
            raise ConfigError('config %s: setting %r, model %s: %s'
                              % (config.path, setting, model, e)) from None
          if name in seen:
            raise ConfigError('config %s: settings %r and %r give the same '
                              'runs; make them differ' %
                              (config.path, seen[name], setting))
          seen[name] = setting
          runs.append(Run(setting, model, rate, trial, text, name,
                          trial if config.seed_from_trial else None))
  return runs
