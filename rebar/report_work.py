"""The report's variance per unit of work: each estimator's gradient
variance, its cost, and their product (rebar.costs).

Per setting, at each model's selected learning rate (and grid point), one
row per log-variance curve of `rebar.report_numbers.curves`: the model's own
estimator, or each estimator SBNTrackGradVariances follows. The mean log
variance is over the curve's epoch records (the log of the geometric mean
variance), the cost is the ms per step of the benchmark cell that matches
the run (`CostTable.ms_per_step`), and log(variance × ms) their sum. The
relative columns divide by the setting's smallest variance and smallest
product, so the best estimator reads 1.
"""

import math

from rebar import costs
from rebar.config import model_label
from rebar.hparams import parse_hparams
from rebar.report_numbers import curves
from rebar.report_numbers import selected_groups


def curve_cost(cost_table, group, curve_name):
  """(ms per step, cell key) of the estimator of the log-variance curve
  `curve_name` ('log_variance' or 'log_variance/<estimator>') of `group`;
  (None, None) without a table or a matching cell."""
  if cost_table is None or not group.get('hparams'):
    return None, None
  values = parse_hparams(group['hparams']).values()
  if '/' in curve_name:
    return cost_table.estimator_ms_per_step(values,
                                            curve_name.split('/', 1)[1])
  return cost_table.ms_per_step(values)


def work_rows(config, groups, chosen, cost_table):
  """The rows of the variance-per-work table (see the module docstring):
  dicts with setting, model, estimator, epochs, mean_log_variance,
  ms_per_step, cost_cell, log_variance_x_ms, variance_relative and
  work_relative (None where no cost applies)."""
  rows = []
  for setting in config.settings:
    in_setting = []
    for model, choice, group in selected_groups(config, groups, chosen,
                                                setting):
      for name, (_, values) in sorted(curves(group['records']).items()):
        if not name.startswith('log_variance'):
          continue
        ms, cell = curve_cost(cost_table, group, name)
        mean = sum(values) / len(values)
        in_setting.append({
            'setting': setting, 'model': model_label(model, choice.grid),
            'estimator': name.split('/', 1)[1] if '/' in name else model,
            'epochs': len(values), 'mean_log_variance': mean,
            'ms_per_step': ms, 'cost_cell': cell,
            'log_variance_x_ms': (costs.log_variance_x_ms(mean, ms)
                                  if ms is not None else None)})
    _relative(in_setting, 'mean_log_variance', 'variance_relative')
    _relative(in_setting, 'log_variance_x_ms', 'work_relative')
    rows += in_setting
  return rows


def _relative(rows, log_key, out_key):
  """Sets rows' `out_key` to exp(log value - the smallest log value)."""
  logs = [r[log_key] for r in rows if r[log_key] is not None]
  for r in rows:
    r[out_key] = (math.exp(r[log_key] - min(logs))
                  if r[log_key] is not None else None)


def work_markdown(rows, cost_table, cost_problem=None):
  """The report.md section of the variance-per-work table."""
  lines = ['## Variance per unit of work', '']
  if cost_table is None:
    lines += ['No costs: %s.' % (cost_problem or 'no benchmark results'), '']
  else:
    lines += ['Cost: median ms per training step of the estimator\'s model '
              'alone, from the benchmark results %s (cells as in '
              '`rebar/costs.py`; a run that matches no cell gets none). Mean '
              'log variance: over the epoch records. Work-normalised '
              'variance: variance × ms (Glynn and Whitt 1992); the relative '
              'columns divide by the setting\'s smallest, so the best '
              'estimator reads 1.00.' % cost_table.source, '']
  lines += ['| setting | model | estimator | epochs | mean log variance | '
            'ms/step | log(variance × ms) | variance rel. | '
            'variance × ms rel. |', '|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append('| %s | %s | %s | %d | %.3f | %s | %s | %s | %s |' % (
        r['setting'], r['model'], r['estimator'], r['epochs'],
        r['mean_log_variance'], _maybe('%.2f', r['ms_per_step']),
        _maybe('%.3f', r['log_variance_x_ms']),
        _maybe('%.2f', r['variance_relative']),
        _maybe('%.2f', r['work_relative'])))
  lines.append('')
  return lines


def _maybe(fmt, value):
  return '—' if value is None else fmt % value
