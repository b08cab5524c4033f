"""Run under ``torchrun --nproc_per_node N`` by tests/test_devices.py: the gradient scorers, a
sharded evaluation, a LoRA recovery and a key-prior run stopped by one rank on the tiny model
and dataset, in one launch; rank 0
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
from prunekit.keys.learn import KeyLearnConfig, learn_priors_on
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
# A stop asked of the last rank only (a signal reaching one process): every rank leaves the loop
# at the same step, or the next gradient sum would wait forever.
asked = [0]


def stop() -> bool:
    asked[0] += 1
    return processes().rank == processes().world - 1 and asked[0] >= 2


_, stopped = learn_priors_on(
    model, train, validation, config=KeyLearnConfig(epochs=3, batch_size=2), stop=stop
)
result["stopped_steps"] = int(stopped["step"].max())
result["stopped"] = bool(stopped.attrs["stopped"])
if processes().main:
    torch.save(result, out)
stop_processes()
