"""The config of a sweep: what to run, checked, and the runs it expands to.

A config is a JSON file naming settings (hparams fragments), models,
learning rates, trials, optionally a model's own grid of further hparams
(`model_grids`), and how the report selects a learning rate (and grid
point); its format is described in docs/reproduction.md ("Config format").
`load_config` reads and checks one, raising ConfigError (one line naming the
fix) for anything it cannot use; `expand_runs` lists its runs. Both
`rebar.sweep` and the reports use them, so that all see the same runs.

Its `program` (PROGRAMS) says what a run is: `train` (the default) an SBN
run of rebar_train.py, `rl` a policy-gradient run of `python -m rebar.rl`,
whose "models" are methods and whose `max_steps` counts episodes. The
program decides how runs are named, which hparams a grid may sweep, which
flags and selection metrics a config may name; everything else is shared.
"""

import dataclasses
import itertools
import json
import os
import pathlib
from typing import Callable

from rebar.hparams import HParams, HParamsError, parse_hparams
from rebar.rl import settings as rl_settings

# Config keys: name -> (required, accepted types, meaning for error messages).
_CONFIG_KEYS = {
    'program': (False, (str,), '"train" (the default) or "rl"'),
    'name': (False, (str,), 'a short name'),
    'description': (False, (str,), 'free text'),
    'source': (False, (str, list), 'provenance, free text'),
    'notes': (False, (str, list), 'free text'),
    'hparams': (False, (str,), 'an hparams fragment applied to every run'),
    'settings': (True, (dict,), 'setting name -> hparams fragment'),
    'models': (True, (list,), 'a list of model names'),
    'learning_rates': (True, (list,), 'a list of positive numbers'),
    'model_grids': (False, (dict,),
                    'model name -> {hparam: [values]}, e.g. {"SBNGumbel": '
                    '{"temperature": [0.1, 0.5]}}'),
    'trials': (True, (int, list), 'a count N (trials 1..N) or a list of ints'),
    'seed_from_trial': (False, (bool,),
                        'true: --seed=<trial>; false: rebar_train draws one'),
    'max_steps': (True, (int,), 'a positive int'),
    'eval_freq': (True, (int,), 'evaluation interval in epochs'),
    'flags': (False, (dict,), 'extra flags of the runs, name -> value'),
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
# The same for `python -m rebar.rl` (which sets hparams, working_dir,
# max_episodes, seed and threads from the sweep), with the least value each
# int flag takes; and its one metric, episodes to solve (lowest wins).
RL_FLAGS = {'log_every': int, 'stop_when_solved': bool,
            'checkpoint_secs': int}
RL_FLAG_MINIMA = {'log_every': 1, 'checkpoint_secs': 0}
RL_SELECTION_METRICS = ('episodes_to_solve',)


@dataclasses.dataclass(frozen=True)
class Program:
  """What a config's `program` key selects (PROGRAMS holds each).

  Attributes:
    name: the key's value.
    run_name: hparams text -> the run directory name the program gives it;
      raises HParamsError (one line) for text it cannot run.
    model_hparam: the hparam a config's "models" set ('model', 'method').
    hparam_types: hparam -> type (its default's), for `model_grids`.
    flags: extra flags a config may set, name -> type.
    flag_minima: int flag -> its least value (flags absent: any).
    metrics: the selection metrics.
    eval_freq: whether its runs are evaluated (else "eval_freq" may be left
      out, and must be 0 where given).
    datasets: whether its runs read the datasets the sweep fetches first.
    report: the command that reports its configs.
  """
  name: str
  run_name: Callable[[str], str]
  model_hparam: str
  hparam_types: dict
  flags: dict
  flag_minima: dict
  metrics: tuple
  eval_freq: bool
  datasets: bool
  report: str

  @property
  def swept(self):
    """Hparams the sweep sets per run; a setting or fragment must not."""
    return (self.model_hparam, 'learning_rate', 'trial')


PROGRAMS = {
    'train': Program(
        name='train', run_name=lambda text: parse_hparams(text).run_name(),
        model_hparam='model',
        hparam_types={f.name: type(f.default)
                      for f in dataclasses.fields(HParams)},
        flags=EXTRA_FLAGS, flag_minima={}, metrics=SELECTION_METRICS,
        eval_freq=True, datasets=True, report='rebar.report'),
    'rl': Program(
        name='rl',
        run_name=lambda text: rl_settings.parse_settings(text).run_name(),
        model_hparam='method',
        hparam_types={f.name: type(f.default)
                      for f in dataclasses.fields(rl_settings.RLSettings)},
        flags=RL_FLAGS, flag_minima=RL_FLAG_MINIMA,
        metrics=RL_SELECTION_METRICS, eval_freq=False, datasets=False,
        report='rebar.rl.report'),
}
# How a grid value of each type is written in JSON (error messages).
_JSON_KINDS = {float: 'a JSON number', int: 'a JSON integer',
               bool: 'true or false', str: 'a JSON string'}


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
  # model -> {hparam: [values]}, in the file's order; models without a grid
  # are absent.
  model_grids: dict = dataclasses.field(default_factory=dict)
  program: str = 'train'  # a key of PROGRAMS

  @property
  def program_spec(self):
    """The Program of `program`."""
    return PROGRAMS[self.program]


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep (a rebar_train or rebar.rl invocation)."""
  setting: str
  model: str  # the model, or for program rl the method
  learning_rate: float
  trial: int
  hparams: str  # the --hparams string
  name: str  # the run directory name, as the program computes it
  seed: int  # None: drawn by the run
  # The point of the model's own grid: ((hparam, value), ...); () if none.
  grid: tuple = ()

  def run_dir(self, working_dir):
    return os.path.join(working_dir, self.name)

  @property
  def label(self):
    """The model and its grid point, e.g. 'SBNGumbel (temperature=0.1)'."""
    return model_label(self.model, self.grid)


def hparam_text(value):
  """A grid value as an hparams string writes it (floats as repr)."""
  if isinstance(value, bool):
    return 'true' if value else 'false'
  if isinstance(value, float):
    return repr(value)
  return str(value)


def grid_text(grid):
  """A grid point as hparams text, e.g. 'temperature=0.1'; '' for ()."""
  return ','.join('%s=%s' % (name, hparam_text(v)) for name, v in grid)


def model_label(model, grid=()):
  """'SBNGumbel (temperature=0.1)', or just the model without a grid point."""
  if not grid:
    return model
  return '%s (%s)' % (model, ', '.join('%s=%s' % (name, hparam_text(v))
                                       for name, v in grid))


def grid_points(config, model):
  """The points of a model's own grid, in order; [()] for a model without.

  A point is a tuple of (hparam, value) pairs in the order the config lists
  the hparams; the points are their product, the last hparam varying
  fastest.
  """
  grid = config.model_grids.get(model)
  if not grid:
    return [()]
  names = list(grid)
  return [tuple(zip(names, values))
          for values in itertools.product(*(grid[n] for n in names))]


def load_config(path):
  """Reads and checks a config JSON file; raises ConfigError (one line)."""
  path = pathlib.Path(path)
  raw = _read_json(path)
  # The checks run in this order, so that a config with several mistakes
  # is always reported by the same one.
  program = _check_keys(path, raw)
  settings, models, rates, trials = _check_grid(path, raw)
  model_grids = _check_model_grids(path, raw.get('model_grids', {}), models,
                                   program)
  _check_steps(path, raw, program)
  extra = _check_flags(path, raw.get('flags', {}), program)
  _check_selection(path, raw['selection'], program)
  published = _check_published(path, raw.get('published'))
  config = Config(path=path.resolve(), name=raw.get('name', path.stem),
                  hparams=raw.get('hparams', ''), settings=dict(settings),
                  models=list(models), learning_rates=rates, trials=trials,
                  seed_from_trial=raw.get('seed_from_trial', True),
                  max_steps=raw['max_steps'],
                  eval_freq=raw.get('eval_freq', 0),
                  flags=dict(extra), selection=dict(raw['selection']),
                  published=published, raw=raw, model_grids=model_grids,
                  program=program.name)
  expand_runs(config)  # checks every hparams string now, not mid-sweep
  return config


def require_program(config, name):
  """ConfigError unless `config` is of program `name` (a report reads the
  runs of one program only)."""
  if config.program != name:
    raise ConfigError('config %s is of program "%s"; report it with `python '
                      '-m %s`' % (config.path, config.program,
                                  config.program_spec.report))


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
  """Every key known, every required one there, each of its type; returns
  the config's Program."""
  if not isinstance(raw, dict):
    raise _bad(path, 'the top level must be a JSON object; see '
               'docs/reproduction.md "Config format" for the format')
  for key in raw:
    if key not in _CONFIG_KEYS:
      raise _bad(path, 'unknown key %r; valid keys: %s'
                 % (key, ', '.join(_CONFIG_KEYS)))
  name = raw.get('program', 'train')
  if name not in PROGRAMS:
    raise _bad(path, '"program" must be one of %s, got %s'
               % (', '.join('"%s"' % p for p in PROGRAMS), json.dumps(name)))
  program = PROGRAMS[name]
  for key, (required, types, meaning) in _CONFIG_KEYS.items():
    if key not in raw:
      if required and (key != 'eval_freq' or program.eval_freq):
        raise _bad(path, 'missing key %r (%s); add it' % (key, meaning))
      continue
    value = raw[key]
    # bool is an int in Python; only `seed_from_trial` may be one.
    if not isinstance(value, types) or (
        isinstance(value, bool) and bool not in types):
      raise _bad(path, '%r must be %s, got %r' % (key, meaning, value))
  return program


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


def _check_model_grids(path, model_grids, models, program):
  """{model: {hparam: [typed values]}}: each model's own grid, checked
  against the hparams of `program`."""
  swept, types = program.swept, program.hparam_types
  checked = {}
  for model, grid in model_grids.items():
    where = '"model_grids" %s' % model
    if model not in models:
      raise _bad(path, '%s: %s is not in "models"; add it there or remove '
                 'its grid' % (where, model))
    if not isinstance(grid, dict) or not grid:
      raise _bad(path, '%s must map hparam names to lists of values, e.g. '
                 '{"temperature": [0.1, 0.5]}' % where)
    checked[model] = {}
    for name, values in grid.items():
      if name in swept:
        raise _bad(path, '%s sweeps %s, which the sweep sets per run; use '
                   '"models", "learning_rates" or "trials" instead'
                   % (where, name))
      if name not in types:
        raise _bad(path, '%s: unknown hparam %r; valid names: %s'
                   % (where, name, ', '.join(
                       n for n in types if n not in swept)))
      checked[model][name] = _check_grid_values(
          path, '%s %s' % (where, name), types[name], values)
  return checked


def _check_grid_values(path, where, kind, values):
  """The values of one grid hparam, each of the hparam's type, distinct."""
  if not isinstance(values, list) or not values:
    raise _bad(path, '%s must be a non-empty list of values, e.g. [0.1, 0.5]'
               % where)
  typed = []
  for value in values:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is float and number:
      value = float(value)  # JSON 1 for 1.0
    if not (isinstance(value, bool) if kind is bool else
            isinstance(value, kind) and not isinstance(value, bool)):
      raise _bad(path, '%s takes %s values, got %s; write each value as %s'
                 % (where, kind.__name__, json.dumps(value),
                    _JSON_KINDS[kind]))
    if kind is str and (',' in value or '=' in value):
      raise _bad(path, '%s: value %s holds "," or "=", which an hparams '
                 'string cannot; remove them' % (where, json.dumps(value)))
    if value in typed:
      raise _bad(path, '%s lists %s twice; list each value once'
                 % (where, hparam_text(value)))
    typed.append(value)
  return typed


def _check_steps(path, raw, program):
  if raw['max_steps'] <= 0:
    raise _bad(path, '"max_steps" must be positive')
  if not program.eval_freq:
    # Its runs are never evaluated; a number here would promise otherwise.
    if raw.get('eval_freq', 0) != 0:
      raise _bad(path, '"eval_freq" does not apply to program "%s" (its runs '
                 'are not evaluated); remove it' % program.name)
  elif raw['eval_freq'] < 0:
    raise _bad(path, '"eval_freq" must be 0 (never) or a number of epochs')


def _check_flags(path, extra, program):
  """The extra flags of the runs, each one the sweep passes on, typed."""
  for flag, value in extra.items():
    if flag not in program.flags:
      raise _bad(path, '"flags" has %r, which the sweep does not pass on; '
                 'allowed: %s (the sweep sets the others itself)'
                 % (flag, ', '.join(program.flags)))
    kind = program.flags[flag]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
      raise _bad(path, 'flag %r takes a%s %s, got %r'
                 % (flag, 'n' if kind is int else '', kind.__name__, value))
    if flag in program.flag_minima and value < program.flag_minima[flag]:
      raise _bad(path, 'flag %r must be at least %d, got %d'
                 % (flag, program.flag_minima[flag], value))
  return extra


def _check_selection(path, selection, program):
  unknown = set(selection) - {'metric', 'description'}
  if unknown:
    raise _bad(path, '"selection" has unknown key(s) %s; it takes "metric" '
               'and "description"' % ', '.join(sorted(unknown)))
  if selection.get('metric') not in program.metrics:
    raise _bad(path, '"selection.metric" must be one of %s, got %r'
               % (', '.join(program.metrics), selection.get('metric')))


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


def _fragment_names(fragment):
  """The hparam names an hparams fragment sets."""
  return [item.split('=', 1)[0].strip() for item in fragment.split(',')
          if item.strip()]


def _check_fragment(config, setting, fragment):
  """ConfigError if an hparams fragment sets what the sweep sets per run."""
  for part in (config.hparams, fragment):
    for name in _fragment_names(part):
      if name in config.program_spec.swept:
        raise ConfigError(
            'config %s: setting %r sets %s, which the sweep sets per run; '
            'use "models", "learning_rates" or "trials" instead'
            % (config.path, setting, name))


def _check_grid_overlap(config, setting, fragment):
  """ConfigError if a model's grid sweeps an hparam a fragment sets."""
  for model, grid in config.model_grids.items():
    for part, owner in ((config.hparams, 'the common "hparams"'),
                        (fragment, 'setting %r' % setting)):
      both = [name for name in grid if name in _fragment_names(part)]
      if both:
        raise ConfigError(
            'config %s: "model_grids" %s sweeps %s, which %s also sets; set '
            'it in one place only' % (config.path, model, both[0], owner))


def expand_runs(config):
  """The runs of a config, in the order settings x models x rates x the
  model's own grid points (`grid_points`) x trials.

  Without `model_grids` that is settings x models x rates x trials, and the
  hparams strings are those of a config without the key.

  Raises ConfigError if an hparams string is invalid, a model's grid sweeps
  an hparam a fragment sets, or two runs would share a run directory.
  """
  program = config.program_spec
  runs = []
  seen = {}
  for setting, fragment in config.settings.items():
    _check_fragment(config, setting, fragment)
    _check_grid_overlap(config, setting, fragment)
    for model in config.models:
      for rate in config.learning_rates:
        for grid in grid_points(config, model):
          for trial in config.trials:
            text = ','.join(p for p in (
                config.hparams, fragment,
                '%s=%s' % (program.model_hparam, model),
                'learning_rate=%r' % rate, grid_text(grid),
                'trial=%d' % trial) if p)
            try:
              name = program.run_name(text)
            except HParamsError as e:
              raise ConfigError('config %s: setting %r, %s %s: %s'
                                % (config.path, setting, program.model_hparam,
                                   model_label(model, grid), e)) from None
            if name in seen:
              raise ConfigError('config %s: settings %r and %r give the same '
                                'runs; make them differ' %
                                (config.path, seen[name], setting))
            seen[name] = setting
            runs.append(Run(setting, model, rate, trial, text, name,
                            trial if config.seed_from_trial else None, grid))
  return runs
