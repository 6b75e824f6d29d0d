"""Fuzzing the loaders: any input gives a dataset or one clear DataError, never a crash."""

import os

import numpy as np
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_ebm.data import DataError
from keras_ebm.data import ImageDataset
from keras_ebm.data import load

FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                   st.floats(0, 1, width=32))


@FUZZ
@given(x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=5, max_side=4),
                    elements=floats),
       y=hnp.arrays(np.int64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=5),
                    elements=st.integers(-2, 12)))
def test_from_arrays_accepts_or_names_the_problem(x, y):
    try:
        dataset = ImageDataset.from_arrays("fuzz", x, y, x, y)
    except DataError as error:
        message = str(error)
        assert message.startswith("fuzz:") and "\n" not in message
        return
    assert np.isfinite(dataset.x_train).all()
    assert dataset.x_train.min() >= 0 and dataset.x_train.max() <= 1
    assert len(dataset.x_train) == len(dataset.y_train)


@FUZZ
@given(contents=st.lists(st.binary(min_size=0, max_size=64), min_size=1, max_size=3))
def test_folder_of_garbage_files_names_a_file(tmp_path_factory, contents):
    root = tmp_path_factory.mktemp("images")
    os.makedirs(root / "a")
    for i, data in enumerate(contents):
        (root / "a" / f"{i}.png").write_bytes(data)
    try:
        load(f"folder:{root}")
    except DataError as error:
        message = str(error)
        assert "\n" not in message and str(root) in message
    else:  # random bytes are never a valid image set of one class with a test split
        raise AssertionError("garbage files were accepted")


@FUZZ
@given(spec=st.text(max_size=30))
def test_any_dataset_spec_is_loaded_or_rejected_clearly(spec):
    if spec.startswith("tfds:") or spec == "digits":
        return  # real loads (and network timeouts) are covered elsewhere
    try:
        load(spec)
    except DataError as error:
        assert "\n" not in str(error)
