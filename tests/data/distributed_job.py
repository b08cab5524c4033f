"""Run under ``torchrun --nproc_per_node N`` by tests/test_devices.py: the gradient scorers, a
sharded evaluation and a LoRA recovery on the tiny model and dataset, in one launch; rank 0
saves what it got to ``OUT`` (a torch file) for the test to compare across process counts.

Usage: distributed_job.py MODEL_DIR DATA_DIR OUT
"""

from __future__ import annotations

import sys

import torch

from prunekit.data.datasets import open_dataset
from prunekit.devices import processes, start_processes, stop_processes
from prunekit.evaluation.metrics import predict_logits
from prunekit.heads.scoring import score, scoring_data
from prunekit.models import load_model
from prunekit.recovery.lora import RecoveryConfig, recover_on

model_dir, data_dir, out = sys.argv[1:4]
device = start_processes("cpu")
model, extractor, labels = load_model(model_dir)
dataset = open_dataset(data_dir)
train = scoring_data(dataset, extractor, labels, "train", clips=100)  # 6 clips: 3 batches of 2
validation = scoring_data(dataset, extractor, labels, "validation", clips=100)
result = {"world": processes().world}
for scorer in ("fisher", "fisher-sample", "fisher-gate", "taylor"):
    result[scorer] = score(model, scorer, train, batch_size=2, cache=False, device=device).frame["score"]
result["logits"] = predict_logits(model, train.features, batch_size=4)  # 2 batches: 4 + 2 clips
config = RecoveryConfig(batch_size=3, lr=1e-3, epochs=2)  # batches of 3 over 2 ranks: 2 + 1 clips
merged, history = recover_on(model, train, validation, config=config)
result["recovered"] = {k: v.detach().clone() for k, v in merged.state_dict().items()}
result["history"] = history[["step", "train_loss", "val_loss"]].to_numpy()
if processes().main:
    torch.save(result, out)
stop_processes()
