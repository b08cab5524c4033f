"""Attention maps of one clip: the weights a head really computed, placed on the right patches."""

import numpy as np
import pytest
import torch

from prunekit.evaluation.attention import clip_attention, cls_map, paint, rollout_map
from prunekit.heads.planner import plan_from_heads
from prunekit.heads.surgery import apply_plan
from prunekit.models import anatomy
from prunekit.models.family import PatchGrid


def _features(model, seed=0):
    return torch.randn(*anatomy.input_shape(model), generator=torch.Generator().manual_seed(seed))


def test_clip_attention_is_the_softmax_of_the_heads_own_queries_and_keys(tiny_model):
    x = _features(tiny_model)
    weights = clip_attention(tiny_model, x)
    grid = anatomy.patch_grid(tiny_model)
    assert tiny_model.config._attn_implementation == "sdpa"  # the model passed in keeps its kernel
    assert len(weights) == 2 and weights[0].shape == (4, grid.extra + grid.patches, grid.extra + grid.patches)
    # Reference: capture layer 1's input and recompute its attention from q_proj and k_proj by hand.
    captured = {}
    block = anatomy.attention(tiny_model, 1)
    handle = block.register_forward_pre_hook(lambda m, args, kwargs: captured.update(h=args[0] if args else kwargs["hidden_states"]),
                                             with_kwargs=True)
    with torch.no_grad():
        tiny_model(x[None])
        handle.remove()
        proj = anatomy.projections(tiny_model, 1)
        h = captured["h"][0]  # (T, d)
        q, k = proj.q(h).view(len(h), 4, -1).transpose(0, 1), proj.k(h).view(len(h), 4, -1).transpose(0, 1)
        reference = ((q @ k.transpose(1, 2)) * block.scaling).softmax(-1).numpy()  # (h, T, T)
    np.testing.assert_allclose(weights[1], reference, atol=1e-5)
    np.testing.assert_allclose(cls_map(weights, grid, 1, 2), reference[2, 0, 2:].reshape(grid.frequency, grid.time),
                               atol=1e-5)
    with pytest.raises(ValueError, match=r"No head 4 in layer 1: the model has heads per layer \[4, 4\]"):
        cls_map(weights, grid, 1, 4)


def test_rollout_against_a_by_hand_product_and_with_an_emptied_layer(tiny_model):
    x = _features(tiny_model, seed=1)
    weights = clip_attention(tiny_model, x)
    grid = anatomy.patch_grid(tiny_model)
    t = weights[0].shape[-1]
    a0 = 0.5 * weights[0].mean(0) + 0.5 * np.eye(t)
    a1 = 0.5 * weights[1].mean(0) + 0.5 * np.eye(t)
    expected = (a1 / a1.sum(-1, keepdims=True)) @ (a0 / a0.sum(-1, keepdims=True))
    np.testing.assert_allclose(rollout_map(weights, grid), expected[0, 2:].reshape(grid.frequency, grid.time),
                               atol=1e-10)
    # Layer 0 pruned to no heads: it passes its input on, so the rollout is layer 1's alone.
    pruned = apply_plan(tiny_model, plan_from_heads(tiny_model, [[], [0, 1, 2, 3]]))
    emptied = clip_attention(pruned, x)
    assert emptied[0].shape[0] == 0
    only = 0.5 * emptied[1].mean(0) + 0.5 * np.eye(t)
    np.testing.assert_allclose(rollout_map(emptied, grid), (only / only.sum(-1, keepdims=True))[0, 2:]
                               .reshape(grid.frequency, grid.time), atol=1e-10)


def test_paint_spreads_patches_and_averages_overlaps():
    grid = PatchGrid(extra=2, frequency=2, time=2, size=2, f_stride=1, t_stride=2)  # overlap in frequency
    values = np.array([[1.0, 2.0], [3.0, 4.0]])
    painted = paint(values, grid, frames=5, mels=3)
    assert painted.shape == (3, 5)
    np.testing.assert_array_equal(painted[0, :4], [1, 1, 2, 2])  # mel bin 0: row f=0 only
    np.testing.assert_array_equal(painted[1, :4], [2, 2, 3, 3])  # mel bin 1: mean of f=0 and f=1
    np.testing.assert_array_equal(painted[2, :4], [3, 3, 4, 4])
    assert np.isnan(painted[:, 4]).all()  # no patch covers the last frame


def test_the_patch_grid_is_frequency_major_as_transformers_flattens_it(tiny_config):
    """A patch's token is where the patch embedding puts it: perturb one input cell that only patch
    (f, t) covers, and only that token's embedding (before any attention) changes."""
    from transformers import ASTForAudioClassification

    model = ASTForAudioClassification(tiny_config(max_length=64, num_mel_bins=32)).eval()
    grid = anatomy.patch_grid(model)
    assert (grid.frequency, grid.time, grid.size, grid.f_stride, grid.t_stride) == (2, 5, 16, 10, 10)
    embed = model.audio_spectrogram_transformer.embeddings
    x = _features(model)
    for f, t in ((1, 2), (0, 4)):
        y = x.clone()
        y[t * grid.t_stride + 7, f * grid.f_stride + 7] += 5.0  # (frames, mels): offsets 6-9 are (f, t)'s alone
        with torch.no_grad():
            changed = ((embed(y[None]) - embed(x[None])).abs().sum(-1)[0] > 1e-6).nonzero().flatten().tolist()
        assert changed == [grid.extra + f * grid.time + t]
