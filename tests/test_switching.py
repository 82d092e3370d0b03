"""When a model switch is accepted or refused."""

import pytest

from stream.errors import SwitchRefused
from stream.switching import ModelSwitchGate

KNOWN = ["small", "big"]


def refusal(gate, model_id, current, now):
    with pytest.raises(SwitchRefused) as caught:
        gate.begin(model_id, current, KNOWN, now)
    return caught.value


def test_unknown_and_already_loaded_models_are_refused():
    gate = ModelSwitchGate(min_interval_s=30)
    assert refusal(gate, "huge", "small", 0.0).code == "unknown_model"
    assert refusal(gate, "small", "small", 0.0).code == "same_model"


def test_one_switch_at_a_time():
    gate = ModelSwitchGate(min_interval_s=0)
    gate.begin("big", "small", KNOWN, 0.0)
    assert refusal(gate, "small", "big", 1.0).code == "busy"
    gate.finish()
    gate.begin("small", "big", KNOWN, 2.0)


def test_refused_inside_the_minimum_interval_with_the_time_to_wait():
    gate = ModelSwitchGate(min_interval_s=30)
    gate.begin("big", "small", KNOWN, 100.0)
    gate.finish()
    refused = refusal(gate, "small", "big", 110.0)
    assert refused.code == "too_soon" and refused.retry_after_s == pytest.approx(20.0)
    gate.begin("small", "big", KNOWN, 130.0)
