"""--predict: class name and softmax score per image file, via main.py."""

import os

import numpy as np
from PIL import Image
import pytest

from bn_study import errors
from bn_study.training import predict
from bn_study.training import loop
from tests import helpers
from tests.helpers import ROOT



@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('predict')
  with helpers.mock_learnable(64, 16):
    loop.train_and_evaluate(
        helpers.tiny_config(num_epochs=4, **{'model.bn_momentum': 0.5}),
        str(workdir))
  return workdir


def _write_examples(tmp_path):
  images, labels = helpers.learnable_images(3, seed=5)
  paths = []
  for i, image in enumerate(images):
    path = tmp_path / f'ex{i}.{"png" if i % 2 else "jpg"}'
    Image.fromarray(image).save(path, quality=95)
    paths.append(str(path))
  # A larger image is resized to the input size.
  big = tmp_path / 'big.png'
  Image.fromarray(np.kron(images[0], np.ones((2, 2, 1), np.uint8))).save(big)
  return paths + [str(big)], list(labels) + [labels[0]]


def _config():
  return helpers.tiny_config(num_epochs=4, **{'model.bn_momentum': 0.5})


def test_predict_returns_a_class_and_its_softmax_score(workdir, tmp_path):
  paths, _ = _write_examples(tmp_path)
  results = predict.predict(_config(), str(workdir), paths)
  assert [r[0] for r in results] == paths
  for _, name, score in results:
    assert name in [str(i) for i in range(10)]  # Mock cifar10's label names.
    assert 0.1 <= score <= 1.0  # The top class of 10 has at least 1/10.


def test_main_predict_prints_one_line_per_image(workdir, tmp_path):
  paths, _ = _write_examples(tmp_path)
  out = helpers.run_main(workdir, '--predict=' + ','.join(paths), timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.strip().splitlines()
  assert len(lines) == len(paths)
  for line, path in zip(lines, paths):
    got_path, name, score = line.split('\t')
    assert got_path == path and name and 0 < float(score) <= 1


def test_predict_without_a_run_says_so(tmp_path):
  with pytest.raises(errors.UserError, match='holds no trained run'):
    predict.predict(_config(), str(tmp_path), ['x.png'])


def test_main_predict_on_a_file_that_is_not_an_image(workdir, tmp_path,
                                                     monkeypatch, capsys):
  paths, _ = _write_examples(tmp_path)
  monkeypatch.chdir(ROOT)
  code, err = helpers.main_in_process([
      '--config=configs/tiny.py', f'--workdir={workdir}',
      f'--predict={paths[0]},{os.path.join(ROOT, "README.md")}'])
  assert code == 2
  assert 'README.md\' is not a readable PNG/JPEG image' in err
  assert 'Traceback' not in err and not capsys.readouterr().out.strip()
