"""Shared fixtures: the offline dataset mirror, downloaded once per session."""

import os
import pathlib

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from rebar import data  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
MIRROR = REPO.parent / 'shared' / 'datasets'
MIRROR_URLS = {'mnist_binarized_url': (MIRROR / 'binarized_mnist').as_uri(),
               'mnist_url': (MIRROR / 'mnist').as_uri(),
               'omniglot_url': 'unused'}


def mirror_present():
  return all((MIRROR / 'binarized_mnist' / ('binarized_mnist_%s.amat' % s))
             .is_file() for s in data.SPLITS) and (
                 MIRROR / 'mnist' / 'train-images-idx3-ubyte.gz').is_file()


@pytest.fixture(scope='session')
def mirror_data_dir(tmp_path_factory):
  """binarized_mnist and mnist downloaded from the mirror and cached, once."""
  if not mirror_present():
    pytest.skip('the offline dataset mirror is absent at %s' % MIRROR)
  data_dir = tmp_path_factory.mktemp('mirror_data')
  results = data.download(['binarized_mnist', 'mnist'], data_dir, MIRROR_URLS,
                          progress=False)
  assert results == {'binarized_mnist': None, 'mnist': None}
  return data_dir


def pytest_configure(config):
  config.addinivalue_line(
      'markers', 'slurm: starts a single-node Slurm on localhost (as root; '
      'tests/test_cluster.py); deselect with -m "not slurm"')
