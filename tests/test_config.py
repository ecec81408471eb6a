import pytest

from sparse_circuits.config import (
    AnnealSchedule,
    NodeLocation,
    Preset,
    resolve_run_config,
    run_config_from_dict,
    to_dict,
)
from sparse_circuits.errors import UserError


def test_presets_resolve_and_validate():
    for preset in Preset:
        cfg = resolve_run_config(preset)
        assert cfg.preset == preset and cfg.model.d_model % cfg.model.d_head == 0
    tiny = resolve_run_config("tiny")
    assert (tiny.model.n_layer, tiny.model.d_model, tiny.model.context) == (2, 32, 64)
    # The embedded default uses the capability study's choice (docs/results.md).
    assert resolve_run_config("micro").model.positions.value == "concat"


def test_round_trip_through_json_dict():
    cfg = resolve_run_config("micro", {"sparsity": {"anneal": "exponential"},
                                       "model": {"activation_topk": {"mlp.post_act": 0.5}}})
    assert cfg.sparsity.anneal is AnnealSchedule.EXPONENTIAL
    assert cfg.model.activation_topk == {NodeLocation.MLP_NEURON: 0.5}
    again = run_config_from_dict(to_dict(cfg))
    assert again == cfg


@pytest.mark.parametrize("overrides, message", [
    ({"model": {"n_layers": 3}}, "unknown key 'n_layers'"),
    ({"trian": {}}, "unknown key 'trian'"),
    ({"sparsity": {"anneal": "cosine"}}, "unknown value 'cosine' \\(allowed: linear, exponential\\)"),
    ({"model": {"activation_topk": {"mlp.neuron": 0.25}}}, "unknown value 'mlp.neuron'"),
    ({"model": {"d_model": 100}}, "multiple of model.d_head"),
    ({"sparsity": {"nonzero_frac": 0}}, "nonzero_frac must be in"),
    ({"train": {"steps": "10"}}, "expected an integer"),
    ({"model": {"attention_sink": 1}}, "expected true or false"),
    ({"train": {"threads": -1}}, "train.threads must be >= 0"),
])
def test_bad_config_is_a_clear_error(overrides, message):
    with pytest.raises(UserError, match=message):
        resolve_run_config("tiny", overrides)


def test_unknown_preset():
    with pytest.raises(UserError, match="unknown value 'huge'"):
        resolve_run_config("huge")
