"""What an estimator costs, and its variance per unit of work.

The cost of an estimator is the median milliseconds per training step of
the model that trains with it alone (SBNARM for ARM, ...), from a results
file of bench/benchmark.py made on this machine. Its efficiency figure is
the product variance × cost (Glynn and Whitt 1992, "The asymptotic
efficiency of simulation estimators"): averaging n estimates divides the
variance by n, so for the same computing time an estimator twice as slow
must halve the variance to break even, and the smaller product wins. Train
records and reports carry it in log space,

  log_variance_x_ms = log variance + log(ms per step).

A benchmark cell's cost applies to a run only if the run matches the cell
on its model, estimator and the hparams that change a step's work
(COST_KEYS: task, layers, units, batch size, samples, RELAX's network, the
categorical sizes); any other run gets no cost rather than a wrong one.
bench/benchmark.py's cells are `cell_hparams`: the SBN models in the three
columns of the original's table, CategoricalVAE once per estimator at the
ARSM setup.

This module imports no TensorFlow (the report uses it).
"""

import json
import math
import pathlib

from rebar.hparams import (CATEGORICAL_ESTIMATORS, HParamsError,
                           parse_hparams, parse_pairs)

# The benchmark's configurations (columns), as hparams over the defaults.
COLUMNS = {'linear1': 'n_layer=1', 'linear2': 'n_layer=2',
           'nonlinear1': 'n_layer=1,nonlinear=true'}
# Hparams a model's cells set beyond their column: the setting in which the
# project compares the model (configs/binary_comparison.json).
CELL_EXTRAS = {
    'SBNReinforceLOO': 'n_samples=2',
    'SBNRelax': ('relax_cv=relax,relax_depth=4,relax_weight_decay=0.001,'
                 'var_lr_scale=1.0'),
}
# The hparams that change the work of a training step (with model and
# estimator).
COST_KEYS = ('task', 'n_layer', 'nonlinear', 'n_hidden', 'n_input',
             'batch_size', 'n_samples', 'sp_multilayer', 'relax_cv',
             'relax_depth', 'n_latent', 'n_categories')
# The hparams of the run whose training step is that of each estimator a
# tracker follows (SBNTrackGradVariances, CategoricalTrackGradVariances),
# alone: they replace the tracker's own.
ESTIMATOR_MODELS = {
    'NVIL': 'model=SBNNVIL', 'SimpleMuProp': 'model=SBNSimpleMuProp',
    'MuProp': 'model=SBNMuProp', 'REBAR': 'model=SBNRebar',
    'DynamicREBAR': 'model=SBNDynamicRebar', 'ARM': 'model=SBNARM',
    'DisARM': 'model=SBNDisARM', 'RELAX': 'model=SBNRelax',
}
ESTIMATOR_MODELS.update({
    name: 'model=CategoricalVAE,estimator=%s%s' % (
        name, ',n_samples=2' if name == 'reinforce_loo' else '')
    for name in CATEGORICAL_ESTIMATORS})
# The benchmark's cells of CategoricalVAE: one per estimator, at the ARSM
# setup (hparams.MODEL_DEFAULTS), keyed 'CategoricalVAE/<estimator>'.
CATEGORICAL_CELLS = {name: ESTIMATOR_MODELS[name]
                     for name in CATEGORICAL_ESTIMATORS}
# The benchmark results committed with the code.
DEFAULT_TABLE = pathlib.Path(__file__).resolve().parents[1] / 'bench' / (
    'results.json')


class CostError(ValueError):
  """A results file that cannot be used (one line naming the fix)."""


def cell_hparams(model, column):
  """The --hparams text of the benchmark cell of `model` in `column` (a
  column of COLUMNS, or for CategoricalVAE an estimator of
  CATEGORICAL_CELLS)."""
  if model == 'CategoricalVAE':
    return CATEGORICAL_CELLS[column]
  return ','.join(p for p in ('model=%s' % model, 'learning_rate=0.0003',
                              COLUMNS[column], CELL_EXTRAS.get(model)) if p)


def log_variance_x_ms(log_variance, ms):
  """log(variance × ms): the work-normalised log variance."""
  return log_variance + math.log(ms)


class CostTable:
  """The cells of one benchmark results file: ms per step by model.

  `cells` maps 'Model/column' to a dict with `median_ms` and, in files
  written since the cells were named here, `hparams` (the cell's --hparams;
  else `cell_hparams` of its key). `source` names the file and its date.
  """

  def __init__(self, cells, source):
    self.source = source
    self._cells = []  # (the cell's shape, median ms, key)
    for key, cell in cells.items():
      model, column = key.split('/', 1)
      text = cell.get('hparams') or (
          cell_hparams(model, column) if column in COLUMNS else None)
      if text is None or 'median_ms' not in cell:
        continue
      try:
        values = parse_hparams(text).values()
      except HParamsError:
        continue  # a cell of a model this code no longer has
      self._cells.append((_shape(values), float(cell['median_ms']), key))

  def ms_per_step(self, values):
    """(median ms per step, cell key) of the cell that matches a run of
    hparams `values` (a dict, HParams.values()) on its model, estimator and
    COST_KEYS; (None, None) if none does."""
    wanted = _shape(values)
    for shape, ms, key in self._cells:
      if shape == wanted:
        return ms, key
    return None, None

  def estimator_ms_per_step(self, values, name):
    """ms_per_step of the run that trains with tracked estimator `name`
    alone (ESTIMATOR_MODELS), the tracker's other hparams `values` kept;
    (None, None) for an estimator with none."""
    if name not in ESTIMATOR_MODELS:
      return None, None
    alone = dict(values, track_extra='', track_relax=False)
    return self.ms_per_step(dict(alone, **parse_pairs(
        ESTIMATOR_MODELS[name])))

  def record_fields(self, values, log_variance):
    """The cost entries of a train record of a run with hparams `values`
    whose log variance is `log_variance`: a float (the run's model's
    estimator) or {estimator name: float} (SBNTrackGradVariances).

    Returns {'ms_per_step', 'log_variance_x_ms', 'cost_cells',
    'cost_source'}, each value a float or a dict by estimator like
    `log_variance`; estimators without a matching cell are left out, and a
    run with none gets {}.
    """
    if isinstance(log_variance, dict):
      by_name = {}
      for name, lv in log_variance.items():
        ms, key = self.estimator_ms_per_step(values, name)
        if ms is not None:
          by_name[name] = (lv, ms, key)
      if not by_name:
        return {}
      return {'ms_per_step': {n: v[1] for n, v in by_name.items()},
              'log_variance_x_ms': {n: log_variance_x_ms(v[0], v[1])
                                    for n, v in by_name.items()},
              'cost_cells': {n: v[2] for n, v in by_name.items()},
              'cost_source': self.source}
    ms, key = self.ms_per_step(values)
    if ms is None:
      return {}
    return {'ms_per_step': ms,
            'log_variance_x_ms': log_variance_x_ms(log_variance, ms),
            'cost_cells': key, 'cost_source': self.source}


# The hparams of RELAX's network r_ρ, which only a model that runs RELAX
# reads.
RELAX_KEYS = ('relax_cv', 'relax_depth')
RELAX_MODELS = ('SBNRelax', 'SBNRebarPerLayer')


def _shape(values):
  """What a cell's cost depends on: model, estimator and COST_KEYS (RELAX's
  only for a model that runs RELAX)."""
  runs_relax = (values['model'] in RELAX_MODELS
                or values['estimator'] == 'relax' or values['track_relax']
                or 'relax' in values['track_extra'].split('+'))
  return (values['model'], values['estimator']) + tuple(
      values[k] if runs_relax or k not in RELAX_KEYS else None
      for k in COST_KEYS)


def load_table(path=None):
  """The CostTable of a benchmark results file (default DEFAULT_TABLE).

  Raises CostError if the file cannot be read or is not such a file.
  """
  path = pathlib.Path(path or DEFAULT_TABLE)
  try:
    with open(path) as f:
      report = json.load(f)
    cells = report['cells']
    if not isinstance(cells, dict):
      raise TypeError
  except OSError as e:
    raise CostError('cannot read the benchmark results %s (%s); run '
                    '`python bench/benchmark.py` or pass another file'
                    % (path, e.strerror or e)) from None
  except (ValueError, KeyError, TypeError):
    raise CostError('%s is not a results file of bench/benchmark.py (no '
                    '"cells"); pass one that is' % path) from None
  if report.get('quick'):
    raise CostError('%s is a --quick benchmark (two-layer cells only, in one '
                    'process); pass the results of a full run' % path)
  date = report.get('date')
  return CostTable(cells, '%s%s' % (path.name, ' (%s)' % date if date else ''))
