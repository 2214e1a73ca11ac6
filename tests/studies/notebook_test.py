"""notebooks/seed_study.ipynb runs end to end (nbclient), on tiny data."""

import os

import pytest

from tests import helpers
from tests.helpers import ROOT

nbclient = pytest.importorskip(
    'nbclient', reason='nbclient is not installed: pip install -r '
    'requirements.txt')
nbformat = pytest.importorskip('nbformat')


def test_seed_study_notebook_runs(learnable_data_dir, tmp_path):
  notebook = nbformat.read(os.path.join(ROOT, 'notebooks',
                                        'seed_study.ipynb'), as_version=4)
  params = [c for c in notebook.cells
            if 'parameters' in c.get('metadata', {}).get('tags', [])]
  assert len(params) == 1
  workdir = tmp_path / 'runs'
  params[0].source = '\n'.join([
      f'DATASET = {helpers.LEARNABLE!r}',
      f'DATA_DIR = {str(learnable_data_dir)!r}',
      "TRAIN_SPLIT = 'train'", "EVAL_SPLIT = 'test'",
      'BATCH_SIZE = 8', 'NUM_EPOCHS = 1', f'WORKDIR = {str(workdir)!r}'])
  client = nbclient.NotebookClient(
      notebook, timeout=600, kernel_name='python3',
      resources={'metadata': {'path': os.path.join(ROOT, 'notebooks')}})
  client.execute()  # Raises CellExecutionError, with the cell, on an error.

  outputs = [o for c in notebook.cells if c.cell_type == 'code'
             for o in c.get('outputs', [])]
  text = ''.join(o.get('text', '') for o in outputs)
  assert 'wbn norm: batch' in text and 'wobn norm: none' in text
  # The seed's layer shapes: 32x32 RGB in, 10 logits out.
  assert '(8, 10)' in text
  assert 'wbn: 8 steps, final eval accuracy' in text
  for mode in ('eval', 'eval_precise', 'eval_batch'):
    assert f"'{mode}':" in text.split('wbn: 8 steps')[1], mode
  assert any('image/png' in o.get('data', {}) for o in outputs)
  assert (workdir / 'wbn' / 'config.json').is_file()
  assert (workdir / 'wobn' / 'checkpoints').is_dir()
