"""Surgery equals the masked dense model; the input is untouched; pruned models save and reload."""

import json

import pytest
import torch
from conftest import TINY_LABELS
from transformers import ASTFeatureExtractor, ASTForAudioClassification

from prunekit.errors import OutputExistsError
from prunekit.heads.plan import LayerPlan, PruningPlan
from prunekit.heads.surgery import MARKER_FILE, apply_plan, kept_structure, load_plan, save_pruned
from prunekit.models import anatomy, load_model
from prunekit.models.ast import PrunedASTForAudioClassification

H, D = 4, 8  # tiny AST: 4 heads of 8 channels, hidden 32, 2 layers
ALL = tuple(range(D))


def _random_model(tiny_config) -> ASTForAudioClassification:  # tiny_config: the conftest fixture
    """Tiny AST with 12 tokens and every parameter random (biases too): HF's init (std 0.02,
    zero biases) makes attention nearly uniform, where a wrong mask or scale would go unseen."""
    torch.manual_seed(0)
    model = ASTForAudioClassification(tiny_config(max_length=64, num_mel_bins=32)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture
def model(tiny_config) -> ASTForAudioClassification:
    return _random_model(tiny_config)


def _x(model, batch=3, seed=2) -> torch.Tensor:
    return torch.randn(batch, *anatomy.input_shape(model), generator=torch.Generator().manual_seed(seed))


def _logits(model, x) -> torch.Tensor:
    with torch.no_grad():
        return model(x).logits


def _layer(heads, qk, vo) -> LayerPlan:
    """qk/vo: one tuple shared by every kept head, or a list with one tuple per kept head."""
    qk = qk if isinstance(qk, list) else [qk] * len(heads)
    vo = vo if isinstance(vo, list) else [vo] * len(heads)
    return LayerPlan(tuple(heads), tuple(qk), tuple(vo))


def _plan(model, *layers: LayerPlan, **meta) -> PruningPlan:
    return PruningPlan(layers, tuple(anatomy.attention_shapes(model)), **meta)


CASES = {
    "entire_head": [_layer((0, 2), ALL, ALL), _layer((1, 2, 3), ALL, ALL)],
    "per_head": [
        _layer(
            range(4),
            [(0, 1, 2, 5), (1, 3, 4, 7), (0, 2, 6, 7), (2, 3, 5, 6)],
            [(0, 1, 2, 3, 4, 7), (1, 2, 3, 4, 5, 6), (0, 2, 3, 5, 6, 7), (0, 1, 4, 5, 6, 7)],
        ),
        _layer(range(4), [(0, 1, 2, 3, 4, 5), (2, 3, 4, 5, 6, 7), (0, 2, 4, 5, 6, 7), (1, 3, 4, 5, 6, 7)],
               [(0, 1, 7), (2, 5, 6), (3, 4, 5), (0, 6, 7)]),
    ],
    "same_channel": [_layer(range(4), (0, 3, 6), (1, 2, 4, 5, 7)), _layer(range(4), (1, 2, 3, 4, 5), (0, 7))],
    "qk_ne_vo": [
        _layer((0, 1, 3), [(0, 5), (2, 3), (6, 7)], [(0, 1, 2, 3, 4, 5, 6), ALL[1:], (0, 2, 3, 4, 5, 6, 7)]),
        _layer((2,), ALL, (4,)),
    ],
    "zero_head": [_layer((), (), ()), _layer((0, 3), (1, 4, 6), (0, 2, 3, 5))],
    "untouched": [_layer(range(4), ALL, ALL), _layer((1,), (0, 1), (2,))],
}


def masked_logits(model, plan: PruningPlan, x) -> torch.Tensor:
    """The dense model's logits with the plan's removed units zeroed by hooks: removed Q rows
    make their q.k terms 0 (the same as removing the channel, since the scale is kept), and
    removed value channels are zeroed on the way into o_proj."""
    handles = []
    for i, (lp, shape) in enumerate(zip(plan.layers, plan.base)):
        qk_mask = torch.zeros(shape.heads * shape.qk_dim)
        vo_mask = torch.zeros(shape.heads * shape.v_dim)
        for h, qk, vo in zip(lp.heads, lp.qk, lp.vo):
            qk_mask[[h * shape.qk_dim + c for c in qk]] = 1
            vo_mask[[h * shape.v_dim + c for c in vo]] = 1
        proj = anatomy.projections(model, i)
        handles.append(proj.q.register_forward_hook(lambda m, a, out, k=qk_mask: out * k))
        handles.append(proj.o.register_forward_pre_hook(lambda m, a, v=vo_mask: (a[0] * v,)))
    try:
        return _logits(model, x)
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_pruned_equals_masked_dense(model, case, impl):
    model.set_attn_implementation(impl)
    plan = _plan(model, *CASES[case])
    x = _x(model)
    pruned = apply_plan(model, plan)
    assert pruned.config._attn_implementation == impl
    expected = masked_logits(model, plan, x)
    got = _logits(pruned, x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # The cut matters (the test could fail): masked differs clearly from dense.
    assert (expected - _logits(model, x)).abs().max() > 1e-2
    # Physically smaller: the modules have the planned shape, the plan's weight count is real.
    assert anatomy.structure_of(pruned) == kept_structure(plan)
    dense_w = sum(s.weights for s in anatomy.attention_shapes(model))
    pruned_w = sum(s.weights for s in anatomy.attention_shapes(pruned))
    assert 1 - pruned_w / dense_w == pytest.approx(plan.attention_sparsity(), abs=1e-12)


def test_scale_stays_original(model):
    """Negative control: with the scale of the new, smaller qk dim the equivalence breaks."""
    plan = _plan(model, *CASES["same_channel"])
    x = _x(model)
    pruned = apply_plan(model, plan)
    assert all(anatomy.attention(pruned, i).scaling == D**-0.5 for i in range(2))
    for i in range(2):
        attn = anatomy.attention(pruned, i)
        attn.scaling = attn.qk_head_dim**-0.5
    assert (_logits(pruned, x) - masked_logits(model, plan, x)).abs().max() > 1e-3


def test_zero_head_layer_returns_the_output_bias(model):
    pruned = apply_plan(model, _plan(model, *CASES["zero_head"]))
    attn = anatomy.attention(pruned, 0)
    assert (attn.num_heads, attn.q_proj.weight.shape, attn.o_proj.weight.shape) == (0, (0, 32), (32, 0))
    h = torch.randn(2, 5, 32)
    out, weights = attn(h)
    torch.testing.assert_close(out, attn.o_proj.bias.expand(2, 5, 32), rtol=0, atol=0)
    assert weights.shape == (2, 0, 5, 5)
    pruned.set_attn_implementation("eager")
    attentions = pruned(_x(model), output_attentions=True).attentions
    assert [a.shape[1] for a in attentions] == [0, 2]


def test_untouched_layer_keeps_its_weights(model):
    pruned = apply_plan(model, _plan(model, *CASES["untouched"]))
    for old, new in zip(anatomy.projections(model, 0), anatomy.projections(pruned, 0), strict=True):
        assert torch.equal(old.weight, new.weight) and torch.equal(old.bias, new.bias)
        assert old.weight.data_ptr() != new.weight.data_ptr()  # a copy, not shared storage


def test_original_model_is_untouched(model):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    pruned = apply_plan(model, _plan(model, *CASES["qk_ne_vo"]))
    assert type(model) is ASTForAudioClassification
    assert model.config.to_dict() == config
    assert anatomy.STRUCTURE_FIELD not in config and not hasattr(model.config, anatomy.STRUCTURE_FIELD)
    after = model.state_dict()
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], state[k]) for k in state)
    assert pruned.config is not model.config
    assert getattr(pruned.config, anatomy.STRUCTURE_FIELD) == [
        {"heads": 3, "qk_head_dim": 2, "v_head_dim": 7},
        {"heads": 1, "qk_head_dim": 8, "v_head_dim": 1},
    ]


def test_unequal_channel_counts_are_rejected(model):
    plan = _plan(model, _layer((0, 1), [(0, 1), (0, 1, 2)], ALL), _layer(range(4), ALL, ALL))
    with pytest.raises(ValueError, match=r"Layer 0: kept heads keep different numbers of Q/K channels"):
        apply_plan(model, plan)
    plan = _plan(model, _layer(range(4), ALL, ALL), _layer((0, 1), ALL, [(0,), (0, 1)]))
    with pytest.raises(ValueError, match=r"Layer 1: .* different numbers of V/O channels"):
        apply_plan(model, plan)


def test_plan_for_another_shape_is_rejected(model):
    plan = _plan(model, *CASES["entire_head"])
    pruned = apply_plan(model, plan)
    with pytest.raises(ValueError, match=r"Layer 0: the plan was made for heads=4"):
        apply_plan(pruned, plan)


def test_pruning_a_pruned_model(model):
    """Indices are relative to the current model: two steps equal the composed single step."""
    first = _plan(model, *CASES["same_channel"])  # layer 0: qk (0,3,6), vo (1,2,4,5,7)
    once = apply_plan(model, first)
    # Step 2, in the pruned model's indices: layer 0 keeps current heads 1, 3 with current
    # qk channels (0, 2) -> original (0, 6) and vo (1, 4) -> original (2, 7).
    second = _plan(once, _layer((1, 3), (0, 2), (1, 4)), _layer((0, 2), (1, 3, 4), (0, 1)))
    twice = apply_plan(once, second)
    composed = _plan(model, _layer((1, 3), (0, 6), (2, 7)), _layer((0, 2), (2, 4, 5), (0, 7)))
    x = _x(model)
    torch.testing.assert_close(_logits(twice, x), masked_logits(model, composed, x), rtol=0, atol=1e-5)
    torch.testing.assert_close(_logits(twice, x), _logits(apply_plan(model, composed), x), rtol=0, atol=0)
    assert anatomy.describe(twice)["heads"] == [2, 2]


def test_describe_and_parameter_count_of_a_pruned_model(model):
    pruned = apply_plan(model, _plan(model, *CASES["qk_ne_vo"]))
    facts = anatomy.describe(pruned)
    assert facts["heads"] == [3, 1] and facts["qk_head_dims"] == [2, 8] and facts["v_head_dims"] == [7, 1]
    assert facts["head_dim"] == D and facts["pruned"] is True
    d = 32
    # Per layer: q, k have h*dqk rows of (d weights + 1 bias); v has h*dv; o has d*h*dv + d bias.
    by_hand = sum(2 * h * q * (d + 1) + h * v * (d + 1) + d * h * v + d for h, q, v in [(3, 2, 7), (1, 8, 1)])
    assert anatomy.attention_parameters(pruned) == by_hand == 2418


def test_save_and_reload_exactly(model, tmp_path):
    plan = _plan(model, *CASES["zero_head"], scorer="fisher", pattern="per-head", threshold="global")
    pruned = apply_plan(model, plan)
    extractor = ASTFeatureExtractor(num_mel_bins=32, max_length=64)
    out = save_pruned(pruned, tmp_path / "pruned", plan=plan, feature_extractor=extractor, labels=TINY_LABELS)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["PrunedASTForAudioClassification"]
    assert config[anatomy.STRUCTURE_FIELD][0] == {"heads": 0, "qk_head_dim": 0, "v_head_dim": 0}
    assert not list(tmp_path.glob(".pruned*"))  # no temporary folder left behind

    loaded, loaded_extractor, labels = load_model(out)
    assert type(loaded) is PrunedASTForAudioClassification and not loaded.training
    assert anatomy.structure_of(loaded) == anatomy.structure_of(pruned) == kept_structure(plan)
    assert labels == TINY_LABELS and loaded_extractor.max_length == 64
    assert load_plan(out) == plan
    x = _x(model)
    torch.testing.assert_close(_logits(loaded, x), _logits(pruned, x), rtol=0, atol=0)


def test_stock_class_refuses_a_pruned_folder(model, tmp_path):
    out = save_pruned(apply_plan(model, _plan(model, *CASES["per_head"])), tmp_path / "pruned")
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        ASTForAudioClassification.from_pretrained(out)


def test_save_refuses_to_clobber_and_overwrites_on_request(model, tmp_path):
    target = tmp_path / "pruned"
    save_pruned(apply_plan(model, _plan(model, *CASES["entire_head"])), target)
    second = apply_plan(model, _plan(model, *CASES["untouched"]))
    with pytest.raises(FileExistsError, match="not empty"):
        save_pruned(second, target)
    save_pruned(second, target, overwrite=True)
    assert anatomy.describe(load_model(target).model)["heads"] == [4, 1]
    with pytest.raises(ValueError, match="labels"):
        save_pruned(second, tmp_path / "other", labels=["a", "b"])
    with pytest.raises(ValueError, match="The plan produces"):
        save_pruned(second, tmp_path / "other", plan=_plan(model, *CASES["entire_head"]))


def test_overwrite_replaces_only_a_folder_prunekit_wrote(model, tmp_path):
    """A user's folder (no marker) survives overwrite=True, file for file."""
    pruned = apply_plan(model, _plan(model, *CASES["entire_head"]))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match=r"was not written by prunekit \(it has no \.prunekit-output\)"):
        save_pruned(pruned, mine, overwrite=True)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".mine.*"))  # nothing written aside either
    written = save_pruned(pruned, tmp_path / "ours")
    assert (written / MARKER_FILE).is_file()
    save_pruned(pruned, written, overwrite=True)  # its own output: replaced
