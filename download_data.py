r"""Downloads, verifies and caches the datasets (reference section 2).

  python download_data.py --datasets=mnist,binarized_mnist,omniglot \
      --data_dir=~/.rebar/data

Those three, reference section 2's, are the default; `mnist_threshold` (the
ARSM paper's MNIST thresholded at 0.5) is fetched when named.

Each URL flag takes an http(s):// URL, a file:// URL or a filesystem path,
e.g. `--mnist_binarized_url=/path/to/mirror/binarized_mnist` for an offline
mirror laid out like the public URLs, or a comma-separated list of them,
tried in order (docs/data.md lists the defaults). Prints a summary; exits
with status 1 if any dataset failed (2 for unknown dataset names).
"""

import os

from absl import app
from absl import flags

from rebar import cli
from rebar import data

cli.define_data_flags()
flags.DEFINE_list('datasets', list(data.REFERENCE_DATASETS),
                  f'Datasets to fetch, among {", ".join(data.DATASETS)}.')

FLAGS = flags.FLAGS
NAME = 'download_data.py'  # of its error lines


def main(argv):
  if len(argv) > 1:
    cli.fail(NAME, f'unexpected arguments: {" ".join(argv[1:])} (flags take '
             f'the form --name=value)')
  names = list(dict.fromkeys(FLAGS.datasets))  # Drop repeats, keep order.
  unknown = [n for n in names if n not in data.DATASETS]
  if unknown or not names:
    cli.fail(NAME, f'unknown dataset(s) {", ".join(unknown) or "(none given)"}'
             f'; --datasets takes a comma-separated list among '
             f'{", ".join(data.DATASETS)}')
  data_dir = os.path.expanduser(FLAGS.data_dir)
  results = data.download(names, data_dir, cli.urls_from_flags(FLAGS))
  print(f'Datasets in {data_dir}:')
  for name, error in results.items():
    print(f'  {name}: {"ok" if error is None else "FAILED: " + error}')
  return 1 if any(error is not None for error in results.values()) else 0


def run():
  """Console-script entry point (and the script's); the help is rebar.cli's,
  which lists the flags also for the installed command."""
  app.run(main, flags_parser=cli.app_flags_parser(NAME, __doc__))


if __name__ == '__main__':
  run()
