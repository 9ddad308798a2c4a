"""Helpers of the tests that run rebar_train in a working directory."""

import pathlib


def run_dir_of(working_dir):
  """The working directory's one run directory (beside `tensorboard`)."""
  (run_dir,) = [p for p in pathlib.Path(working_dir).iterdir()
                if p.name != 'tensorboard']
  return run_dir
