"""SpinConvConfig: the reference's keywords translated and checked in one place."""
from __future__ import annotations

import inspect
import warnings

import pytest
from spinconv_testkit import tiny_config

from spinconv_train.models import SpinConv
from spinconv_train.models.spinconv.config import (
    REFERENCE_ONLY_KEYWORDS,
    SpinConvConfig,
)


def test_reference_keywords_are_accepted_and_change_nothing():
    plain = SpinConv(**tiny_config())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these warns
        reference = SpinConv(None, 50, 1, **tiny_config(), show_timing_info=True, model_ref_number=3,
                             readout="add", num_rand_rotations=7)
    assert reference.config == plain.config
    assert [p.shape for p in reference.parameters()] == [p.shape for p in plain.parameters()]


def test_random_force_estimator_is_read_as_direct_with_a_warning():
    with pytest.warns(FutureWarning, match="write 'direct'"):
        config = SpinConvConfig.from_keywords(**tiny_config(force_estimator="random"))
    assert config.force_estimator == "direct" and config.direct_forces
    assert config == SpinConvConfig.from_keywords(**tiny_config(force_estimator="direct"))


@pytest.mark.parametrize("keywords,message", [
    ({"num_targets": 2}, "num_targets=2 is not supported"),
    ({"readout": "mean"}, "readout must be 'add'"),
    ({"force_estimator": "grads"}, "force_estimator must be one of"),
    ({"sphere_message": "conv"}, "sphere_message must be one of"),
    ({"direct_force_head": "atom"}, "direct_force_head must be one of"),
    ({"spin_conv_impl": "dft"}, "spin_conv_impl must be one of"),
    ({"sphere_interpolation": "cubic"}, "sphere_interpolation must be one of"),
    ({"spin_conv_chunk_elements": 0}, "spin_conv_chunk_elements must be"),
    ({"max_num_neighbors": 0}, "max_num_neighbors must be a positive integer or None"),
])
def test_bad_values_are_named(keywords, message):
    with pytest.raises(ValueError, match=message):
        SpinConv(**tiny_config(**keywords))


def test_unknown_and_duplicate_arguments_are_named():
    with pytest.raises(TypeError, match="unexpected keyword argument 'spere_size_lat'"):
        SpinConvConfig.from_keywords(spere_size_lat=4)
    with pytest.raises(TypeError, match="multiple values for argument 'num_atoms'"):
        SpinConvConfig.from_keywords(None, num_atoms=3)
    with pytest.raises(TypeError, match="either config= or"):
        SpinConv(config=SpinConvConfig(), hidden_channels=4)


def test_signature_lists_every_setting_for_config_builders():
    params = inspect.signature(SpinConv.__init__).parameters
    fields = set(SpinConvConfig.__dataclass_fields__)
    assert fields <= set(params) and "regress_forces" in params
    assert not set(REFERENCE_ONLY_KEYWORDS) & set(params)  # these go through the translation
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def test_config_object_builds_the_same_model():
    config = SpinConvConfig.from_keywords(**tiny_config(lmax=False))
    assert config.lmax is None
    assert SpinConv(config=config).config == config
