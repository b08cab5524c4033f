"""PruningPlan as data: JSON round trip, the dense plan, validation messages, sparsity by hand."""

import dataclasses
import json
import re

import pytest
from transformers import ASTForAudioClassification

from prunekit.errors import PlanError
from prunekit.heads.plan import LayerPlan, PruningPlan
from prunekit.models import anatomy

FULL = tuple(range(8))


def _base(model):
    return tuple(anatomy.attention_shapes(model))


@pytest.fixture
def plan(tiny_model) -> PruningPlan:
    """Layer 0 keeps heads 0 and 3 (3 Q/K, 8 V/O channels each); layer 1 loses every head."""
    return PruningPlan(
        (LayerPlan((0, 3), ((1, 4, 6), (0, 2, 7)), (FULL, FULL)), LayerPlan()),
        _base(tiny_model),
        scorer="fisher",
        pattern="per-head",
        threshold="global",
        target_sparsity=0.8,
    )


def test_json_round_trip_is_exact(plan):
    text = plan.to_json()
    back = PruningPlan.from_json(text)
    assert back == plan and hash(back) == hash(plan)
    assert back.to_json() == text
    data = json.loads(text)
    assert data["layers"][1] == {"heads": [], "qk": [], "vo": []}
    assert data["target_sparsity"] == 0.8
    assert data["base"][0] == {"heads": 4, "qk_dim": 8, "v_dim": 8, "hidden": 32}
    # Metadata may be None; None survives the trip too.
    bare = dataclasses.replace(plan, scorer=None, target_sparsity=None)
    assert PruningPlan.from_json(bare.to_json()) == bare != plan


def test_budget_round_trips_and_old_plans_read_as_joint(plan):
    separate = dataclasses.replace(plan, budget="separate")
    assert json.loads(separate.to_json())["budget"] == "separate"
    assert PruningPlan.from_json(separate.to_json()) == separate
    # A plan.json from before budgets had a name has no "budget": its global channel plans were
    # made with one budget over Q/K and V/O, so it reads as "joint"; other plans as None.
    old = json.loads(separate.to_json())
    del old["budget"]
    assert PruningPlan.from_dict(old).budget == "joint"
    for pattern, threshold in (("per-head", "local"), ("entire-head", "global"), (None, None)):
        assert PruningPlan.from_dict(old | {"pattern": pattern, "threshold": threshold}).budget is None


def test_from_json_rejects_other_documents():
    with pytest.raises(ValueError, match="Not a prunekit.PruningPlan"):
        PruningPlan.from_json('{"layers": []}')


def test_lists_become_tuples():
    layer = LayerPlan([0, 2], [[1, 2], [3, 4]], [[0], [5]])
    assert layer == LayerPlan((0, 2), ((1, 2), (3, 4)), ((0,), (5,)))
    assert {layer: "hashable"}[LayerPlan((0, 2), ((1, 2), (3, 4)), ((0,), (5,)))] == "hashable"  # a dict key


def test_dense_plan_keeps_everything(tiny_model):
    dense = PruningPlan.dense(tiny_model, scorer="none")
    assert dense.validate_for(tiny_model) is dense
    assert dense.layers[1] == LayerPlan(range(4), [FULL] * 4, [FULL] * 4)
    assert dense.attention_sparsity() == 0.0
    assert dense.kept_weights() == dense.dense_weights() == 2 * 32 * 4 * (2 * 8 + 2 * 8)
    table = dense.summary()
    assert table["heads_left"].tolist() == [4, 4] and table["weights_removed"].tolist() == [0.0, 0.0]


def test_attention_sparsity_by_hand(plan):
    # Dense layer: 32 hidden x 4 heads x (8+8 Q/K rows + 8 V rows + 8 O columns) = 4096 weights.
    # Layer 0 keeps 2 heads x 3 Q/K channels (in W_q and W_k) and 2 x 8 V/O (W_v rows, W_o columns):
    # 32 * (2*6 + 2*16) = 1408. Layer 1 keeps nothing.
    assert plan.dense_weights() == 8192
    assert plan.kept_weights() == 1408
    assert plan.attention_sparsity() == pytest.approx(1 - 1408 / 8192)
    table = plan.summary()
    assert table.columns.tolist() == [
        "layer", "heads_left", "heads", "qk_channels_left", "qk_channels",
        "vo_channels_left", "vo_channels", "weights_left", "weights_removed",
    ]
    assert table["heads_left"].tolist() == [2, 0]
    assert table["qk_channels_left"].tolist() == [6, 0]
    assert table["vo_channels_left"].tolist() == [16, 0]
    assert table["weights_removed"].tolist() == pytest.approx([1 - 1408 / 4096, 1.0])


def _with_layer0(plan, layer):
    return dataclasses.replace(plan, layers=(layer, *plan.layers[1:]))


@pytest.mark.parametrize(
    "layer, message",
    [
        (LayerPlan((0, 4), (FULL, FULL), (FULL, FULL)), r"kept heads \[4\] out of range: valid are 0"),
        (LayerPlan((1, 1), (FULL, FULL), (FULL, FULL)), r"Layer 0: kept heads repeat \[1\]"),
        (LayerPlan((2, 1), (FULL, FULL), (FULL, FULL)), r"must be sorted ascending, got \[2, 1\]"),
        (LayerPlan((0,), ((),), (FULL,)), r"Layer 0 head 0 is kept with 0 Q/K and 8 V/O channels"),
        (LayerPlan((3,), (FULL,), ((),)), r"Layer 0 head 3 is kept with 8 Q/K and 0 V/O channels"),
        (LayerPlan((0,), ((0, 8),), (FULL,)), r"Layer 0 head 0: Q/K channels \[8\] out of range"),
        (LayerPlan((0,), (FULL,), ((-1, 2),)), r"Layer 0 head 0: V/O channels \[-1\] out of range"),
        (LayerPlan((0,), ((3, 3),), (FULL,)), r"Q/K channels repeat \[3\]"),
        (LayerPlan((0, 1), (FULL,), (FULL, FULL)), r"2 kept heads \[0, 1\] but 1 Q/K and 2 V/O channel"),
    ],
)
def test_validation_names_the_values(plan, tiny_model, layer, message):
    bad = _with_layer0(plan, layer)
    with pytest.raises(ValueError, match=message):
        bad.validate_for(tiny_model)
    plan.validate_for(tiny_model)  # the unmodified plan is fine


def test_layer_count_mismatch(plan, tiny_config):
    deeper = ASTForAudioClassification(tiny_config(num_hidden_layers=3))
    with pytest.raises(ValueError, match="The plan covers 2 layers .* but the model has 3"):
        plan.validate_for(deeper)
    short = dataclasses.replace(plan, layers=plan.layers[:1])
    with pytest.raises(ValueError, match="The plan has 1 layers but its base shape has 2"):
        short.validate()


def test_shape_mismatch(plan, tiny_config):
    other = ASTForAudioClassification(tiny_config(num_attention_heads=2))
    message = r"Layer 0: the plan was made for heads=4, qk_dim=8.*model has heads=2, qk_dim=16"
    with pytest.raises(ValueError, match=message):
        plan.validate_for(other)


@pytest.mark.parametrize("text, message", [
    ("[]", "A pruning plan is a JSON object with format, base and layers; got []"),
    ("null", "A pruning plan is a JSON object with format, base and layers; got None"),
    ("{broken", "A pruning plan must be JSON"),
])
def test_plan_json_that_is_not_a_plan_is_a_plan_error(text, message):
    with pytest.raises(PlanError, match=re.escape(message)):
        PruningPlan.from_json(text)


@pytest.mark.parametrize("bad", [2.7, "1", True, None])
@pytest.mark.parametrize("where", ["heads", "qk", "vo"])
def test_plan_indices_must_be_whole_numbers_not_coerced(bad, where):
    """int(2.7) == 2 and int("1") == 1: coercing would prune other heads than the file says."""
    data = PruningPlan.from_dict({"format": "prunekit.PruningPlan", "version": 1,
                                  "base": [{"heads": 2, "qk_dim": 2, "v_dim": 2, "hidden": 4}],
                                  "layers": [{"heads": [0, 1], "qk": [[0, 1], [0, 1]], "vo": [[0, 1], [0, 1]]}]}
                                 ).to_dict()
    if where == "heads":
        data["layers"][0]["heads"][1] = bad
    else:
        data["layers"][0][where][1][0] = bad
    what = "kept heads" if where == "heads" else f"{where} channels"
    with pytest.raises(PlanError, match=re.escape(f"layer 0: {what}: {bad!r} is not an index")):
        PruningPlan.from_dict(data)
