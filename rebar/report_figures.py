"""The report's figures: one PNG per setting, when matplotlib is installed.

Each shows, at the learning rate (and grid point, for a model with a grid
of its own) selected for each model, the training ELBO and the gradient
log-variance against steps, averaged over trials, and, where a benchmark
cell gives the estimator's cost, log(variance × ms) (rebar.report_work).
"""

import math
import os

from rebar.config import model_label
from rebar.report_numbers import curves
from rebar.report_numbers import selected_groups
from rebar.report_work import curve_cost


def pyplot():
  """matplotlib.pyplot on the file-only Agg backend, or None where
  matplotlib is not installed (it is optional: `pip install .[plots]`)."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return plt


# A curve of this many points or fewer is drawn with markers: a run with one
# epoch record is a single point, which a line alone does not show.
MARKERS_UP_TO = 20


def plot_style(n_points):
  """matplotlib keyword arguments of a curve of `n_points` points."""
  return {'marker': 'o', 'markersize': 4} if n_points <= MARKERS_UP_TO else {}


PANELS = ('elbo', 'variance', 'work')


def figure_series(config, groups, chosen, setting, cost_table=None):
  """The curves of one setting's figure: [(panel, label, steps, values)],
  panel one of PANELS, at each model's selected learning rate (and grid
  point), averaged over trials; 'work' curves (log variance + log ms) only
  with a `cost_table` cell for the estimator."""
  series = []
  for model, choice, group in selected_groups(config, groups, chosen,
                                              setting):
    label_model = model_label(model, choice.grid)
    for name, (steps, values) in sorted(curves(group['records']).items()):
      label = ('%s, lr %g' % (label_model, choice.rate) if '/' not in name
               else '%s: %s' % (label_model, name.split('/', 1)[1]))
      if name == 'elbo':
        series.append(('elbo', label, steps, values))
        continue
      series.append(('variance', label, steps, values))
      ms, _ = curve_cost(cost_table, group, name)
      if ms is not None:
        series.append(('work', label, steps,
                       [v + math.log(ms) for v in values]))
  return series


def write_figures(config, groups, chosen, out_dir, cost_table=None):
  """One PNG per setting; returns [(setting, file name)], or None without
  matplotlib."""
  plt = pyplot()
  if plt is None:
    return None
  written = []
  for setting in config.settings:
    series = figure_series(config, groups, chosen, setting, cost_table)
    panels = [p for p in PANELS if p != 'work' or
              any(s[0] == 'work' for s in series)]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5))
    axes = dict(zip(panels, axes))
    ax_elbo, ax_var = axes['elbo'], axes['variance']
    lowest_late = []
    for panel, label, steps, values in series:
      ax = axes[panel]
      ax.plot(steps, values, label=label, **plot_style(len(steps)))
      if panel == 'elbo' and len(values) > 4:
        # The first epochs are far below the rest; keep them out of view.
        lowest_late.append(min(values[len(values) // 10:]))
    if lowest_late:
      bottom = min(lowest_late)
      top = ax_elbo.get_ylim()[1]
      ax_elbo.set_ylim(bottom - 0.05 * (top - bottom), top)
    ax_elbo.set(title='%s: training ELBO' % setting, xlabel='step',
                ylabel='epoch-mean ELBO (nats)')
    ax_var.set(title='%s: gradient log-variance' % setting, xlabel='step',
               ylabel='log variance')
    if 'work' in axes:
      axes['work'].set(title='%s: variance per unit of work' % setting,
                       xlabel='step', ylabel='log(variance × ms per step)')
    for ax in axes.values():
      ax.grid(alpha=0.3)
      if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize='small')
    fig.tight_layout()
    name = 'fig_%s.png' % setting
    fig.savefig(os.path.join(out_dir, name), dpi=100)
    plt.close(fig)
    written.append((setting, name))
  return written
