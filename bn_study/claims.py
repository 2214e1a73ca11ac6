"""What sweep files use to state their CLAIMS:

  from bn_study import claims

  BN, NONE = {'model.norm': 'batch'}, {'model.norm': 'none'}
  CLAIMS = [claims.greater('BN ends more accurate than no BN',
                           claims.final('eval/accuracy', **BN),
                           claims.final('eval/accuracy', **NONE))]

The claims and their verdicts live in bn_study/studies/claims.py.
"""

from bn_study.studies.claims import argmax_over
from bn_study.studies.claims import at_step
from bn_study.studies.claims import best
from bn_study.studies.claims import Claim
from bn_study.studies.claims import ClaimError
from bn_study.studies.claims import CLOSE
from bn_study.studies.claims import constant
from bn_study.studies.claims import difference
from bn_study.studies.claims import evaluate
from bn_study.studies.claims import FAILS
from bn_study.studies.claims import final
from bn_study.studies.claims import greater
from bn_study.studies.claims import HOLDS
from bn_study.studies.claims import less
from bn_study.studies.claims import load
from bn_study.studies.claims import max_over
from bn_study.studies.claims import mean
from bn_study.studies.claims import of_sweeps
from bn_study.studies.claims import Quantity
from bn_study.studies.claims import range_over
from bn_study.studies.claims import Verdict

__all__ = ['argmax_over', 'at_step', 'best', 'Claim', 'ClaimError', 'CLOSE',
           'constant', 'difference', 'evaluate', 'FAILS', 'final', 'greater',
           'HOLDS', 'less', 'load', 'max_over', 'mean', 'of_sweeps',
           'Quantity', 'range_over', 'Verdict']
