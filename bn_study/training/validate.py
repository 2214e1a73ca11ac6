"""`validate(config)`: the whole config, once, before any work. Each layer
checks its own block (data: feeds.validate; the model: models.validate,
told the batch sizes it will normalize; the instruments:
instruments.validate); the training fields are checked here. The dataset
is checked when it is opened, the batch sizes against the devices when the
mesh is made (runtime/mesh.py)."""

from typing import Dict, Optional

from bn_study import errors
from bn_study import models
from bn_study.data import feeds
from bn_study.training import evaluator
from bn_study.training import instruments
from bn_study.training import optim
from bn_study.training import steps
from bn_study.training import tta


def normalized_batch_sizes(config) -> Dict[str, int]:
  """{field: size} of every batch the model normalizes in train mode: the
  train batch, the eval batch under eval_stats=batch, the probe of the
  activation instrument."""
  sizes = {'batch_size': config.batch_size}
  if 'batch' in evaluator.eval_stats_modes(config):
    sizes['eval_batch_size'] = config.eval_batch_size
  if 'act' in instruments.enabled(config.analysis):
    sizes['analysis.probe_size'] = config.analysis.probe_size
  return sizes


def validate(config, batch_sizes: Optional[Dict[str, int]] = None):
  """Every field that needs nothing but the config; `batch_sizes` ({flag:
  size}) are batches the model will normalize beyond the config's own (the
  benchmark's)."""
  # A fraction of an epoch counts as a step (workdir.run_steps).
  errors.check_number('num_epochs', config.num_epochs, 0, low_open=True)
  for field in ('batch_size', 'eval_batch_size', 'log_every_steps', 'checkpoint_every_epochs',
                'max_checkpoints_to_keep', 'precise_bn_batches'):
    errors.check_positive_int(field, config[field])
  _check_non_negative_int('eval_every_steps', config.eval_every_steps,
                          '0: evaluate after each epoch only')
  _check_non_negative_int('steps_per_call', config.steps_per_call,
                          '0: auto, from the step time')
  if not isinstance(config.seed, int) or isinstance(config.seed, bool):
    raise errors.UserError(f'seed={config.seed!r} must be an integer.')
  _validate_optimizer(config)
  errors.check_number('label_smoothing', config.label_smoothing, 0, 1,
                      high_open=True)
  errors.check_choice('nonfinite', config.nonfinite, steps.NONFINITE)
  errors.check_choice('tta_level', config.tta_level, tta.LEVELS)
  if not isinstance(config.precise_bn_replaces_ema, bool):
    raise errors.UserError(f'precise_bn_replaces_ema='
                           f'{config.precise_bn_replaces_ema!r} must be True '
                           'or False.')
  feeds.validate(config)
  instruments.validate(config.analysis)
  models.validate(config.model,
                  {**normalized_batch_sizes(config), **(batch_sizes or {})})


def _check_non_negative_int(field, value, meaning):
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise errors.UserError(
        f'{field}={value!r} must be a non-negative integer ({meaning}).')


def _validate_optimizer(config):
  errors.check_choice('optimizer', config.optimizer, optim.OPTIMIZERS)
  errors.check_choice('lr_schedule', config.lr_schedule, optim.LR_SCHEDULES)
  errors.check_choice('weight_decay_style', config.weight_decay_style,
                      optim.WEIGHT_DECAY_STYLES)
  boundaries = config.lr_boundaries
  if (not isinstance(boundaries, (tuple, list)) or
      not all(isinstance(b, (int, float)) and 0 < b < 1 for b in boundaries)
      or list(boundaries) != sorted(boundaries)):
    raise errors.UserError(
        f'lr_boundaries={boundaries!r} must be increasing fractions of the '
        'run, each between 0 and 1, e.g. "(0.5,0.75)".')
  errors.check_number('lr_decay_factor', config.lr_decay_factor, 0,
                      low_open=True)
  errors.check_number('learning_rate', config.learning_rate, 0, low_open=True)
  errors.check_number('warmup_epochs', config.warmup_epochs, 0,
                      config.num_epochs)
  for field in ('b1', 'b2', 'momentum'):
    errors.check_number(field, config[field], 0, 1, high_open=True)
  errors.check_number('eps', config.eps, 0)
  errors.check_number('weight_decay', config.weight_decay, 0)
  errors.check_number('agc_clipping', config.agc_clipping, 0)
  errors.check_number('norm_bias_lr_multiplier',
                      config.norm_bias_lr_multiplier, 0, low_open=True)
  if config.norm_bias_lr_multiplier != 1 and config.optimizer != 'sgd':
    raise errors.UserError(
        f'norm_bias_lr_multiplier={config.norm_bias_lr_multiplier} scales the '
        'norms\' bias gradients, which Adam\'s update does not see; use it '
        'with optimizer=sgd, or leave it 1.')
  _check_non_negative_int('per_examples', config.per_examples,
                          '0: learning_rate and weight_decay as given')
  if config.per_examples and (config.optimizer != 'sgd'
                              or config.weight_decay_style != 'coupled'):
    raise errors.UserError(
        f'per_examples={config.per_examples} is airbench\'s scaling of SGD '
        'with decay through the momentum; set optimizer=sgd and '
        f'weight_decay_style=coupled (not {config.optimizer!r} and '
        f'{config.weight_decay_style!r}), or per_examples=0.')
  if config.lr_schedule == 'triangular':
    errors.check_number('lr_start_factor', config.lr_start_factor, 0)
    errors.check_number('lr_end_factor', config.lr_end_factor, 0)
    errors.check_number('lr_peak_at', config.lr_peak_at, 0, 1, high_open=True)
  _check_non_negative_int('lookahead_every', config.lookahead_every,
                          '0: no lookahead')
  errors.check_number('lookahead_decay', config.lookahead_decay, 0, 1)
  errors.check_number('lookahead_start_epochs', config.lookahead_start_epochs,
                      0)
  for field in ('weight_decay_norms', 'weight_decay_biases', 'nesterov'):
    if not isinstance(config[field], bool):
      raise errors.UserError(f'{field}={config[field]!r} must be True or False.')
