"""The RELAX toy problem's command line (RELAX draft, section 6.1 and
Figure 1); the problem and its estimators are in rebar.toy_problem.

  python -m rebar.toy [--steps N] [--seed S] [--out DIR] [--no_plots]

Trains θ in L(θ) = E_{b ~ Bernoulli(σ(θ))}[(b - 0.499)²] with REINFORCE,
REBAR and RELAX on shared noise, prints per block a line per estimator
(step, σ(θ), exact loss, gradient log-variance) and a summary, and writes
`toy.json` (all curves) and `toy.png` (with matplotlib; the panels of the
paper's Figure 1). TensorFlow is imported only after the command line is
parsed, so that `--help` and errors answer at once.
"""

import json
import os
import sys

from absl import flags

from rebar import cli
from rebar import quiet
from rebar.rundir import strict_json

DEFAULTS = dict(
    steps=2000,
    seed=0,
    log_every=100,
    learning_rate=0.01,          # Adam on θ, all three estimators
    theta_beta2=0.99,            # its second-moment decay
    cv_learning_rate=0.003,      # Adam on REBAR's (η, log λ) and RELAX's φ
    cv_beta2=0.999,
    init_eta=1.0,                # REBAR's initial η and λ
    init_temperature=0.5,
)

PLOTS_HINT = 'figures need matplotlib: pip install .[plots]'


def define_flags(flag_values):
  """Defines the toy problem's flags on `flag_values`."""
  flags.DEFINE_integer('steps', DEFAULTS['steps'], 'Training steps.',
                       lower_bound=1, flag_values=flag_values)
  flags.DEFINE_integer('seed', DEFAULTS['seed'],
                       'Seed of the noise the three estimators share.',
                       flag_values=flag_values)
  flags.DEFINE_integer('log_every', DEFAULTS['log_every'],
                       'Steps per printed line and per log-variance.',
                       lower_bound=1, flag_values=flag_values)
  flags.DEFINE_string('out', 'toy_out', 'Output directory.',
                      flag_values=flag_values)
  flags.DEFINE_bool('no_plots', False, 'Skip toy.png.',
                    flag_values=flag_values)


COMMAND = cli.Command(
    name='rebar.toy', prog='python -m rebar.toy', synopsis='[flags]',
    description=cli.first_paragraph(__doc__) + ' REINFORCE, REBAR and '
    'RELAX on E[(b - 0.499)²], b ~ Bernoulli(σ(θ)).',
    define_flags=define_flags)


def main(argv=None):
  """Runs the command line `argv` (without the program name; default
  sys.argv's); returns the exit status."""
  args = COMMAND.parse(sys.argv[1:] if argv is None else argv)
  quiet.import_tensorflow()
  # pylint: disable=g-import-not-at-top
  from rebar import toy_figures
  from rebar.toy_problem import relaxations, run, summary_lines
  # pylint: enable=g-import-not-at-top
  results = run(steps=args.steps, seed=args.seed, log_every=args.log_every,
                out=lambda line: print(line, flush=True))
  print()
  for line in summary_lines(results):
    print(line)
  relax_curves = relaxations(results)
  results['relaxations'] = relax_curves
  os.makedirs(args.out, exist_ok=True)
  json_path = os.path.join(args.out, 'toy.json')
  with open(json_path, 'w') as fh:
    json.dump(strict_json(results), fh)
  print('wrote %s' % json_path)
  if not args.no_plots:
    png_path = os.path.join(args.out, 'toy.png')
    if toy_figures.write_figure(results, relax_curves, png_path):
      print('wrote %s' % png_path)
    else:
      print(PLOTS_HINT)
  return 0


if __name__ == '__main__':
  sys.exit(main())
