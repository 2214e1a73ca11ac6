"""The seed's PREDICT mode: classify image files with a run's latest checkpoint."""

import json
from typing import List, Sequence, Tuple

import jax
import numpy as np

from bn_study import errors
from bn_study import models
from bn_study import workdir as workdir_lib
from bn_study.runtime import mesh as mesh_lib
from bn_study.training import checkpoints
from bn_study.training import optim
from bn_study.training import steps
from bn_study.training import validate


def predict(config, workdir: str, paths: Sequence[str]
            ) -> List[Tuple[str, str, float]]:
  """(path, class name, softmax score of that class) for every image file."""
  validate.validate(config)
  info_path = workdir_lib.path(workdir) / workdir_lib.DATASET
  ckpts = checkpoints.Checkpoints(workdir, read_only=True)
  if not info_path.exists() or ckpts.latest_step() is None:
    raise errors.UserError(
        f'--workdir={workdir!r} holds no trained run (no dataset.json or no '
        'checkpoint); train there first without --predict.')
  info = json.loads(info_path.read_text())
  from bn_study.data import input_pipeline  # pylint: disable=g-import-not-at-top
  images = np.stack([input_pipeline.load_image(p, info['image_shape'])
                     for p in paths])
  # As the run's pipeline normalized its images (runs from before
  # config.normalize existed saved no statistics: pixels in [0, 1]).
  channels = info['image_shape'][-1]
  images = ((images - np.asarray(info.get('pixel_mean', [0.0] * channels)))
            / np.asarray(info.get('pixel_std', [1.0] * channels))
            ).astype(np.float32)

  mesh = mesh_lib.make_mesh()
  model = models.create_model(config.model, info['num_classes'])
  tx, _ = optim.make_optimizer(config, info['steps_per_epoch'])
  state = ckpts.restore(steps.create_train_state(
      config, model, info['image_shape'], tx, mesh), config=config)
  ckpts.close()
  variables = models.variables(state.params, state.batch_stats)
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(
      variables, images)
  probs = np.asarray(jax.nn.softmax(logits))
  best = probs.argmax(-1)
  return [(path, info['class_names'][k], float(probs[i, k]))
          for i, (path, k) in enumerate(zip(paths, best))]


def print_predictions(config, workdir: str, paths: Sequence[str]):
  for path, name, score in predict(config, workdir, paths):
    print(f'{path}\t{name}\t{score:.4f}')
