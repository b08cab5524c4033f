"""The embedded demo model: a small AST trained from scratch on the synthetic speech commands.

``python -m prunekit demo-train`` reproduces ``prunekit/demo_model/`` (weights, config,
feature-extractor settings and ``training.json`` with the data seed and measured accuracy).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    get_cosine_schedule_with_warmup,
)

from prunekit.data.augment import spec_augment
from prunekit.data.datasets import SPLITS, demo_dataset, label_indices
from prunekit.data.features import clip_features
from prunekit.evaluation.metrics import classification_metrics, predict_logits
from prunekit.models.loading import DEMO_DIR

__all__ = ["DemoTrainConfig", "train_demo"]


@dataclass(frozen=True)
class DemoTrainConfig:
    """Everything that decides the demo model; saved in training.json beside the weights."""

    data_seed: int = 0
    seed: int = 0
    hidden_size: int = 192
    layers: int = 6
    heads: int = 6
    intermediate_size: int = 768
    num_mel_bins: int = 64
    max_length: int = 100  # frames of 10 ms: one second of audio
    epochs: int = 30  # of 10,780 training clips (two takes): about 40 minutes on 2 cores
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    label_smoothing: float = 0.1
    freq_mask: int = 8  # SpecAugment: widest masked band of mel bins
    time_mask: int = 12  # and of frames
    threads: int = 2


def train_demo(cfg: DemoTrainConfig = DemoTrainConfig(), out_dir: Path = DEMO_DIR, *, quiet: bool = False) -> dict:
    """Train the demo model from scratch and save it to ``out_dir``; returns the training record.
    The checkpoint is chosen on the validation voices; the test voices are read once, at the end."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    data = demo_dataset(cfg.data_seed, progress=None)
    labels = list(data.labels)
    feats, targets, extractor = _split_features(cfg, data, labels, quiet)
    model = _new_model(cfg, labels)
    best_accuracy, best_epoch, history = _train(model, feats, targets, labels, cfg, quiet)
    test = classification_metrics(predict_logits(model, feats["test"]), targets["test"].numpy(), labels)
    record = {
        "config": dataclasses.asdict(cfg),
        "best_epoch": best_epoch,
        "validation_accuracy": best_accuracy,
        "test_accuracy": test.accuracy,
        "test_clips": len(feats["test"]),
        "train_clips": len(feats["train"]),
        "train_seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
        "history": history,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    extractor.save_pretrained(out_dir)
    (out_dir / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _split_features(cfg: DemoTrainConfig, data, labels: list[str], quiet: bool):
    """Normalised features (N, frames, mels) and class indices (N,) per split, and the extractor
    that reproduces the normalisation (AST's: mean 0, std 0.5, from the training split)."""
    raw = ASTFeatureExtractor(num_mel_bins=cfg.num_mel_bins, max_length=cfg.max_length, do_normalize=False)
    feats = {}
    for split in SPLITS:
        bar = tqdm(total=len(data.split(split)), desc=f"features {split}", disable=quiet, unit="clip")
        feats[split] = clip_features(data.split(split), raw, progress=lambda d, n: bar.update(d - bar.n))
        bar.close()
    mean, std = feats["train"].mean().item(), feats["train"].std().item()
    extractor = ASTFeatureExtractor(num_mel_bins=cfg.num_mel_bins, max_length=cfg.max_length, mean=mean, std=std)
    feats = {k: (v - mean) / (2 * std) for k, v in feats.items()}
    targets = {k: torch.as_tensor(label_indices(data.split(k), labels)) for k in feats}
    return feats, targets, extractor


def _new_model(cfg: DemoTrainConfig, labels: list[str]) -> ASTForAudioClassification:
    config = ASTConfig(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.intermediate_size,
        num_mel_bins=cfg.num_mel_bins,
        max_length=cfg.max_length,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    return ASTForAudioClassification(config)


def _train(model, feats, targets, labels, cfg: DemoTrainConfig, quiet: bool) -> tuple[float, int, list[dict]]:
    """AdamW with warm-up + cosine and SpecAugment; ``model`` ends holding the weights of the best
    validation accuracy (returned with its epoch and the per-epoch history), in eval mode."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = math.ceil(len(feats["train"]) / cfg.batch_size) * cfg.epochs
    sched = get_cosine_schedule_with_warmup(opt, max(1, int(cfg.warmup_fraction * total)), total)
    augment = spec_augment(cfg.freq_mask, cfg.time_mask)
    gen = torch.Generator().manual_seed(cfg.seed)
    best = (-1.0, None, -1)
    history = []
    bar = tqdm(total=total, desc="training demo model", disable=quiet, unit="step")
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(feats["train"]), generator=gen)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            logits = model(augment(feats["train"][idx])).logits
            loss = torch.nn.functional.cross_entropy(logits, targets["train"][idx], label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
        val = classification_metrics(predict_logits(model, feats["validation"]), targets["validation"].numpy(), labels)
        history.append({"epoch": epoch + 1, "val_accuracy": val.accuracy, "val_loss": float(val.summary["loss"][0])})
        bar.set_postfix(epoch=epoch + 1, val_acc=f"{val.accuracy:.3f}")
        if val.accuracy > best[0]:
            best = (val.accuracy, {k: v.clone() for k, v in model.state_dict().items()}, epoch + 1)
    bar.close()
    model.load_state_dict(best[1])
    model.eval()
    return best[0], best[2], history
