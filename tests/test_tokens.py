"""Top-K token pruning: exact against a masked reference, ceil and ties, CLS/distillation kept,
scores against eager attention, save/reload, stacking on head pruning, MACs."""

import itertools
import math

import pytest
import torch
from transformers import ASTForAudioClassification

from prunekit.errors import ConfigurationError, ModelError
from prunekit.evaluation.cost import count_macs
from prunekit.heads.plan import LayerPlan, PruningPlan
from prunekit.heads.surgery import apply_plan, save_pruned
from prunekit.models import anatomy, load_model
from prunekit.models.ast import backbone, heads_of
from prunekit.models.token_pruned import EXTRA_TOKENS, TokenPrunedASTForAudioClassification, run_tokens
from prunekit.models.token_rules import (
    RULES,
    TokenPruning,
    default_blocks,
    kept_count,
    kept_counts,
    select_top,
    topk_selectors,
)
from prunekit.tokens.topk import prune_tokens, token_pruning_of, trace_tokens

N_PATCHES = 10  # tiny AST with 32 mels x 64 frames: a 2 x 5 patch grid


@pytest.fixture
def model(tiny_config) -> ASTForAudioClassification:
    """Tiny AST (3 blocks, 4 heads, 10 patches) with every parameter random, so the attention is
    far from uniform and a wrong mask or a dropped CLS token would show."""
    torch.manual_seed(0)
    model = ASTForAudioClassification(tiny_config(max_length=64, num_mel_bins=32, num_hidden_layers=3)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return model


def _x(batch=3, seed=2) -> torch.Tensor:
    return torch.randn(batch, 64, 32, generator=torch.Generator().manual_seed(seed))


def _logits(model, x) -> torch.Tensor:
    with torch.no_grad():
        return model(x).logits


def _masked_reference(model, x: torch.Tensor, dropped: dict[int, list[list[int]]]) -> torch.Tensor:
    """A slow, independent forward pass: clip by clip, head by head, every token is computed, but
    a token dropped in block i is masked out of the attention (as a key) from block i+1 on, and
    its own output is never read. dropped[i][b]: original patch indices clip b loses in block i."""
    ast = backbone(model)
    out = []
    for b in range(len(x)):
        h = ast.embeddings(x[b : b + 1])[0]  # (T, d)
        alive = torch.ones(h.shape[0], dtype=torch.bool)
        for i, layer in enumerate(ast.layers):
            attn = layer.attention
            heads = heads_of(attn)
            normed = layer.layernorm_before(h)
            q, k, v = attn.q_proj(normed), attn.k_proj(normed), attn.v_proj(normed)  # (T, h*dqk|dv)
            mixed = []
            for head in range(heads):
                dqk, dv = q.shape[1] // heads, v.shape[1] // heads
                qh, kh = q[:, head * dqk : (head + 1) * dqk], k[:, head * dqk : (head + 1) * dqk]
                logits = qh @ kh.T * attn.scaling  # (T, T)
                logits[:, ~alive] = -math.inf
                mixed.append(logits.softmax(-1) @ v[:, head * dv : (head + 1) * dv])  # (T, dv)
            h = h + attn.o_proj(torch.cat(mixed, -1) if mixed else h.new_zeros(len(h), 0))
            for p in dropped.get(i, [[]] * len(x))[b]:
                alive[EXTRA_TOKENS + p] = False
            h = h + layer.mlp(layer.layernorm_after(h))
        final = ast.layernorm(h)
        out.append(model.classifier((final[0] + final[1]) / 2))
    return torch.stack(out)


def _fixed(keep_sets: list[list[int]]):
    """A selector that keeps the given original patch indices of each clip (same count per clip)."""
    def select(block):
        rows = []
        for b, wanted in enumerate(keep_sets):
            present = block.positions[b].tolist()
            rows.append([present.index(p) for p in sorted(wanted)])
        return torch.tensor(rows)
    return select


# --- exactness --------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", RULES)
def test_keep_rate_one_gives_the_unpruned_outputs_exactly(model, rule):
    x = _x()
    pruned = prune_tokens(model, 1.0, [0, 1, 2], rule)
    assert torch.equal(_logits(pruned, x), _logits(model, x))


def test_keep_rate_one_is_exact_under_eager_attention_too(model):
    model.set_attn_implementation("eager")
    x = _x()
    assert torch.equal(_logits(prune_tokens(model, 1.0, [1]), x), _logits(model, x))


def test_a_fixed_token_set_equals_the_masked_reference(model):
    x = _x()
    keep1 = [[0, 2, 3, 5, 7, 9], [1, 2, 3, 4, 8, 9], [0, 1, 5, 6, 7, 8]]  # block 0: 6 of 10
    keep2 = [[2, 5, 9], [1, 4, 8], [0, 6, 7]]  # block 2: 3 of those 6
    with torch.no_grad():
        run = run_tokens(model, x, {0: _fixed(keep1), 2: _fixed(keep2)})
        dropped = {0: [sorted(set(range(N_PATCHES)) - set(k)) for k in keep1],
                   2: [sorted(set(a) - set(k)) for a, k in zip(keep1, keep2)]}
        reference = _masked_reference(model, x, dropped)
    assert run.kept[2].tolist() == keep2
    torch.testing.assert_close(run.logits, reference, atol=1e-5, rtol=1e-5)
    assert (run.logits - _logits(model, x)).abs().max() > 1e-2  # dropping tokens did change something


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_equals_the_masked_reference_with_its_own_choice(model, rule):
    x = _x()
    pruned = prune_tokens(model, 0.3, [1], rule)
    run = trace_tokens(pruned, x)
    assert run.kept[1].shape == (3, 3)  # ceil(0.3 x 10)
    dropped = {1: [sorted(set(range(N_PATCHES)) - set(k)) for k in run.kept[1].tolist()]}
    with torch.no_grad():
        torch.testing.assert_close(_logits(pruned, x), _masked_reference(model, x, dropped), atol=1e-5, rtol=1e-5)


def test_cls_and_distillation_tokens_survive_when_one_patch_is_left(model):
    x = _x()
    pruned = prune_tokens(model, 0.01, [0], "random", seed=3)
    run = trace_tokens(pruned, x)
    assert run.kept[0].shape == (3, 1)  # keep rate -> zero patches keeps one
    dropped = {0: [sorted(set(range(N_PATCHES)) - set(k)) for k in run.kept[0].tolist()]}
    with torch.no_grad():
        torch.testing.assert_close(run.logits, _masked_reference(model, x, dropped), atol=1e-5, rtol=1e-5)
        # had the CLS or distillation token gone, the pooled output would not be the reference's:
        with_cls_dropped = _masked_reference(model, x, {0: [d + [-2] for d in dropped[0]]})
    assert (with_cls_dropped - run.logits).abs().max() > 1e-3


# --- scores, ceil, ties ----------------------------------------------------------------------
def test_scores_equal_the_eager_attention_weights(model):
    """The one-query CLS row and the received attention equal what eager attention returns."""
    x = _x()
    eager = backbone(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        weights = eager(x, output_attentions=True).attentions[1]  # (B, h, T, T) of block 1
    seen = {}

    def spy(block):
        seen["cls"], seen["received"] = block.cls_attention(), block.received_attention()
        return torch.arange(N_PATCHES).expand(len(x), N_PATCHES)

    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        run_tokens(model, x, {1: spy})
    torch.testing.assert_close(seen["cls"], weights[:, :, 0, 2:].mean(1))
    torch.testing.assert_close(seen["received"], weights[:, :, 2:, 2:].mean((1, 2)))


def test_kept_count_is_the_ceiling_at_least_one():
    assert kept_count(0.7, 10) == 7  # a bare float ceil gives 8 (0.7 * 10 = 7.000000000000001)
    assert kept_count(0.5, 45) == 23 and kept_count(0.7, 45) == 32 and kept_count(1.0, 45) == 45
    assert kept_count(0.01, 5) == 1 and kept_count(1e-9, 1) == 1
    assert kept_counts(TokenPruning(0.5, (0, 2)), 10, 3) == [5, 5, 3]


def test_ties_keep_the_lower_patch_index():
    scores = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0], [3.0, 3.0, 3.0, 3.0, 3.0]])
    assert select_top(scores, 2).tolist() == [[1, 2], [0, 1]]
    assert select_top(scores, 4).tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]


def test_a_constant_input_ties_every_patch_and_keeps_the_first(model):
    x = torch.zeros(2, 64, 32)
    run = trace_tokens(prune_tokens(model, 0.4, [0], "intensity"), x)
    assert run.kept[0].tolist() == [[0, 1, 2, 3]] * 2


def test_intensity_keeps_the_loudest_patches(model):
    x = torch.zeros(1, 64, 32)
    x[0, 40:56, 16:32] = 5.0  # frames 40-55, mels 16-31: the patch at frequency row 1, time column 4
    run = trace_tokens(prune_tokens(model, 0.1, [0], "intensity"), x)
    assert run.kept[0].tolist() == [[1 * 5 + 4]]


def test_random_is_seeded(model):
    x = _x()
    a = trace_tokens(prune_tokens(model, 0.5, [0], "random", seed=1), x).kept[0]
    b = trace_tokens(prune_tokens(model, 0.5, [0], "random", seed=1), x).kept[0]
    c = trace_tokens(prune_tokens(model, 0.5, [0], "random", seed=2), x).kept[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_default_blocks():
    assert default_blocks(12) == (3, 6, 9)
    assert default_blocks(6) == (1, 3, 4)
    assert default_blocks(2) == (0, 1)


# --- the model: copies, errors, save/reload, stacking, cost ------------------------------------
def test_the_original_model_is_untouched(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = prune_tokens(model, 0.5)
    assert type(model) is ASTForAudioClassification and not hasattr(model.config, "prunekit_tokens")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert token_pruning_of(pruned).blocks == default_blocks(3) == (0, 1, 2)
    assert token_pruning_of(model) is None


@pytest.mark.parametrize("kwargs, message", [
    ({"keep": 0.0}, "Keep rate 0.0 is outside (0, 1]"),
    ({"keep": 1.5}, "Keep rate 1.5 is outside (0, 1]"),
    ({"keep": 0.5, "blocks": []}, "No drop blocks"),
    ({"keep": 0.5, "blocks": [3]}, "Drop block(s) [3] outside the model: it has 3 blocks (indices 0 to 2)"),
    ({"keep": 0.5, "blocks": [-1]}, "[-1] outside the model"),
    ({"keep": 0.5, "rule": "loudest"}, "Unknown token rule 'loudest'; choose one of cls, received"),
])
def test_bad_settings_are_configuration_errors_naming_the_values(model, kwargs, message):
    with pytest.raises(ConfigurationError) as err:
        prune_tokens(model, **kwargs)
    assert message in str(err.value)


def test_save_and_reload_are_exact(model, tmp_path):
    x = _x()
    pruned = prune_tokens(model, 0.6, [0, 2], "cls")
    save_pruned(pruned, tmp_path / "t")
    loaded = load_model(tmp_path / "t").model
    assert type(loaded) is TokenPrunedASTForAudioClassification
    assert token_pruning_of(loaded) == token_pruning_of(pruned)
    assert torch.equal(_logits(loaded, x), _logits(pruned, x))


def test_a_damaged_token_field_is_a_model_error(model, tmp_path):
    pruned = prune_tokens(model, 0.6, [0])
    pruned.config.prunekit_tokens = {"keep": 0.6}
    with pytest.raises(ModelError, match="malformed"):
        pruned(_x())


def _head_plan(model) -> PruningPlan:
    all8 = tuple(range(8))
    layers = (LayerPlan((0, 2), (all8, all8), (all8, all8)),
              LayerPlan((1, 2, 3), ((0, 1, 2),) * 3, ((4, 5),) * 3),
              LayerPlan((), (), ()))  # an emptied layer: its attention adds only the o_proj bias
    return PruningPlan(layers, tuple(anatomy.attention_shapes(model)))


def test_head_pruning_and_token_pruning_stack_and_reload(model, tmp_path):
    x = _x()
    heads = apply_plan(model, _head_plan(model))
    stacked = prune_tokens(heads, 0.5, [0, 1, 2], "cls")
    assert torch.equal(_logits(prune_tokens(heads, 1.0, [0, 1, 2]), x), _logits(heads, x))
    run = trace_tokens(stacked, x)
    assert [run.kept[i].shape[1] for i in (0, 1, 2)] == [5, 3, 2]
    dropped = {0: [sorted(set(range(N_PATCHES)) - set(k)) for k in run.kept[0].tolist()],
               1: [sorted(set(a) - set(k)) for a, k in zip(run.kept[0].tolist(), run.kept[1].tolist())],
               2: [sorted(set(a) - set(k)) for a, k in zip(run.kept[1].tolist(), run.kept[2].tolist())]}
    with torch.no_grad():
        torch.testing.assert_close(run.logits, _masked_reference(heads, x, dropped), atol=1e-5, rtol=1e-5)
    save_pruned(stacked, tmp_path / "s")
    loaded = load_model(tmp_path / "s").model
    assert type(loaded) is TokenPrunedASTForAudioClassification
    assert anatomy.structure_of(loaded) == anatomy.structure_of(heads)
    assert torch.equal(_logits(loaded, x), _logits(stacked, x))


def test_head_pruning_a_token_pruned_model_keeps_its_token_pruning(model):
    x = _x()
    tokens_first = apply_plan(prune_tokens(model, 0.5, [1]), _head_plan(model))
    heads_first = prune_tokens(apply_plan(model, _head_plan(model)), 0.5, [1])
    assert type(tokens_first) is TokenPrunedASTForAudioClassification
    assert torch.equal(_logits(tokens_first, x), _logits(heads_first, x))


def test_macs_fall_as_the_keep_rate_falls(model):
    dense = count_macs(model)
    macs = [count_macs(prune_tokens(model, keep, [0, 1])) for keep in (1.0, 0.8, 0.6, 0.4, 0.2)]
    assert macs[0] == dense
    assert all(a > b for a, b in itertools.pairwise(macs)), macs


def test_topk_selectors_take_a_scheduled_keep_rate(model):
    pruning = token_pruning_of(prune_tokens(model, 0.5, [0]))
    with torch.no_grad():
        run = run_tokens(model, _x(), topk_selectors(pruning, keep=0.8))
    assert run.kept[0].shape == (3, 8)
    with pytest.raises(ConfigurationError, match="Keep rate 0"):
        topk_selectors(pruning, keep=0)


# --- patch importance ------------------------------------------------------------------------
def test_patch_statistics_are_the_mean_and_std_under_each_conv_window(model):
    from prunekit.tokens.patches import patch_statistics

    x = _x(batch=2)
    stats = patch_statistics(model, x)
    assert stats["intensity"].shape == (2, N_PATCHES)
    # patch (frequency row 1, time column 3): mel bins 10-25, frames 30-45 (patch 16, strides 10)
    window = x[1, 30:46, 10:26]
    torch.testing.assert_close(stats["intensity"][1, 1 * 5 + 3], window.mean())
    torch.testing.assert_close(stats["variation"][1, 1 * 5 + 3], window.std())


def test_cluster_ranks_are_ordered_by_value():
    from prunekit.tokens.patches import cluster_ranks

    values = torch.tensor([[0.0, 10.0, 20.1, 5.0], [19.9, 0.1, 30.0, 5.2], [10.1, 30.2, 40.0, 40.1]])
    clusters = cluster_ranks(values, clusters=5)
    order = values.flatten().argsort()
    assert (clusters.ranks.flatten()[order].diff() >= 0).all()  # rank never falls as the value grows
    assert clusters.table["low"].is_monotonic_increasing and clusters.table["share"].sum() == pytest.approx(1)
    assert clusters.ranks[2, 3].item() == 4 and clusters.ranks[0, 0].item() == 0


def _brute_force_kendall(scores, ranks) -> float:
    concordant = discordant = pairs = 0
    for s, r in zip(scores.tolist(), ranks.tolist()):
        for i in range(len(s)):
            for j in range(i + 1, len(s)):
                pairs += 1
                if (s[i] - s[j]) * (r[i] - r[j]) >= 0:
                    concordant += 1
                else:
                    discordant += 1
    return (concordant - discordant) / pairs


def test_the_authors_kendall_equals_a_pair_loop_and_counts_ties_as_concordant():
    from prunekit.tokens.patches import authors_kendall

    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (70, 9), generator=g).float()  # many ties, and more than one chunk of clips
    ranks = torch.randint(0, 5, (70, 9), generator=g)
    assert authors_kendall(scores, ranks) == pytest.approx(_brute_force_kendall(scores, ranks), abs=1e-12)
    constant = torch.zeros(1, 6)
    assert authors_kendall(constant, torch.arange(6).unsqueeze(0)) == 1.0  # all ties: "perfect" agreement


def test_correlations_table_and_tau_b_beside_it(model):
    from scipy.stats import kendalltau

    from prunekit.tokens.patches import block_scores, cluster_ranks, correlations, patch_statistics

    x = _x(batch=4)
    ranks = {name: cluster_ranks(v, 3).ranks for name, v in patch_statistics(model, x).items()}
    scores = block_scores(model, x)
    table = correlations(scores, ranks)
    assert len(table) == 3 * 2 and set(table["tokens"]) == {N_PATCHES}
    row = table[(table.block == 1) & (table.statistic == "intensity")].iloc[0]
    expected = [kendalltau(s, r).statistic for s, r in zip(scores.scores[1].numpy(), ranks["intensity"].numpy())]
    assert row["tau_b"] == pytest.approx(float(torch.tensor(expected).nanmean()))
    pruned_scores = block_scores(prune_tokens(model, 0.5, [0, 1]), x)
    assert [pruned_scores.positions[i].shape[1] for i in range(3)] == [10, 5, 3]


def test_cluster_drop_of_nothing_is_the_plain_accuracy_and_of_everything_runs(model):
    from prunekit.tokens.patches import cluster_drop

    x = _x(batch=5)
    targets = _logits(model, x).argmax(-1)
    ranks = torch.randint(0, 5, (5, N_PATCHES), generator=torch.Generator().manual_seed(0))
    assert cluster_drop(model, x, targets, ranks, 1, []) == 1.0
    assert 0 <= cluster_drop(model, x, targets, ranks, 1, range(5)) <= 1  # every patch gone: CLS alone
    with pytest.raises(ConfigurationError, match="Block 7 is outside"):
        cluster_drop(model, x, targets, ranks, 7, [0])


# --- fine-tuning -----------------------------------------------------------------------------
def test_keep_schedule_is_a_cosine_from_one_then_holds():
    from prunekit.tokens.finetune import keep_schedule

    assert keep_schedule(0, 10, 0.5) == 1.0
    assert keep_schedule(5, 10, 0.5) == pytest.approx(0.75)
    assert keep_schedule(10, 10, 0.5) == keep_schedule(99, 10, 0.5) == 0.5
    values = [keep_schedule(s, 10, 0.5) for s in range(12)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_finetuning_is_seeded_keeps_the_best_checkpoint_and_leaves_the_input_alone(model):
    from prunekit.heads.scoring import ScoringData
    from prunekit.tokens.finetune import TokenFinetuneConfig, finetune_tokens_on

    g = torch.Generator().manual_seed(5)
    train = ScoringData(torch.randn(24, 64, 32, generator=g), torch.randint(0, 3, (24,), generator=g))
    val = ScoringData(torch.randn(8, 64, 32, generator=g), torch.randint(0, 3, (8,), generator=g))
    pruned = prune_tokens(model, 0.5, [0, 1])
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    config = TokenFinetuneConfig(epochs=2, batch_size=8, lr=1e-3, validations_per_epoch=3)
    calls = []
    tuned, history = finetune_tokens_on(pruned, train, val, config=config, progress=lambda d, n: calls.append((d, n)))
    again, again_history = finetune_tokens_on(pruned, train, val, config=config)
    assert calls[-1] == (6, 6) and len(history) == 1 + 6
    assert history["keep"].iloc[1] > history["keep"].iloc[-1] == 0.5  # shrinks over half the steps, then holds
    assert history["kept"].sum() == 1
    assert history.loc[history["kept"], "val_loss"].item() == history["val_loss"].min()
    assert all(torch.equal(before[k], v) for k, v in pruned.state_dict().items())
    assert all(torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), again.state_dict().values()))
    assert history.equals(again_history)
    assert type(tuned) is TokenPrunedASTForAudioClassification
    with torch.no_grad():
        best_loss = torch.nn.functional.cross_entropy(tuned(val.features).logits, val.targets).item()
    assert best_loss == pytest.approx(history["val_loss"].min(), abs=1e-5)


def test_finetuning_needs_a_token_pruned_model(model):
    from prunekit.heads.scoring import ScoringData
    from prunekit.tokens.finetune import finetune_tokens_on

    data = ScoringData(torch.randn(4, 64, 32), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ModelError, match="token-pruned"):
        finetune_tokens_on(model, data, data)


# --- command line ------------------------------------------------------------------------------
@pytest.fixture
def model_dir(tmp_path, model):
    from transformers import ASTFeatureExtractor

    out = tmp_path / "random-model"
    model.save_pretrained(out)
    ASTFeatureExtractor(num_mel_bins=32, max_length=64).save_pretrained(out)
    return out


@pytest.mark.slow
def test_cli_tokens_one_shot_and_fine_tuned_saves_a_model_that_reloads(tmp_path, model_dir, tiny_speech_commands,
                                                                       run_cli):
    out = run_cli("tokens", "--model", model_dir, "--data", tiny_speech_commands, "--keep", "0.5", "--blocks", "0,2",
                  "--finetune-epochs", "1", "--batch-size", "4", "--out", tmp_path / "tp", cache=tmp_path / "c")
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith(("dense ", "token-pruned  "))]
    assert len(lines) == 2 and all("accuracy" in line and "MACs/clip" in line for line in lines)
    assert "keep 0.5 in blocks 0,2 by cls" in lines[1] and "fine-tuned 1 epoch(s)" in out.stdout
    assert token_pruning_of(load_model(tmp_path / "tp").model) == TokenPruning(0.5, (0, 2))


@pytest.mark.parametrize("args, message", [
    (["--keep", "0"], "error: Keep rate 0.0 is outside (0, 1]"),
    (["--keep", "0.5", "--blocks", "1,7"], "error: Drop block(s) [7] outside the model: it has 3 blocks"),
    (["--keep", "0.5", "--blocks", ","], "error: No drop blocks given"),
    (["--keep", "0.5", "--blocks", "1;2"], "error: --blocks takes block indices separated by commas"),
])
def test_cli_bad_token_options_exit_2_with_a_message(tmp_path, model_dir, capsys, args, message):
    from prunekit.__main__ import main

    assert main(["tokens", "--model", str(model_dir), "--data", str(tmp_path / "unused"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_unknown_rule_is_a_usage_error(model_dir, capsys):
    from prunekit.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["tokens", "--model", str(model_dir), "--keep", "0.5", "--rule", "loud"])
    assert exit_.value.code == 2 and "invalid choice: 'loud'" in capsys.readouterr().err


def test_cli_patch_stats_prints_and_writes_the_table(tmp_path, model_dir, tiny_speech_commands, capsys):
    import pandas as pd

    from prunekit.__main__ import main

    assert main(["patch-stats", "--model", str(model_dir), "--data", str(tiny_speech_commands), "--clusters", "2",
                 "--out", str(tmp_path / "corr.csv")]) == 0
    out = capsys.readouterr().out
    assert "intensity authors_kendall" in out and "paper, AST-base on Speech Commands v2" in out

    table = pd.read_csv(tmp_path / "corr.csv")
    assert len(table) == 3 * 2 and table["authors_kendall"].between(-1, 1).all()
    assert len(pd.read_csv(tmp_path / "corr-clusters.csv")) == 2 * 2
