"""Claims and their verdicts, on synthetic run folders whose answers are known."""

import json
import os

import pytest
import tensorflow as tf

from bn_study.studies import claims
from bn_study.studies import report
from bn_study.studies import runs


def _write_run(path, config, accuracy, loss=1.0, steps_per_epoch=10):
  """A run folder as main.py leaves it: config.json, dataset.json, events
  with eval/accuracy at epochs 1 and 2 (the given value last)."""
  os.makedirs(path)
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump({'num_epochs': 2, **config}, f)
  with open(os.path.join(path, 'dataset.json'), 'w') as f:
    json.dump({'steps_per_epoch': steps_per_epoch}, f)
  with tf.summary.create_file_writer(path).as_default():
    for step, value in ((10, accuracy / 2), (20, accuracy)):
      tf.summary.scalar('eval/accuracy', value, step=step)
      tf.summary.scalar('eval/loss', loss, step=step)
      tf.summary.scalar('train/loss', loss, step=step)


def _runs(tmp_path, table):
  """Runs from {(norm, batch_size): [accuracy per seed]}."""
  for (norm, batch), accs in table.items():
    for seed, acc in enumerate(accs):
      _write_run(str(tmp_path / f'{norm}_{batch}_{seed}'),
                 {'model': {'norm': norm}, 'batch_size': batch, 'seed': seed},
                 acc)
  found, skipped = runs.find_runs([str(tmp_path)])
  assert not skipped
  return found


BN, GN, NONE = ({'model.norm': n} for n in ('batch', 'group', 'none'))


def test_verdicts_follow_the_spread_over_seeds(tmp_path):
  found = _runs(tmp_path, {
      ('batch', 32): [0.80, 0.82, 0.81], ('none', 32): [0.50, 0.52, 0.49],
      ('group', 32): [0.60, 0.70, 0.50], ('layer', 32): [0.62, 0.55, 0.66]})
  bn = claims.final('eval/accuracy', batch_size=32, **BN)
  none = claims.final('eval/accuracy', batch_size=32, **NONE)
  v = claims.evaluate(claims.greater('BN beats none', bn, none), found)
  assert v.verdict == claims.HOLDS
  assert v.left == pytest.approx([0.80, 0.82, 0.81])
  assert v.difference == pytest.approx(0.81 - 0.5033333, abs=1e-6)
  # The same comparison claimed the other way round.
  assert claims.evaluate(claims.less('none beats BN', bn, none),
                         found).verdict == claims.FAILS
  # Means 0.60 vs 0.61, spread 0.1: within twice the standard error.
  gn = claims.final('eval/accuracy', **GN)
  ln = claims.final('eval/accuracy', **{'model.norm': 'layer'})
  assert claims.evaluate(claims.greater('GN beats LN', gn, ln),
                         found).verdict == claims.CLOSE
  # A margin larger than the gap turns a holding claim close.
  assert claims.evaluate(claims.greater('by 0.4', bn, none, margin=0.4),
                         found).verdict == claims.CLOSE
  assert claims.evaluate(claims.greater('above 0.7', bn,
                                        claims.constant(0.7)),
                         found).verdict == claims.HOLDS
  assert claims.mean('eval/accuracy', **BN).per_seed(found) == pytest.approx(
      {0: 0.60, 1: 0.615, 2: 0.6075})
  assert claims.mean('eval/accuracy', from_step=11, **BN).per_seed(
      found) == pytest.approx({0: 0.80, 1: 0.82, 2: 0.81})
  assert 'from step 21' in claims.evaluate(claims.greater(
      'x', claims.mean('eval/accuracy', 21, **BN), none), found).why
  early = claims.at_step('eval/accuracy', 10, batch_size=32, **BN)
  assert early.per_seed(found) == pytest.approx({0: 0.40, 1: 0.41, 2: 0.405})
  assert 'no eval/accuracy at step 15' in claims.evaluate(claims.greater(
      'x', claims.at_step('eval/accuracy', 15, **BN), none), found).why
  assert claims.evaluate(claims.greater('best', claims.best(
      'eval/loss', **BN), claims.constant(2.0)), found).verdict == claims.FAILS


def test_range_and_argmax_over_a_field(tmp_path):
  # GN flat over batch sizes, BN falling at small batches (3 seeds each).
  table = {}
  for batch, bn_acc, gn_acc in ((2, 0.40, 0.70), (8, 0.60, 0.71),
                                (32, 0.80, 0.70)):
    table[('batch', batch)] = [bn_acc, bn_acc + 0.01, bn_acc - 0.01]
    table[('group', batch)] = [gn_acc, gn_acc + 0.005, gn_acc - 0.005]
  found = _runs(tmp_path, table)
  gn_range = claims.range_over('batch_size',
                               claims.final('eval/accuracy', **GN))
  bn_range = claims.range_over('batch_size',
                               claims.final('eval/accuracy', **BN))
  v = claims.evaluate(claims.less('GN flatter than BN', gn_range, bn_range),
                      found)
  assert v.verdict == claims.HOLDS
  assert v.right == pytest.approx([0.40, 0.40, 0.40])
  best_batch = claims.argmax_over('batch_size',
                                  claims.final('eval/accuracy', **BN))
  assert best_batch.per_seed(found) == {0: 32.0, 1: 32.0, 2: 32.0}
  assert claims.evaluate(claims.greater('BN best at the largest batch',
                                        best_batch, claims.constant(8)),
                         found).verdict == claims.HOLDS
  # A fall, per seed: BN loses 0.40 from batch 32 to 2, GN nothing.
  fall = lambda norm: claims.difference(
      claims.final('eval/accuracy', batch_size=32, **norm),
      claims.final('eval/accuracy', batch_size=2, **norm))
  assert fall(BN).per_seed(found) == pytest.approx({0: .4, 1: .4, 2: .4})
  assert claims.evaluate(claims.greater('BN falls further', fall(BN),
                                        fall(GN)), found).verdict == claims.HOLDS
  assert claims.evaluate(claims.less('GN falls by under 0.01', fall(GN),
                                     claims.constant(0.01)),
                         found).verdict == claims.HOLDS
  assert claims.difference(claims.constant(1.0), fall(BN)).per_seed(
      found) == pytest.approx({0: .6, 1: .6, 2: .6})


def test_one_seed_or_unanswerable_claims_say_why(tmp_path):
  found = _runs(tmp_path, {('batch', 8): [0.8], ('none', 8): [0.5],
                           ('batch', 16): [0.7]})
  bn8 = claims.final('eval/accuracy', batch_size=8, **BN)
  none = claims.final('eval/accuracy', **NONE)
  v = claims.evaluate(claims.greater('BN beats none', bn8, none), found)
  assert v.verdict == claims.CLOSE and 'no spread' in v.why
  # With one seed, only a margin can decide.
  assert claims.evaluate(claims.greater('by 0.1', bn8, none, margin=0.1),
                         found).verdict == claims.HOLDS
  both_bn = claims.final('eval/accuracy', **BN)  # Two runs with seed 0.
  v = claims.evaluate(claims.greater('x', both_bn, none), found)
  assert v.verdict == claims.CLOSE and 'more than one run' in v.why
  v = claims.evaluate(claims.greater('x', claims.final(
      'eval/accuracy', **GN), none), found)
  assert 'No run has norm=group' in v.why


def test_report_prints_the_claims_of_the_sweep(tmp_path):
  runs_dir = tmp_path / 'runs'
  _runs(runs_dir, {('batch', 32): [0.80, 0.82, 0.81],
                   ('none', 32): [0.50, 0.52, 0.49]})
  sweep_file = tmp_path / 'study.py'
  sweep_file.write_text(
      'from bn_study import claims\n'
      "CONFIG = 'configs/tiny.py'\n"
      'def get_sweep(arg=None):\n  return [{}]\n'
      'CLAIMS = [claims.greater("BN ends more accurate than no BN",\n'
      "    claims.final('eval/accuracy', **{'model.norm': 'batch'}),\n"
      "    claims.final('eval/accuracy', **{'model.norm': 'none'}))]\n")
  (runs_dir / 'sweep.json').write_text(json.dumps(
      {'sweep': f'{sweep_file}:arg', 'runs': []}))
  text = open(report.write_report([str(runs_dir)],
                                  str(tmp_path / 'out'))).read()
  assert '## Claims' in text
  row = [l for l in text.splitlines()
         if l.startswith('| BN ends more accurate')][0]
  assert '0.81 ± 0.01 (n=3)' in row and '**holds**' in row
