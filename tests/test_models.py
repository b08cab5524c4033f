import pytest
import torch
from conftest import TINY_LABELS
from safetensors.torch import save_file
from transformers import BertConfig

from bench.ast_base import v4_name, write_folder
from prunekit.errors import ModelLoadError
from prunekit.models import anatomy, load_model


def _outputs(model, seed=1):
    x = torch.randn(2, *anatomy.input_shape(model), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x).logits


def test_local_folder_roundtrip(tiny_model, tiny_model_dir):
    model, extractor, labels = load_model(tiny_model_dir)
    assert labels == TINY_LABELS
    assert extractor.num_mel_bins == 16 and extractor.max_length == 24
    assert not model.training
    torch.testing.assert_close(_outputs(model), _outputs(tiny_model), rtol=0, atol=0)


@pytest.mark.parametrize("key_format", ["v4", "v5"])
def test_checkpoint_key_formats(tmp_path, tiny_model, key_format):
    state = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    if key_format == "v4":
        state = {v4_name(k): v for k, v in state.items()}
        assert any(".encoder.layer.0.attention.attention.query.weight" in k for k in state)
    tiny_model.config.to_json_file(tmp_path / "config.json")
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    model, extractor, labels = load_model(tmp_path)
    torch.testing.assert_close(_outputs(model), _outputs(tiny_model), rtol=0, atol=0)
    assert extractor.num_mel_bins == 16  # no preprocessor_config.json: derived from the config
    assert labels == TINY_LABELS


def test_demo_model_loads_offline():
    model, extractor, labels = load_model("demo")
    facts = anatomy.describe(model)
    assert facts["layers"] >= 6 and min(facts["heads"]) >= 6
    assert len(labels) == 35 and "yes" in labels and "marvin" in labels
    assert extractor.num_mel_bins == model.config.num_mel_bins
    assert _outputs(model).shape == (2, 35)


def test_hub_id_offline_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE") as info:
        load_model("MIT/ast-finetuned-speech-commands-v2")
    assert "MIT/ast-finetuned-speech-commands-v2" in str(info.value)
    assert "local folder" in str(info.value) or "folder" in str(info.value)


def test_bad_sources(tmp_path):
    with pytest.raises(ModelLoadError, match="No model folder"):
        load_model("./no/such/folder")
    with pytest.raises(ModelLoadError, match=r"no config.json"):
        load_model(tmp_path)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_model(tmp_path / "f.txt")
    with pytest.raises(ModelLoadError, match="No model given"):
        load_model("  ")


def test_non_ast_and_corrupt_checkpoints(tmp_path, tiny_model_dir):
    bert = tmp_path / "bert"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4).save_pretrained(bert)
    with pytest.raises(ModelLoadError, match="'bert' model"):
        load_model(bert)
    (tiny_model_dir / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="Could not load the weights"):
        load_model(tiny_model_dir)
    (tiny_model_dir / "config.json").write_text("{broken")
    with pytest.raises(ModelLoadError, match="config"):
        load_model(tiny_model_dir)


def test_a_zip_with_entries_outside_its_folder_is_refused(tmp_path):
    import zipfile

    from prunekit.errors import ModelLoadError

    bad = tmp_path / "evil.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("model/config.json", "{}")
        archive.writestr("../outside.txt", "escaped")
    with pytest.raises(ModelLoadError, match=r"entries outside its folder \(\['../outside.txt'\]\)"):
        load_model(bad)
    assert not (tmp_path / "outside.txt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("key_format", ["v4", "v5"])
def test_an_ast_base_shaped_folder_loads_scores_prunes_and_reloads(
    tmp_path, tiny_speech_commands, key_format
):
    """The paper's model size (12 x 12 x 768, 128 mels; random weights) in both key formats."""
    from prunekit.data.datasets import open_dataset
    from prunekit.heads.planner import make_plan
    from prunekit.heads.scoring import score, scoring_data
    from prunekit.heads.surgery import apply_plan, save_pruned

    folder = write_folder(tmp_path / "ast-base", key_format=key_format)
    model, extractor, labels = load_model(folder)
    assert [(s.heads, s.qk_dim) for s in anatomy.attention_shapes(model)] == [(12, 64)] * 12
    assert extractor.num_mel_bins == 128 and extractor.max_length == 128 and len(labels) == 35
    data = scoring_data(open_dataset(tiny_speech_commands), extractor, labels, clips=3)
    scores = score(model, "fisher", data, batch_size=3)
    plan = make_plan(scores, "per-head", "global", 0.5)
    pruned = apply_plan(model, plan)
    save_pruned(pruned, tmp_path / "pruned", plan=plan, feature_extractor=extractor, labels=labels)
    again = load_model(tmp_path / "pruned").model
    x = data.features[:2]
    torch.testing.assert_close(again(x).logits, pruned(x).logits, rtol=0, atol=0)
    assert plan.attention_sparsity() == pytest.approx(0.5, abs=0.01)
