"""The report on runs the tests make, and its arithmetic on known curves."""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bn_study.studies import figures
from bn_study.studies import report
from bn_study.studies import runs as runs_lib
from bn_study.studies import values
from tests.helpers import ROOT



def test_smoothing_is_tensorboards_debiased_ema():
  np.testing.assert_allclose(figures.smooth([3.0] * 5, 0.6), [3.0] * 5)
  np.testing.assert_allclose(figures.smooth([1.0, 2.0, 3.0], 0.0), [1, 2, 3])
  # Two points, weight w: (w(1-w)a + (1-w)b) / (1 - w^2).
  w = 0.6
  expected = (w * (1 - w) * 1.0 + (1 - w) * 0.0) / (1 - w * w)
  assert figures.smooth([1.0, 0.0], w)[1] == pytest.approx(expected)
  with pytest.raises(ValueError):
    figures.smooth([1.0], 1.0)


def test_steps_to_threshold_on_a_known_curve():
  steps = np.arange(2, 402, 2)  # Logged every 2 steps, as the seed did.
  loss = 3.0 * 0.99 ** steps
  for threshold in (1.0, 0.5, 0.2):
    first = math.ceil(math.log(threshold / 3.0) / math.log(0.99))
    first += first % 2  # The first logged step at or after it.
    assert figures.steps_to(steps, loss, threshold) == first
  assert figures.steps_to(steps, loss, 0.01) is None
  # Smoothing lags a falling curve: the smoothed loss crosses later.
  smoothed = figures.smooth(loss, 0.6)
  assert (figures.steps_to(steps, smoothed, 0.2) >
          figures.steps_to(steps, loss, 0.2))


def test_mean_std_and_formatting():
  assert values.mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)), 2)
  assert values.fmt_mean_std([0.5]) == '0.500 ± 0.000 (n=1)'
  assert values.fmt_steps([70, 80, None]) == '75 ± 7 (2/3)'
  assert values.fmt_steps([None, None]) == 'not reached (0/2)'
  assert values.fmt_seeds([0.8, 0.82, 0.81]) == '0.81 ± 0.01 (n=3)'
  assert values.fmt_seeds([0.5]) == '0.5 (n=1)' and values.fmt_seeds([]) == '-'
  # Names, labels and --config.FIELD= values spell a value alike.
  assert values.config_value((16, [32, 'a'])) == '(16,(32,a))'
  assert values.short_names(['model.norm', 'seed']) == {'model.norm': 'norm',
                                                        'seed': 'seed'}
  assert values.short_names(['a.x', 'b.x']) == {'a.x': 'a.x', 'b.x': 'b.x'}
  assert values.markdown_table(['a', 'b'], [[1, ''], ['x', 'y']]) == [
      '| a | b |', '| --- | --- |', '| 1 |  |', '| x | y |']


def _run_report(*args):
  return subprocess.run([sys.executable, '-m', 'bn_study.report', *args],
                        cwd=ROOT, capture_output=True, text=True, check=False)


def test_report_groups_plots_and_skips(tiny_study, tmp_path):
  # A copy: the study is shared by every test, on every pytest-xdist worker.
  workdir = str(tmp_path / 'runs')
  shutil.copytree(tiny_study[1], workdir,
                  ignore=shutil.ignore_patterns('checkpoints'))
  # A folder with events but no config.json is skipped and said to be.
  stray = os.path.join(workdir, 'stray')
  os.makedirs(stray)
  first_run = os.path.join(workdir, 'norm=none,seed=0')
  events = [f for f in os.listdir(first_run) if f.startswith('events')][0]
  shutil.copy(os.path.join(first_run, events), stray)
  out = str(tmp_path / 'report')
  proc = _run_report(workdir, f'--out={out}')
  assert proc.returncode == 0, proc.stderr
  text = open(os.path.join(out, 'report.md')).read()
  assert '`model.norm`' in text.split('## Summary')[0]  # What is compared.
  rows = [l for l in text.split('## Summary')[1].split('![')[0].splitlines()
          if l.startswith('| norm=')]
  assert [r.split(' | ')[0] for r in rows] == ['| norm=none', '| norm=batch']
  assert all(' | 2 | ' in r for r in rows)  # Two seeds per group.
  assert '(n=2)' in rows[0]
  assert 'stray: event files but no config.json' in text
  assert 'still in progress' not in text
  for png in ('train_loss.png', 'eval.png'):
    with open(os.path.join(out, png), 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  # The numbers in the table are the runs' own: final eval accuracy of the
  # batch group is the mean over its seeds of what the runs logged.
  finals = [runs_lib.read_scalars(os.path.join(workdir, n))['eval/accuracy']
            .values[-1] for n in ('norm=batch,seed=0', 'norm=batch,seed=1')]
  assert f'{np.mean(finals):.3f} ± {np.std(finals, ddof=1):.3f} (n=2)' in rows[1]


def test_report_on_one_run_in_progress(tiny_study, tmp_path):
  _, workdir, _ = tiny_study
  run = str(tmp_path / 'growing')
  shutil.copytree(os.path.join(workdir, 'norm=batch,seed=0'), run,
                  ignore=shutil.ignore_patterns('checkpoints'))
  config = json.load(open(os.path.join(run, 'config.json')))
  config['num_epochs'] = 5  # As if it were 2 epochs into 5.
  json.dump(config, open(os.path.join(run, 'config.json'), 'w'))
  out = str(tmp_path / 'report')
  proc = _run_report(run, f'--out={out}', '--thresholds=2.5,0.01')
  assert proc.returncode == 0, proc.stderr
  text = open(os.path.join(out, 'report.md')).read()
  assert '1 of 1 runs are still in progress' in text
  assert 'in progress (step 16 of 40)' in text
  assert 'steps to loss ≤ 2.5' in text and 'not reached (0/1)' in text


def test_report_bad_input_is_a_message(tmp_path):
  proc = _run_report(str(tmp_path), f'--out={tmp_path / "r"}')
  assert proc.returncode == 2 and 'No runs under' in proc.stderr
  assert 'Traceback' not in proc.stderr
  proc = _run_report(str(tmp_path), f'--out={tmp_path / "r"}',
                     '--thresholds=a')
  assert proc.returncode == 2 and '--thresholds=a must be numbers' in proc.stderr


def test_report_without_matplotlib_has_tables_and_says_so(tiny_study,
                                                          tmp_path,
                                                          monkeypatch):
  _, workdir, _ = tiny_study
  monkeypatch.setattr(figures, 'have_matplotlib', lambda: False)
  out = str(tmp_path / 'report')
  path = report.write_report([workdir], out, (2.0,), 0.6)
  text = open(path).read()
  assert 'No plots: matplotlib is not installed' in text
  assert '![' not in text and '| norm=batch |' in text
  assert not [f for f in os.listdir(out) if f.endswith('.png')]
