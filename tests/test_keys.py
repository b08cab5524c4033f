"""Learned key priors (FiAK): uniform priors change nothing, pruned forwards equal a masked
reference, the CLS and distillation keys stay, priors learn, and everything saves and reloads."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import ASTForAudioClassification

from prunekit.errors import ConfigurationError, ModelError
from prunekit.evaluation.cost import count_macs
from prunekit.heads.planner import plan_from_heads
from prunekit.heads.scores import ScoringData
from prunekit.heads.surgery import apply_plan, save_pruned
from prunekit.keys.cost import attention_macs
from prunekit.keys.learn import KeyLearnConfig, learn_priors_on
from prunekit.keys.priors import add_key_priors, prior_table, random_scores, received_attention_scores
from prunekit.keys.prune import choose_keys, prune_keys, unprune_keys
from prunekit.models import anatomy, load_model
from prunekit.models.key_priors import KEY_FIELD, KeyPriorASTForAudioClassification


@pytest.fixture
def grid_model(tiny_config) -> ASTForAudioClassification:
    """The tiny AST with 64 frames: a 1 x 5 patch grid (the 24-frame tiny model has one patch)."""
    torch.manual_seed(0)
    return ASTForAudioClassification(tiny_config(max_length=64)).eval()


def _randomise_priors(model: KeyPriorASTForAudioClassification, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for keys in model.key_priors:
            keys.log_prior.copy_(torch.randn(keys.log_prior.shape, generator=generator))


def _reference_logits(model: KeyPriorASTForAudioClassification, x: torch.Tensor) -> torch.Tensor:
    """An independent forward: every key computed, head by head, with the log-prior added and
    ``-inf`` logits at every dropped key (read from prior_table's ``kept``)."""
    table = prior_table(model)
    ast = model.audio_spectrogram_transformer
    hidden = ast.embeddings(x)  # (B, T, d)
    for i, layer in enumerate(ast.layers):
        h = layer.layernorm_before(hidden)
        attention = layer.attention
        heads, dqk, dv = anatomy.family_of(model).heads(model, attention)
        q = attention.q_proj(h).unflatten(-1, (heads, dqk))  # (B, T, h, dqk)
        k = attention.k_proj(h).unflatten(-1, (heads, dqk))
        v = attention.v_proj(h).unflatten(-1, (heads, dv))
        outs = []
        for head in range(heads):
            rows = table[(table["layer"] == i) & (table["head"] == head)].sort_values("key")
            bias = torch.tensor(rows.log_prior.to_numpy(), dtype=torch.float32)
            bias[~torch.tensor(rows.kept.to_numpy())] = -math.inf
            bias = torch.cat([torch.zeros(2), bias])  # CLS and distillation: no prior
            logits = q[:, :, head] @ k[:, :, head].transpose(1, 2) * attention.scaling + bias  # (B, T, T)
            outs.append(logits.softmax(-1) @ v[:, :, head])  # (B, T, dv)
        mixed = torch.cat(outs, -1) if outs else h.new_zeros(*h.shape[:2], 0)
        hidden = attention.o_proj(mixed) + hidden
        hidden = hidden + layer.mlp(layer.layernorm_after(hidden))
    sequence = ast.layernorm(hidden)
    return model.classifier((sequence[:, 0] + sequence[:, 1]) / 2)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_uniform_priors_equal_the_plain_model_exactly(grid_model, implementation):
    grid_model.set_attn_implementation(implementation)
    priors = add_key_priors(grid_model)
    x = anatomy.dummy_input(grid_model, 3)
    with torch.no_grad():
        assert torch.equal(priors(x).logits, grid_model(x).logits)
    assert type(grid_model) is ASTForAudioClassification  # the original is untouched
    assert not hasattr(grid_model.config, KEY_FIELD)


def test_priors_change_the_outputs_under_sdpa(grid_model):
    priors = add_key_priors(grid_model)
    _randomise_priors(priors)
    x = anatomy.dummy_input(grid_model, 2)
    with torch.no_grad():
        sdpa = priors(x).logits
        priors.set_attn_implementation("eager")
        eager = priors(x).logits
        assert not torch.allclose(sdpa, grid_model(x).logits, atol=1e-4)
    torch.testing.assert_close(sdpa, eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sdpa, _reference_logits(priors, x).detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("granularity", ["layer", "head"])
@pytest.mark.parametrize("threshold", ["global", "local"])
def test_pruned_forward_equals_a_masked_reference(grid_model, granularity, threshold):
    priors = add_key_priors(grid_model)
    _randomise_priors(priors)
    pruned = prune_keys(priors, 0.4, granularity, threshold)
    table = prior_table(pruned)
    assert 0 < (~table.kept).sum() < len(table)
    x = anatomy.dummy_input(grid_model, 2)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x).logits, _reference_logits(pruned, x), atol=1e-5, rtol=1e-5)
        pruned.set_attn_implementation("eager")
        torch.testing.assert_close(pruned(x).logits, _reference_logits(pruned, x), atol=1e-5, rtol=1e-5)


def test_choices_follow_the_scores(grid_model):
    scores = [torch.arange(5.0).expand(4, 5).clone() for _ in range(2)]  # key 0 lowest everywhere
    local = choose_keys(grid_model, 0.4, "layer", "local", scores=scores)
    assert sorted(local[~local.kept].key.unique()) == [0, 1]
    one_layer = [torch.zeros(4, 5), torch.ones(4, 5)]  # layer 0 is worth less
    chosen = choose_keys(grid_model, 0.5, "layer", "global", scores=one_layer)
    assert set(chosen[~chosen.kept].layer) == {0}
    head = choose_keys(grid_model, 0.2, "head", "local", scores=random_scores(grid_model))
    assert (head[~head.kept].groupby(["layer", "head"]).size() == 1).all()  # round(0.2 x 5) per head


def test_tied_scores_spread_the_cut_instead_of_emptying_the_first_layers(grid_model):
    """Uniform priors (learning that kept its starting point) tie everywhere: a global budget of
    50 % must not take every patch key of the first layers."""
    for threshold in ("global", "local"):
        choice = choose_keys(add_key_priors(grid_model), 0.5, "layer", threshold)
        per_layer = choice.groupby("layer")["kept"].mean()
        assert per_layer.between(0.2, 0.8).all(), (threshold, per_layer.to_dict())
        assert choice["kept"].mean() == pytest.approx(
            0.5 if threshold == "global" else 0.6
        )  # 5 or 2 of 5 keys
        again = choose_keys(add_key_priors(grid_model), 0.5, "layer", threshold)
        assert again["kept"].equals(choice["kept"])  # the tie-break is fixed, not drawn anew


def test_cls_and_distillation_keys_are_never_dropped(grid_model):
    priors = add_key_priors(grid_model)
    _randomise_priors(priors)
    for granularity in ("layer", "head"):
        pruned = prune_keys(priors, 0.99, granularity, "global")
        assert not prior_table(pruned).kept.any()  # every patch key gone, yet the forward runs
        for keys in pruned.key_priors:
            if granularity == "layer":
                assert keys.key_index.tolist() == [0, 1]
            assert keys.bias()[:, :2].eq(0).all()  # the two extra keys: no prior, never -inf
        with torch.no_grad():
            logits = pruned(anatomy.dummy_input(grid_model, 2)).logits
        assert torch.isfinite(logits).all()
    assert set(prior_table(priors).key) == set(range(5))  # the table has patch keys only


def test_layer_pruning_saves_what_flop_counter_sees(grid_model):
    priors = add_key_priors(grid_model)
    _randomise_priors(priors)
    layer = prune_keys(priors, 0.6, "layer", "local")
    head = prune_keys(priors, 0.6, "head", "local")
    saved = count_macs(grid_model) - count_macs(layer)
    assert saved > 0
    assert saved == attention_macs(grid_model) - attention_macs(layer)
    assert count_macs(head) == count_macs(grid_model)  # a mask computes every score anyway
    assert attention_macs(head, needed=True) < attention_macs(head) == attention_macs(grid_model)


def test_priors_learn_the_key_that_carries_the_label(grid_model):
    """Two classes; only the last patch (frames 46-63, no other patch covers them) says which.
    The base weights stay frozen: only the priors can make the model read that patch more."""
    generator = torch.Generator().manual_seed(0)
    n = 96
    y = torch.arange(n) % 2
    x = torch.randn(n, 64, 16, generator=generator) * 0.5
    x[:, 46:, :] = (y.float() * 2 - 1)[:, None, None] * 2.0
    data = ScoringData(x, y)
    config = KeyLearnConfig(epochs=3, lr=0.2, batch_size=32, validations_per_epoch=1)  # base frozen
    learned, history = learn_priors_on(grid_model, data, data, config=config)
    assert history.val_loss.iloc[-1] < history.val_loss.iloc[0]
    mean_prior = prior_table(learned).groupby("key").prior.mean()
    assert mean_prior.idxmax() == 4, mean_prior
    assert mean_prior[4] > 1 / 5


def test_learning_leaves_the_model_alone_and_stops_when_asked(grid_model):
    before = {k: v.clone() for k, v in grid_model.state_dict().items()}
    x = torch.randn(64, 64, 16, generator=torch.Generator().manual_seed(0))
    data = ScoringData(x, torch.arange(64) % 3)
    calls = []
    learned, history = learn_priors_on(
        grid_model,
        data,
        data,
        config=KeyLearnConfig(epochs=2, batch_size=16),
        stop=lambda: calls.append(1) or len(calls) >= 2,
    )
    assert history.attrs["stopped"] and int(history.step.iloc[-1]) == 2
    assert all(torch.equal(v, grid_model.state_dict()[k]) for k, v in before.items())
    assert isinstance(learned, KeyPriorASTForAudioClassification)
    moved = [keys.log_prior.abs().max().item() for keys in learned.key_priors]
    if history.kept.iloc[-1]:
        assert max(moved) > 0


@pytest.mark.parametrize("granularity", [None, "layer", "head"])
def test_save_and_reload_are_exact(grid_model, tmp_path, granularity):
    model = add_key_priors(grid_model)
    _randomise_priors(model)
    if granularity:
        model = prune_keys(model, 0.4, granularity)
    folder = save_pruned(model, tmp_path / "keys")
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pkl"))
    loaded, _, _ = load_model(folder)
    assert isinstance(loaded, KeyPriorASTForAudioClassification)
    assert prior_table(loaded).equals(prior_table(model))
    x = anatomy.dummy_input(grid_model, 2)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)


def test_key_pruning_stacks_with_head_pruning(grid_model, tmp_path):
    heads = apply_plan(grid_model, plan_from_heads(grid_model, {0: [0, 2], 1: []}))
    priors = add_key_priors(heads)
    assert [keys.heads for keys in priors.key_priors] == [2, 0]
    x = anatomy.dummy_input(grid_model, 2)
    with torch.no_grad():
        assert torch.equal(priors(x).logits, heads(x).logits)
    _randomise_priors(priors)
    for granularity in ("layer", "head"):
        pruned = prune_keys(priors, 0.4, granularity)
        with torch.no_grad():
            torch.testing.assert_close(pruned(x).logits, _reference_logits(pruned, x), atol=1e-5, rtol=1e-5)
        loaded, _, _ = load_model(save_pruned(pruned, tmp_path / granularity))
        assert anatomy.structure_of(loaded) == anatomy.structure_of(heads)
        with torch.no_grad():
            assert torch.equal(loaded(x).logits, pruned(x).logits)


def test_received_attention_scores_are_attention_shares(grid_model):
    x = anatomy.dummy_input(grid_model, 3)
    scores = received_attention_scores(grid_model, x, batch_size=2)
    assert [tuple(s.shape) for s in scores] == [(4, 5), (4, 5)]
    assert all(((s > 0) & (s < 1)).all() for s in scores)
    assert all((s.sum(-1) < 1).all() for s in scores)  # the CLS and distillation keys take the rest


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_sparsity_is_named(grid_model, sparsity):
    with pytest.raises(ConfigurationError, match=r"\[0, 1\).*" + str(sparsity).replace(".", r"\.")):
        prune_keys(grid_model, sparsity)


def test_bad_penalty_and_other_input_length_are_named(grid_model, tiny_model):
    with pytest.raises(ConfigurationError, match=r"'penalty': -0\.5"):
        KeyLearnConfig(penalty=-0.5)
    other = random_scores(tiny_model)  # the 24-frame model: 1 patch key, not 5
    with pytest.raises(ModelError, match=r"5 patch tokens .* cover 1"):
        prune_keys(grid_model, 0.5, scores=other)
    with pytest.raises(ModelError, match="pruned already"):
        prune_keys(prune_keys(grid_model, 0.2), 0.2)


def test_unpruning_keeps_the_priors_and_every_key(grid_model):
    priors = add_key_priors(grid_model)
    _randomise_priors(priors)
    again = unprune_keys(prune_keys(priors, 0.6, "layer"))
    assert prior_table(again).equals(prior_table(priors))
    x = anatomy.dummy_input(grid_model, 2)
    with torch.no_grad():
        assert torch.equal(again(x).logits, priors(x).logits)


def test_cli_refuses_bad_values_before_loading(run_main):
    result = run_main("keys", "--model", "/nonexistent", "--key-sparsity", "1")
    assert result.returncode == 2 and "[0, 1)" in result.stderr and "got 1" in result.stderr
    result = run_main("keys", "--model", "/nonexistent", "--key-sparsity", "0.5", "--penalty", "-1")
    assert result.returncode == 2 and "'penalty': -1.0" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_learns_prunes_and_saves(run_main, tiny_model_dir, tiny_speech_commands, tmp_path):
    out = tmp_path / "keys"
    result = run_main(
        "keys",
        "--model",
        tiny_model_dir,
        "--data",
        tiny_speech_commands,
        "--epochs",
        "1",
        "--key-sparsity",
        "0.5",
        "--granularity",
        "head",
        "--batch-size",
        "4",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    lines = {
        line.split()[0]: line for line in result.stdout.splitlines() if "accuracy" in line and "MACs" in line
    }
    assert set(lines) == {"dense", "priors", "key-pruned"}
    assert "skipping masked keys would save" in lines["key-pruned"]
    assert isinstance(load_model(out).model, KeyPriorASTForAudioClassification)


@pytest.mark.slow
def test_done_when_command_runs_offline(run_cli, real_cache):
    result = run_cli(
        "keys",
        "--model",
        "demo",
        "--data",
        "demo",
        "--epochs",
        "1",
        "--key-sparsity",
        "0.5",
        cache=real_cache,
    )
    assert result.returncode == 0, result.stderr
    assert "key-pruned" in result.stdout and "dense" in result.stdout


def test_attention_macs_follow_the_tokens_of_a_token_pruned_model(grid_model):
    from prunekit.keys.cost import layer_attention_macs
    from prunekit.tokens.topk import prune_tokens

    dense = layer_attention_macs(grid_model)
    tokens = layer_attention_macs(prune_tokens(grid_model, 0.4, blocks=(0,)))
    assert tokens[0] == dense[0] and tokens[1] < dense[1]  # block 0 drops 3 of 5 patches after its attention
