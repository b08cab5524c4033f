"""LoRA recovery: it lowers the validation loss of a damaged model, merging changes no output,
the input model is never touched, and pruned (zero-head) models recover and round-trip."""

import copy

import pytest
import torch
from conftest import TINY_LABELS
from transformers import ASTFeatureExtractor

from prunekit.data.augment import spec_augment
from prunekit.data.datasets import read_speech_commands
from prunekit.heads.planner import plan_from_heads
from prunekit.heads.scoring import scoring_data
from prunekit.heads.surgery import apply_plan, save_pruned
from prunekit.models import anatomy, load_model
from prunekit.recovery.lora import RecoveryConfig, add_adapters, recover

EXTRACTOR = ASTFeatureExtractor(num_mel_bins=16, max_length=24)
FAST = RecoveryConfig(train_clips=None, validation_clips=None, batch_size=2)  # 6 train clips, 3 validation


@pytest.fixture
def dataset(tiny_speech_commands):
    return read_speech_commands(tiny_speech_commands)


def _loss(model, data) -> float:
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(data.features).logits, data.targets).item()


def _logits(model, seed=3) -> torch.Tensor:
    x = torch.randn(2, *anatomy.input_shape(model), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x).logits


def _zero_head_model(tiny_model):
    return apply_plan(tiny_model, plan_from_heads(tiny_model, [[], [1, 3]]))


def test_recovery_lowers_the_validation_loss_of_a_damaged_model(tiny_model, dataset):
    damaged = copy.deepcopy(tiny_model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in damaged.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    validation = scoring_data(dataset, EXTRACTOR, TINY_LABELS, "validation")
    config = RecoveryConfig(train_clips=None, validation_clips=None, batch_size=2, lr=3e-3, epochs=6)
    recovered, history = recover(damaged, EXTRACTOR, TINY_LABELS, dataset, config=config)
    assert _loss(recovered, validation) < 0.8 * _loss(damaged, validation)
    assert history["val_loss"].iloc[0] == pytest.approx(_loss(damaged, validation), rel=1e-5)
    kept = history[history["kept"]]
    assert len(kept) == 1 and kept["val_loss"].iloc[0] == history["val_loss"].min()
    assert kept["val_loss"].iloc[0] == pytest.approx(_loss(recovered, validation), rel=1e-4)
    assert list(history["step"]) == [0, 3, 6, 9, 12, 15, 18]  # 6 clips / batch 2 = 3 steps per epoch


@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "zero-head layer"])
def test_merged_and_unmerged_outputs_agree(tiny_model, pruned):
    model = _zero_head_model(tiny_model) if pruned else tiny_model
    lora = add_adapters(model, RecoveryConfig(rank=4))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_" in name:  # B starts at 0: make every adapter change the output
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    unmerged = _logits(lora)
    assert (unmerged - _logits(model)).abs().max() > 1e-3
    merged = lora.merge_and_unload()
    assert type(merged) is type(model) and anatomy.structure_of(merged) == anatomy.structure_of(model)
    torch.testing.assert_close(_logits(merged), unmerged, rtol=1e-5, atol=1e-5)


def test_adapters_sit_on_every_linear_with_weights(tiny_model):
    lora = add_adapters(_zero_head_model(tiny_model))
    adapted = {name.removeprefix("model.") for name, m in lora.named_modules() if hasattr(m, "lora_A")}
    assert "classifier.dense" in adapted
    kinds = {n.rsplit(".", 1)[-1] for n in adapted}
    assert kinds == {"q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2", "dense"}
    assert not any(".layers.0.attention." in n for n in adapted)  # zero-head layer: empty projections
    assert all("lora_" in n for n, p in lora.named_parameters() if p.requires_grad)


def test_recovery_leaves_its_input_untouched(tiny_model, dataset):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    recovered, _ = recover(tiny_model, EXTRACTOR, TINY_LABELS, dataset, config=FAST)
    assert recovered is not tiny_model and not tiny_model.training
    assert not any("lora" in name for name, _ in tiny_model.named_modules())
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.requires_grad for p in recovered.parameters())  # as the input's
    assert not recovered.training


def test_zero_head_model_recovers_and_round_trips(tiny_model, dataset, tmp_path):
    pruned = _zero_head_model(tiny_model)
    config = RecoveryConfig(
        train_clips=None, validation_clips=None, batch_size=2, lr=1e-2, epochs=2, freq_mask=4, time_mask=6
    )
    recovered, history = recover(pruned, EXTRACTOR, TINY_LABELS, dataset, config=config)
    assert type(recovered) is type(pruned)
    assert anatomy.structure_of(recovered) == anatomy.structure_of(pruned)
    if not history["kept"].iloc[0]:  # a trained checkpoint was merged: the weights moved
        assert not torch.equal(anatomy.classifier(recovered).weight, anatomy.classifier(pruned).weight)
    save_pruned(recovered, tmp_path / "recovered", feature_extractor=EXTRACTOR, labels=TINY_LABELS)
    reloaded = load_model(tmp_path / "recovered").model
    torch.testing.assert_close(_logits(reloaded), _logits(recovered), rtol=0, atol=0)


def test_spec_augment_masks_whole_bands():
    x = torch.ones(4, 24, 16)  # (B, frames, mels)
    torch.manual_seed(0)
    out = spec_augment(6, 8)(x)
    assert out.shape == x.shape and (out == 0).any() and (out == 1).any()
    for clip in out:
        zero = clip == 0
        rows, cols = zero.all(1), zero.all(0)  # masked frames, masked mel bins
        assert torch.equal(zero, rows[:, None] | cols[None, :])  # zeros only in whole bands
    assert spec_augment(0, 0)(x) is x


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match=r"rank.*warmup_fraction"):
        RecoveryConfig(rank=0, warmup_fraction=1.5)
