"""Scorers against hand and brute-force computations on a tiny AST; the model is never changed."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import ASTForAudioClassification

from prunekit.heads.plan import LayerPlan, PruningPlan
from prunekit.heads.scorers import SCORERS
from prunekit.heads.scoring import COLUMNS, ScoringData, score
from prunekit.heads.surgery import apply_plan
from prunekit.models import anatomy
from prunekit.models.anatomy import AttentionShape

H, D, L = 4, 8, 2


@pytest.fixture
def model(tiny_config) -> ASTForAudioClassification:
    torch.manual_seed(0)
    model = ASTForAudioClassification(tiny_config(max_length=48, num_mel_bins=32)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # HF's init makes attention nearly uniform and gradients tiny
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture
def data(model) -> ScoringData:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(10, *anatomy.input_shape(model), generator=g)
    return ScoringData(x, torch.randint(0, 3, (10,), generator=g))


def _attention_weights(model, layer):
    return {m: linear.weight.detach() for m, linear in zip("qkvo", anatomy.projections(model, layer))}


def _rows(frame, layer, group, matrix, head_rows=False) -> np.ndarray:
    """Scores of one layer/group/matrix: (H, D) channel rows or (H,) head rows."""
    sel = frame[(frame.layer == layer) & (frame.group == group) & (frame.matrix == matrix)]
    sel = sel[sel.channel.isna()] if head_rows else sel[sel.channel.notna()]
    sel = sel.sort_values(["head", "channel"])
    values = sel.score.to_numpy()
    return values if head_rows else values.reshape(-1, D)


def _unit_rows(per_weight: dict) -> dict:
    """Per-weight tensors -> per-unit-row sums, (H, D) each (rows of q/k/v, columns of o)."""
    return {
        m: (w.sum(0) if m == "o" else w.sum(1)).double().numpy().reshape(H, D) for m, w in per_weight.items()
    }


def _check_additive(frame, layer, rows):
    """Fisher-style aggregation: pair = q + k, head = sum of its slices."""
    for m, group in (("q", "qk"), ("k", "qk"), ("v", "vo"), ("o", "vo")):
        np.testing.assert_allclose(_rows(frame, layer, group, m), rows[m], rtol=1e-5)
        np.testing.assert_allclose(_rows(frame, layer, group, m, True), rows[m].sum(1), rtol=1e-5)
    np.testing.assert_allclose(_rows(frame, layer, "qk", "pair"), rows["q"] + rows["k"], rtol=1e-5)
    np.testing.assert_allclose(_rows(frame, layer, "vo", "pair"), rows["v"] + rows["o"], rtol=1e-5)
    total = sum(r.sum(1) for r in rows.values())
    np.testing.assert_allclose(_rows(frame, layer, "head", "pair", True), total, rtol=1e-5)


def test_frame_shape_and_columns(model):
    table = score(model, "magnitude", cache=False)
    frame = table.frame
    assert tuple(frame.columns) == COLUMNS and table.scorer == "magnitude" and len(table) == len(frame)
    # per layer: 6 channel matrices x H*D rows + 7 head-level rows x H
    assert len(frame) == L * (6 * H * D + 7 * H)
    assert frame.channel.dtype == "Int64" and set(frame.scorer) == {"magnitude"}
    assert table.base == tuple(AttentionShape(i, H, D, D, 32) for i in range(L))


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_magnitude_by_hand(model, norm):
    frame = score(model, "magnitude", norm=norm, cache=False).frame
    for layer in range(L):
        w = {m: t.numpy().astype(np.float64) for m, t in _attention_weights(model, layer).items()}
        w["o"] = w["o"].T  # columns of W_o are its units
        p = 1 if norm == "l1" else 2
        rows = {m: np.linalg.norm(w[m], ord=p, axis=1).reshape(H, D) for m in "qkvo"}
        heads = {
            m: (
                np.abs(w[m]).reshape(H, D, -1).sum((1, 2))
                if p == 1
                else np.sqrt((w[m] ** 2).reshape(H, D, -1).sum((1, 2)))
            )
            for m in "qkvo"
        }
        for m, group in (("q", "qk"), ("k", "qk"), ("v", "vo"), ("o", "vo")):
            np.testing.assert_allclose(_rows(frame, layer, group, m), rows[m], rtol=1e-6)
            np.testing.assert_allclose(_rows(frame, layer, group, m, True), heads[m], rtol=1e-6)
        np.testing.assert_allclose(_rows(frame, layer, "qk", "pair"), (rows["q"] + rows["k"]) / 2, rtol=1e-6)
        np.testing.assert_allclose(_rows(frame, layer, "vo", "pair"), (rows["v"] + rows["o"]) / 2, rtol=1e-6)
        np.testing.assert_allclose(
            _rows(frame, layer, "head", "pair", True), sum(heads.values()) / 4, rtol=1e-6
        )


def _per_clip_grads(model, data, layer, loss=torch.nn.functional.cross_entropy):
    """Brute force: one backward per clip; the gradient of each attention weight of ``layer``."""
    out = []
    for x, y in zip(data.features, data.targets):
        model.zero_grad(set_to_none=True)
        loss(model(x[None]).logits, y[None]).backward()
        out.append(
            {m: linear.weight.grad.clone() for m, linear in zip("qkvo", anatomy.projections(model, layer))}
        )
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize(
    "batch_size, batches",
    [
        (4, ([0, 1, 2, 3], [4, 5, 6, 7])),  # 10 clips: B = floor(10 / 4) = 2; clips 8 and 9 are left out
        (5, ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])),  # no partial batch: every clip counts
        (16, (list(range(10)),)),  # fewer clips than a batch: one batch of all 10
    ],
)
def test_fisher_is_squared_batch_gradients_over_whole_batches(model, data, batch_size, batches):
    frame = score(model, "fisher", data, batch_size=batch_size, cache=False).frame
    reference = model.__class__(model.config).eval()
    reference.load_state_dict(model.state_dict())
    for layer in range(L):
        per_clip = _per_clip_grads(reference, data, layer)
        acc = {m: torch.zeros_like(per_clip[0][m]) for m in "qkvo"}
        for batch in batches:
            for m in "qkvo":
                g = sum(per_clip[i][m] for i in batch) / len(batch)  # grad of the batch-mean loss
                acc[m] += g * g
        _check_additive(frame, layer, _unit_rows({m: a / len(batches) + 1e-6 for m, a in acc.items()}))
    if batch_size == 4:  # the partial batch really is left out: scoring its clips away changes nothing
        first_eight = ScoringData(data.features[:8], data.targets[:8])
        pd.testing.assert_frame_equal(
            score(model, "fisher", first_eight, batch_size=4, cache=False).frame, frame
        )


def test_fisher_sample_is_squared_per_clip_gradients(model, data):
    frame = score(model, "fisher-sample", data, batch_size=4, cache=False).frame
    reference = model.__class__(model.config).eval()
    reference.load_state_dict(model.state_dict())
    for layer in range(L):
        per_clip = _per_clip_grads(reference, data, layer)
        fisher = {m: sum(g[m] ** 2 for g in per_clip) / len(per_clip) + 1e-6 for m in "qkvo"}
        _check_additive(frame, layer, _unit_rows(fisher))
    # and it is not the batch Fisher: the two differ on the same data
    batch = score(model, "fisher", data, batch_size=4, cache=False).frame
    assert not np.allclose(batch.score, frame.score, rtol=1e-3)


def test_taylor_is_abs_sum_of_weight_times_gradient(model, data):
    frame = score(model, "taylor", data, batch_size=5, cache=False).frame  # two batches of 5
    reference = model.__class__(model.config).eval()
    reference.load_state_dict(model.state_dict())
    for layer in range(L):
        per_clip = _per_clip_grads(reference, data, layer)
        w = _attention_weights(model, layer)
        signed = _unit_rows({m: w[m] * sum(g[m] for g in per_clip) / len(per_clip) for m in "qkvo"})
        for m, group in (("q", "qk"), ("k", "qk"), ("v", "vo"), ("o", "vo")):
            np.testing.assert_allclose(
                _rows(frame, layer, group, m), np.abs(signed[m]), rtol=1e-4, atol=1e-8
            )  # signed sums cancel
            np.testing.assert_allclose(
                _rows(frame, layer, group, m, True), np.abs(signed[m].sum(1)), rtol=1e-4, atol=1e-8
            )
        np.testing.assert_allclose(
            _rows(frame, layer, "qk", "pair"), np.abs(signed["q"] + signed["k"]), rtol=1e-4, atol=1e-8
        )
        head = np.abs(sum(s.sum(1) for s in signed.values()))
        np.testing.assert_allclose(_rows(frame, layer, "head", "pair", True), head, rtol=1e-4, atol=1e-8)


def test_gate_fisher_against_one_gate_per_clip(model, data):
    frame = score(model, "fisher-gate", data, batch_size=3, cache=False).frame
    reference = model.__class__(model.config).eval()
    reference.load_state_dict(model.state_dict())
    for p in reference.parameters():
        p.requires_grad_(False)
    for layer in range(L):
        attn = anatomy.attention(reference, layer)
        qk_gate = torch.ones(H * D, requires_grad=True)
        vo_gate = torch.ones(H * D, requires_grad=True)
        handles = [
            attn.q_proj.register_forward_hook(lambda m, a, out, g=qk_gate: out * g),
            attn.o_proj.register_forward_pre_hook(lambda m, a, g=vo_gate: (a[0] * g,)),
        ]
        qk = np.zeros((H, D))
        vo = np.zeros((H, D))
        head = np.zeros(H)
        for x, y in zip(data.features, data.targets):
            loss = torch.nn.functional.cross_entropy(reference(x[None]).logits, y[None])
            g_qk, g_vo = torch.autograd.grad(loss, [qk_gate, vo_gate])
            qk += g_qk.double().numpy().reshape(H, D) ** 2
            vo += g_vo.double().numpy().reshape(H, D) ** 2
            head += g_vo.double().numpy().reshape(H, D).sum(1) ** 2
        for handle in handles:
            handle.remove()
        for m in ("q", "k", "pair"):
            np.testing.assert_allclose(_rows(frame, layer, "qk", m), qk, rtol=1e-4)
        for m in ("v", "o", "pair"):
            np.testing.assert_allclose(_rows(frame, layer, "vo", m), vo, rtol=1e-4)
        np.testing.assert_allclose(_rows(frame, layer, "head", "pair", True), head, rtol=1e-4, atol=1e-8)


def test_random_is_seeded(model):
    a, b = (
        score(model, "random", seed=1, cache=False).frame,
        score(model, "random", seed=1, cache=False).frame,
    )
    c = score(model, "random", seed=2, cache=False).frame
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.score, c.score)


@pytest.mark.parametrize("scorer", list(SCORERS))
def test_model_untouched_no_grads_no_hooks(model, data, scorer):
    model.train()  # the scorers must run in eval mode on a copy and leave this flag alone
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    score(model, scorer, data, batch_size=4, cache=False)
    assert model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks


def test_eval_mode_is_used(model, data):
    """Dropout would make two runs differ; scoring a model left in train mode must not."""
    model.config.attention_probs_dropout_prob = 0.5
    noisy = model.__class__(model.config)
    noisy.load_state_dict(model.state_dict())
    noisy.train()
    a = score(noisy, "fisher", data, cache=False).frame
    b = score(noisy, "fisher", data, cache=False).frame
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("scorer", list(SCORERS))
def test_pruned_model_with_unequal_dims_and_an_empty_layer(model, data, scorer):
    plan = PruningPlan(
        (LayerPlan(), LayerPlan((1, 3), ((0, 2, 5),) * 2, ((1, 2, 3, 4, 6),) * 2)),
        tuple(anatomy.attention_shapes(model)),
    )
    pruned = apply_plan(model, plan)
    frame = score(pruned, scorer, data, batch_size=4, cache=False).frame
    assert set(frame.layer) == {1}
    assert len(frame[(frame.group == "qk") & (frame.matrix == "pair") & frame.channel.notna()]) == 2 * 3
    assert len(frame[(frame.group == "vo") & (frame.matrix == "pair") & frame.channel.notna()]) == 2 * 5
    assert len(frame[frame.group == "head"]) == 2
    assert np.isfinite(frame.score).all() and (frame.score >= 0).all()


def test_cache_hit_is_identical_and_corrupt_cache_is_recomputed(model, data, monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path))
    first = score(model, "fisher", data, batch_size=4).frame
    files = list((tmp_path / "scores").glob("*.parquet"))
    assert len(files) == 1

    calls = []
    real = SCORERS["fisher"]
    counting = dataclasses.replace(real, compute=lambda *a: calls.append(1) or real.compute(*a))
    monkeypatch.setitem(SCORERS, "fisher", counting)
    again = score(model, "fisher", data, batch_size=4).frame
    assert calls == []  # served from disk
    pd.testing.assert_frame_equal(first, again, check_exact=True)

    files[0].write_bytes(files[0].read_bytes()[:100])  # truncated: must not be trusted
    recomputed = score(model, "fisher", data, batch_size=4).frame
    assert calls == [1]
    pd.testing.assert_frame_equal(first, recomputed, check_exact=True)

    # other options, other data or other weights are other keys
    score(model, "fisher", data, batch_size=5)
    score(model, "fisher", ScoringData(data.features[:5], data.targets[:5]), batch_size=4)
    with torch.no_grad():
        anatomy.projections(model, 0).q.weight[0, 0] += 1
    score(model, "fisher", data, batch_size=4)
    assert len(calls) == 4 and len(list((tmp_path / "scores").glob("*.parquet"))) == 4


def test_bad_arguments(model, data):
    with pytest.raises(ValueError, match="Unknown scorer 'fishr'"):
        score(model, "fishr")
    with pytest.raises(ValueError, match="needs data"):
        score(model, "fisher")
    with pytest.raises(ValueError, match="norm"):
        score(model, "magnitude", norm="l3")
    with pytest.raises(ValueError, match="10 feature rows but 9 targets"):
        ScoringData(data.features, data.targets[:9])


def test_multilabel_uses_binary_cross_entropy(model, data):
    targets = torch.zeros(10, 3)
    targets[torch.arange(10), data.targets] = 1
    targets[0, 1] = 1
    multi = ScoringData(data.features, targets)
    frame = score(model, "fisher-sample", multi, cache=False).frame
    reference = model.__class__(model.config).eval()
    reference.load_state_dict(model.state_dict())

    def bce(logits, y):  # the per-clip loss of a multi-label clip: BCE averaged over its classes
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float())

    for layer in range(L):
        per_clip = _per_clip_grads(reference, multi, layer, loss=bce)
        fisher = {m: sum(g[m] ** 2 for g in per_clip) / len(per_clip) + 1e-6 for m in "qkvo"}
        _check_additive(frame, layer, _unit_rows(fisher))


@pytest.mark.parametrize("damage", ["a layer missing", "all inf", "another scorer"])
def test_a_cached_table_that_does_not_fit_the_model_is_recomputed(model, data, monkeypatch, tmp_path, damage):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path))
    first = score(model, "magnitude").frame
    (path,) = (tmp_path / "scores").glob("*.parquet")
    bad = {
        "a layer missing": first[first.layer != 1],
        "all inf": first.assign(score=np.inf),
        "another scorer": first.assign(scorer="random"),
    }[damage]
    bad.to_parquet(path, index=False)
    again = score(model, "magnitude").frame
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    pd.testing.assert_frame_equal(pd.read_parquet(path).astype(first.dtypes.to_dict()), first)  # rewritten
