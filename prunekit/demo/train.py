"""The embedded demo models: small ASTs trained from scratch on the synthetic sets.

``python -m prunekit demo-train`` reproduces ``prunekit/demo_model/`` (keyword spotting on the
synthetic speech commands: one label per clip, cross-entropy, chosen on validation accuracy);
``--task tagging`` writes ``prunekit/demo_tagging_model/`` (the synthetic tagging set: several
tags per clip, binary cross-entropy, chosen on validation mAP). Each folder holds the weights,
config, feature-extractor settings and ``training.json`` with the settings, the data seed and
the measured accuracy or mAP.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    get_cosine_schedule_with_warmup,
)

from prunekit.data import audio
from prunekit.data.augment import WaveAugment, augmented_features, spec_augment
from prunekit.data.datasets import SPLITS, demo_dataset, label_indices, label_targets, tagging_dataset
from prunekit.data.features import clip_features
from prunekit.errors import check_settings
from prunekit.evaluation.metrics import classification_metrics, multilabel_metrics, predict_logits, task_loss
from prunekit.models.loading import embedded_dir

__all__ = ["TASKS", "DemoTrainConfig", "demo_dir", "train_demo"]

TASKS = ("speech", "tagging")  # keyword spotting (one label per clip); tagging (several per clip)
# What a task's settings default to when left None: its clips' length in frames of 10 ms (1 s
# and 2 s) and its label smoothing (none for tagging: the targets are independent 0/1 tags).
_TASK_DEFAULTS = {
    "speech": {"max_length": 100, "label_smoothing": 0.1},
    "tagging": {"max_length": 200, "label_smoothing": 0.0},
}


@dataclass(frozen=True)
class DemoTrainConfig:
    """Everything that decides a demo model; saved in training.json beside the weights.
    ``max_length`` and ``label_smoothing`` left None take the task's values (``_TASK_DEFAULTS``),
    so each task's defaults are the ones its committed demo was trained with."""

    task: str = "speech"  # one of TASKS
    data_seed: int = 0
    seed: int = 0
    hidden_size: int = 192
    layers: int = 6
    heads: int = 6
    intermediate_size: int = 768
    num_mel_bins: int = 64
    max_length: int | None = None  # frames of 10 ms: 100 (1 s) for speech, 200 (2 s) for tagging
    epochs: int = 30  # speech: of 10,780 training clips, about 50 min on 2 cores
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05  # of all steps: about 250 for speech
    label_smoothing: float | None = None  # 0.1 for speech; tagging trains without
    freq_mask: int = 8  # SpecAugment: widest masked band of mel bins
    time_mask: int = 12  # and of frames
    # Waveform augmentation (opt-in; on the speech demo it bought nothing on other engines: README,
    # "The demo data and model"): ``views`` augmented copies of the training split are made before
    # training; after ``clean_epochs`` epochs on the clips as they are, the epochs read the copies
    # in turn. 0 views (the default): every epoch reads the clips as they are.
    views: int = 0
    augment: WaveAugment = field(default_factory=WaveAugment)
    # With augmented copies from the first epoch, the speech model sat at chance for 3 epochs and
    # reached only 62 % validation accuracy by epoch 9 of 15; 2 clean epochs first start it.
    clean_epochs: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        check_settings(
            (("task", self.task, self.task in TASKS),),
            "demo-training settings",
            f"task is one of {', '.join(TASKS)}",
        )
        for name, value in _TASK_DEFAULTS[self.task].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        check_settings(
            (
                ("max_length", self.max_length, self.max_length >= 1),
                ("views", self.views, self.views >= 0),
                ("clean_epochs", self.clean_epochs, self.clean_epochs >= 0),
                (
                    "label_smoothing",
                    self.label_smoothing,
                    0 <= self.label_smoothing < 1 and (self.task == "speech" or self.label_smoothing == 0),
                ),
            ),
            f"{self.task} demo-training settings",
            "max_length must be >= 1, views and clean_epochs >= 0, label_smoothing in [0, 1) and 0 for tagging "
            "(binary cross-entropy on 0/1 tags)",
        )


def demo_dir(task: str) -> Path:
    """The package folder a task's demo model is written to, and ``load_model`` reads it from
    ("demo" or "demo-tagging")."""
    return embedded_dir("demo-tagging" if task == "tagging" else "demo")


def train_demo(
    cfg: DemoTrainConfig = DemoTrainConfig(), out_dir: Path | None = None, *, quiet: bool = False
) -> dict:
    """Train a demo model from scratch and save it to ``out_dir`` (None: the task's package
    folder, ``demo_dir``); returns the training record. The checkpoint is chosen on the
    validation voices (accuracy, or mAP for tagging); the test voices are read once, at the end."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    tagging = cfg.task == "tagging"
    data = (tagging_dataset if tagging else demo_dataset)(cfg.data_seed, progress=None)
    labels = list(data.labels)
    feats, targets, extractor = _split_features(cfg, data, labels, quiet)
    views = _views(cfg, data, extractor, quiet)
    model = _new_model(cfg, labels)
    best, best_epoch, history = _train(model, feats, views, targets, labels, cfg, quiet)
    test = _measure(model, feats["test"], targets["test"], labels)
    if tagging:
        mauc = float(test.summary["mAUC"].iloc[0])
        scores = {"validation_mAP": best, "test_mAP": test.mean_average_precision, "test_mAUC": mauc}
    else:
        scores = {"validation_accuracy": best, "test_accuracy": test.accuracy}
    record = {
        "config": dataclasses.asdict(cfg),
        "best_epoch": best_epoch,
        **scores,
        "test_clips": len(feats["test"]),
        "train_clips": len(feats["train"]),
        "train_seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
        "history": history,
    }
    out_dir = Path(out_dir) if out_dir is not None else demo_dir(cfg.task)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    extractor.save_pretrained(out_dir)
    (out_dir / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _split_features(cfg: DemoTrainConfig, data, labels: list[str], quiet: bool):
    """Normalised features (N, frames, mels) and targets per split (class indices (N,) for speech,
    multi-hot tags (N, C) float for tagging), and the extractor that reproduces the
    normalisation (AST's: mean 0, std 0.5, from the training split)."""
    raw = ASTFeatureExtractor(num_mel_bins=cfg.num_mel_bins, max_length=cfg.max_length, do_normalize=False)
    feats = {}
    for split in SPLITS:
        bar = tqdm(total=len(data.split(split)), desc=f"features {split}", disable=quiet, unit="clip")
        feats[split] = clip_features(
            data.split(split), raw, progress=lambda d, n, bar=bar: bar.update(d - bar.n)
        )
        bar.close()
    mean, std = feats["train"].mean().item(), feats["train"].std().item()
    extractor = ASTFeatureExtractor(
        num_mel_bins=cfg.num_mel_bins, max_length=cfg.max_length, mean=mean, std=std
    )
    feats = {k: (v - mean) / (2 * std) for k, v in feats.items()}
    to_targets = label_targets if cfg.task == "tagging" else label_indices
    targets = {k: torch.as_tensor(to_targets(data.split(k), labels)) for k in feats}
    return feats, targets, extractor


def _views(cfg: DemoTrainConfig, data, extractor: ASTFeatureExtractor, quiet: bool) -> list[torch.Tensor]:
    """``cfg.views`` augmented copies of the training split's features (``WaveAugment``), each
    normalised as the clean features are; copy v of clip i depends only on (seed, v, i). Made by
    ``cfg.threads`` processes (the augmentation is many small per-clip operations)."""
    if not cfg.views:
        return []
    paths = [str(c.path) for c in data.split("train")]
    noises = [str(p) for p in sorted((data.root / "_background_noise_").glob("*.wav"))]
    chunk = math.ceil(len(paths) / (4 * cfg.threads))
    jobs = [
        (v, start, paths[start : start + chunk])
        for v in range(cfg.views)
        for start in range(0, len(paths), chunk)
    ]
    bar = tqdm(total=len(paths) * cfg.views, desc="augmented copies", disable=quiet, unit="clip")
    context = multiprocessing.get_context("spawn")  # a fork of a process running torch threads can hang
    with ProcessPoolExecutor(cfg.threads, mp_context=context) as pool:
        futures = [
            pool.submit(_view_chunk, part, noises, extractor, cfg.augment, cfg.seed * 1000 + v, start)
            for v, start, part in jobs
        ]
        for future in as_completed(futures):
            bar.update(len(future.result()))
    bar.close()
    per_view = len(futures) // cfg.views  # jobs are in (view, chunk) order
    views = []
    for v in range(cfg.views):
        raw = torch.cat([f.result() for f in futures[v * per_view : (v + 1) * per_view]])
        views.append((raw - extractor.mean) / (2 * extractor.std))
    return views


def _view_chunk(paths: list[str], noises: list[str], extractor, aug: WaveAugment, seed: int, first: int):
    """One worker's share of an augmented copy: features of ``paths`` (clip numbers from ``first``)."""
    torch.set_num_threads(1)
    waves = [torch.from_numpy(audio.load_waveform(p)) for p in paths]
    background = [torch.from_numpy(audio.load_waveform(p)) for p in noises]
    return augmented_features(waves, extractor, aug, seed, background, first=first)


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
        # a sigmoid per tag: what anatomy.is_multilabel reads (windowed evaluation, the app)
        problem_type="multi_label_classification" if cfg.task == "tagging" else None,
    )
    return ASTForAudioClassification(config)


def _measure(model, feats: torch.Tensor, targets: torch.Tensor, labels: list[str]):
    """Accuracy (targets (N,)) or mAP (targets (N, C)) of ``model`` on features (N, frames, mels)."""
    measure = multilabel_metrics if targets.ndim == 2 else classification_metrics
    return measure(predict_logits(model, feats), targets.numpy(), labels)


def _train(
    model, feats, views, targets, labels, cfg: DemoTrainConfig, quiet: bool
) -> tuple[float, int, list[dict]]:
    """AdamW with warm-up + cosine and SpecAugment; the first ``cfg.clean_epochs`` epochs read
    ``feats["train"]``, later ones the augmented copies in turn (``feats["train"]`` when there
    are none); ``model`` ends holding the weights of the best
    validation accuracy, or mAP for tagging (returned with its epoch and the per-epoch history),
    in eval mode. Speech trains on label-smoothed cross-entropy, tagging on binary cross-entropy."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = math.ceil(len(feats["train"]) / cfg.batch_size) * cfg.epochs
    sched = get_cosine_schedule_with_warmup(opt, max(1, int(cfg.warmup_fraction * total)), total)
    augment = spec_augment(cfg.freq_mask, cfg.time_mask)
    gen = torch.Generator().manual_seed(cfg.seed)
    best = (-1.0, None, -1)
    history = []
    bar = tqdm(total=total, desc=f"training {cfg.task} demo model", disable=quiet, unit="step")
    for epoch in range(cfg.epochs):
        model.train()
        augmented = views and epoch >= cfg.clean_epochs
        train = views[(epoch - cfg.clean_epochs) % len(views)] if augmented else feats["train"]
        order = torch.randperm(len(train), generator=gen)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            logits = model(augment(train[idx])).logits  # (B, C)
            if cfg.task == "tagging":
                loss = task_loss(logits, targets["train"][idx])  # targets (B, C): BCE
            else:
                loss = torch.nn.functional.cross_entropy(
                    logits, targets["train"][idx], label_smoothing=cfg.label_smoothing
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
        val = _measure(model, feats["validation"], targets["validation"], labels)
        history.append(
            {
                "epoch": epoch + 1,
                f"val_{val.metric}": val.headline,  # val_accuracy, or val_mAP for tagging
                "val_loss": float(val.summary["loss"][0]),
            }
        )
        bar.set_postfix(epoch=epoch + 1, **{f"val_{val.metric}": f"{val.headline:.3f}"})
        if val.headline > best[0]:
            best = (val.headline, {k: v.clone() for k, v in model.state_dict().items()}, epoch + 1)
    bar.close()
    model.load_state_dict(best[1])
    model.eval()
    return best[0], best[2], history
