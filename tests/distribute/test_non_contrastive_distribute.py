"""BYOL, SimSiam, Barlow Twins and VICReg under MirroredStrategy train exactly as on one device.

They run on 2 logical CPUs, each case in a subprocess running `mirrored_check.py`
as tests/distribute/test_mirrored.py does (the logical devices must be made
before TensorFlow initialises its devices). Two steps of a global batch of 8, no
batch norm; tolerance 1e-5 on the logged losses, the weights (the BYOL target
included) and the optimizer's variables. BYOL and SimSiam differentiate each
replica's share of the per-replica mean; Barlow Twins and VICReg gather the
projections, so their statistics are those of the global batch.
"""

import os

import pytest
from test_mirrored import TOLERANCE
from test_mirrored import assert_same_training
from test_mirrored import run_case


@pytest.mark.parametrize("case", ["byol", "simsiam", "barlow_twins", "vicreg"])
def test_two_steps_match_one_device(case):
    report = run_case(case)
    assert_same_training(report)
    if case == "byol":
        # The EMA moved the target (tau 0.9 at the second step) the same way on every
        # device copy as on one device.
        assert report["target_diff"] < TOLERANCE, report
        assert report["target_moved"] > 1e-3, report


if os.environ.get("KERAS_EBM_SKIP_DISTRIBUTE"):
    pytestmark = pytest.mark.skip("KERAS_EBM_SKIP_DISTRIBUTE is set")
