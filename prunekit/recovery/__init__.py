"""Getting accuracy back after pruning: LoRA fine-tuning (``lora``), iterative prune-and-recover
runs (``iterative``) and resumable grids of them (``sweep``)."""
