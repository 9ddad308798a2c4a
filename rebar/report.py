"""Tables (and figures) of a config's runs, beside the published numbers.

  python -m rebar.report configs/generative_mnist.json --working_dir=/data/runs \
      --out=/data/report

Reads the run directories the config names (`working_dir/<hparams name>`,
their `metrics.jsonl`) and writes `report.md`, `report.csv` and, when
matplotlib is installed (`pip install .[plots]`), one PNG per setting.

Per run (one trial):
  best training ELBO   the highest epoch-mean training ELBO over its train
                       records (the paper's measure);
  best validation      the validation record with the highest 100-sample
                       bound, and the test record at the same step.
Per setting, model and learning rate: mean and standard error (sample
standard deviation / sqrt(n)) of those over the trials that have them.
Per setting and model, one learning rate is selected by the config's rule
(`selection.metric`: the highest mean over trials of each trial's best
`valid_iw_bound`, or of its best `train_elbo`).

Runs still going are read as they stand: the table says how many trials
have data and how far they got. This module reads only JSON: it does not
import TensorFlow, so it runs anywhere the files are.

rebar.report_numbers computes the numbers, rebar.report_tables writes the
tables and rebar.report_figures the figures; this module re-exports their
public names, and puts them together (`make_report`, `main`).
"""

import os
import sys

from absl import flags

from rebar import cli
from rebar import costs
from rebar.config import ConfigError
from rebar.config import load_config
from rebar.config import require_program
# Re-exported: these lived here before the report was split in three.
# pylint: disable=unused-import,g-importing-member
from rebar.report_figures import write_figures
from rebar.report_numbers import aggregate
from rebar.report_numbers import checkpoint_comparison
from rebar.report_numbers import collect
from rebar.report_numbers import curves
from rebar.report_numbers import load_published
from rebar.report_numbers import mean_se
from rebar.report_numbers import read_metrics
from rebar.report_numbers import ReportError
from rebar.report_numbers import select
from rebar.report_numbers import summarize_run
from rebar.report_tables import CSV_COLUMNS
from rebar.report_tables import markdown
from rebar.report_tables import table_rows
from rebar.report_tables import write_csv
from rebar.report_work import work_markdown
from rebar.report_work import work_rows
# pylint: enable=unused-import,g-importing-member

PLOTS_HINT = 'figures skipped: `pip install .[plots]` (matplotlib) gives them'


def make_report(config, working_dir, out_dir, figures=True, cost_table=None,
                cost_problem=None):
  """Writes report.md, report.csv (and figures) to `out_dir`.

  `cost_table` (a rebar.costs.CostTable) gives the estimators' costs for the
  variance-per-work table and figure panel; without one, the table says
  why: `cost_problem`.

  Returns (rows of report.csv, list of figure files or None without
  matplotlib).
  """
  require_program(config, 'train')
  working_dir = os.path.abspath(working_dir)
  if not os.path.isdir(working_dir):
    raise ReportError('working dir %s does not exist; pass the --working_dir '
                      'the sweep used' % working_dir)
  published, sources, checkpoints = load_published(config)
  collected = collect(config, working_dir)
  groups = aggregate(config, collected)
  chosen = select(config, groups)
  rows = table_rows(config, groups, chosen, published)
  try:
    os.makedirs(out_dir, exist_ok=True)
    written = (write_figures(config, groups, chosen, out_dir, cost_table)
               if figures else [])
    write_csv(os.path.join(out_dir, 'report.csv'), rows)
    with open(os.path.join(out_dir, 'report.md'), 'w') as f:
      f.write(markdown(config, working_dir, groups, chosen, published,
                       sources, checkpoint_comparison(config, collected,
                                                      checkpoints),
                       written or [],
                       work_markdown(work_rows(config, groups, chosen,
                                               cost_table),
                                     cost_table, cost_problem)))
  except OSError as e:
    raise ReportError('cannot write the report to %s (%s); pass a writable '
                      '--out' % (out_dir, e.strerror or e)) from None
  return rows, written


def load_costs(flag):
  """(CostTable or None, why none) of the --cost_table value `flag`.

  A default file that is missing or unusable leaves the costs out, with the
  reason in the report; a file the user named must work.
  """
  if flag == 'none':
    return None, '--cost_table=none'
  try:
    return costs.load_table(flag or None), None
  except costs.CostError as e:
    if flag:
      raise ReportError('--cost_table: %s' % e) from None
    return None, str(e)


def define_flags(flag_values):
  """Defines the report's flags on `flag_values`."""
  flags.DEFINE_string('working_dir', None, 'The sweep\'s working dir.',
                      flag_values=flag_values)
  flags.DEFINE_string('out', None,
                      'Output directory (default: WORKING_DIR/report).',
                      flag_values=flag_values)
  flags.DEFINE_bool('no_figures', False, 'Skip the PNG figures.',
                    flag_values=flag_values)
  flags.DEFINE_string('cost_table', '',
                      'Benchmark results (bench/benchmark.py\'s JSON) that '
                      'give the estimators\' costs (rebar/costs.py); empty: '
                      'the repository\'s bench/results.json; none: no '
                      'variance-per-work figures.', flag_values=flag_values)


COMMAND = cli.Command(
    name='rebar.report', prog='python -m rebar.report',
    synopsis='CONFIG --working_dir=DIR [flags]',
    description=cli.first_paragraph(__doc__) + ' Writes report.md, '
    'report.csv and figures for the runs of a config.',
    define_flags=define_flags,
    arguments=(('CONFIG', 'the config JSON the sweep ran'),),
    required=('working_dir',))


def main(argv=None):
  """Runs the command line `argv` (without the program name; default
  sys.argv's); returns the exit status."""
  args = COMMAND.parse(sys.argv[1:] if argv is None else argv)
  out_dir = args.out or os.path.join(args.working_dir, 'report')
  try:
    config = load_config(args.config)
    cost_table, cost_problem = load_costs(args.cost_table)
    rows, written = make_report(config, args.working_dir, out_dir,
                                figures=not args.no_figures,
                                cost_table=cost_table,
                                cost_problem=cost_problem)
  except (ConfigError, ReportError) as e:
    sys.stderr.write('rebar.report: error: %s\n' % e)
    return 2
  with_data = sum(1 for r in rows if r['trials_with_data'])
  print('%d of %d setting/model/rate groups have data; wrote %s and %s'
        % (with_data, len(rows), os.path.join(out_dir, 'report.md'),
           os.path.join(out_dir, 'report.csv')))
  print_figures(written, out_dir)
  return 0


def print_figures(written, out_dir):
  """The line saying which figures a report wrote (`written`: (setting,
  file name) pairs; None where matplotlib is missing)."""
  if written is None:
    print(PLOTS_HINT)
  elif written:
    print('figures: %s' % ', '.join(os.path.join(out_dir, n)
                                    for _, n in written))


if __name__ == '__main__':
  sys.exit(main())
