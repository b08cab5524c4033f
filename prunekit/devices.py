"""Where the compute runs: the device, the precision, and the processes of a data-parallel launch.

* ``resolve_device("auto" | "cpu" | "cuda" | "cuda:N" | "mps")``: ``auto`` is a CUDA GPU when
  there is one, else Apple's MPS, else the CPU. A device this machine does not have is a
  ``DeviceError`` naming it, never a silent fallback to the CPU.
* ``place(model, device)``: the device a job runs on; ``None`` keeps the model where it is, a
  device moves the model there (``Module.to``: the weights' values do not change).
* ``autocast(device, precision)``: ``"fp32"`` (nothing changes) or ``"bf16"`` (torch autocast;
  the weights stay float32). Scores always accumulate in float64 (float32 on MPS, which has no
  float64), whatever the compute precision.
* Processes: under ``torchrun`` or ``accelerate launch`` (``WORLD_SIZE`` > 1), ``start_processes``
  joins the process group through accelerate's ``PartialState`` (gloo on the CPU, NCCL on GPUs).
  From then on ``processes()`` reports this rank and the world size, and the compute paths split
  their batches over the ranks and combine the results (``sum_across``, ``gather_across``);
  ``one_process()`` turns that off for work each rank does alone (a sweep's configurations).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from prunekit.errors import DeviceError

__all__ = [
    "DEVICE_HELP",
    "PRECISIONS",
    "Processes",
    "accumulate_dtype",
    "add_device_arguments",
    "autocast",
    "available_devices",
    "check_precision",
    "describe_device",
    "gather_across",
    "launched_world",
    "model_device",
    "one_process",
    "place",
    "processes",
    "resolve_device",
    "start_processes",
    "stop_processes",
    "sum_across",
    "synchronize",
]

PRECISIONS = ("fp32", "bf16")
DEVICE_HELP = "auto (a GPU when present), cpu, cuda, cuda:N or mps"
_CUDA = re.compile(r"cuda(?::(\d+))?")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The ``torch.device`` for ``spec`` (None means ``auto``). Under a multi-process launch,
    ``auto`` and ``cuda`` are this process's GPU (``LOCAL_RANK``)."""
    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return _cuda(None, "auto")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise DeviceError(
                f"Device 'mps' was asked for, but this machine has no usable Apple GPU "
                f"(torch {torch.__version__}: torch.backends.mps.is_available() is False); "
                "use --device cpu or auto"
            )
        return torch.device("mps")
    match = _CUDA.fullmatch(text)
    if match:
        return _cuda(None if match[1] is None else int(match[1]), text)
    raise DeviceError(f"Unknown device {spec!r}; choose {DEVICE_HELP}")


def _cuda(index: int | None, asked: str) -> torch.device:
    if not torch.cuda.is_available():
        raise DeviceError(
            f"Device {asked!r} was asked for, but torch {torch.__version__} sees no CUDA GPU here "
            "(torch.cuda.is_available() is False); use --device cpu, or auto to take a GPU only "
            "when there is one"
        )
    count = torch.cuda.device_count()
    if index is None:
        index = int(os.environ.get("LOCAL_RANK", "0")) if launched_world() > 1 else 0
    if not 0 <= index < count:
        raise DeviceError(
            f"Device 'cuda:{index}' was asked for, but this machine has {count} GPU(s): 0..{count - 1}"
        )
    return torch.device("cuda", index)


def available_devices() -> list[str]:
    """The choices this machine offers: "auto", "cpu", then each CUDA GPU and MPS when present."""
    found = ["auto", "cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        found.append("mps")
    return found


def describe_device(device: torch.device) -> str:
    """'cpu', or 'cuda:0 (NVIDIA A100 ...)' for people."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s weights; a model on the ``meta`` device (shapes without values,
    never loaded) is a DeviceError."""
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    if device.type == "meta":
        raise DeviceError(
            f"The model ({type(model).__name__}) is on the 'meta' device: it has shapes but no "
            "weights (it was never loaded); load it with prunekit.models.load_model"
        )
    return device


def place(model: nn.Module, device: str | torch.device | None = None) -> torch.device:
    """The device to run ``model`` on: its own when ``device`` is None, else ``device``, where the
    model is moved (in place; the values of its weights do not change)."""
    current = model_device(model)
    if device is None:
        return current
    target = resolve_device(device)
    if current != target:
        model.to(target)
    return target


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise DeviceError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def autocast(device: torch.device, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """A context that computes in ``precision`` on ``device``: bf16 is torch's autocast (matmuls
    in bfloat16, weights and reductions float32); fp32 changes nothing."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def accumulate_dtype(device: torch.device) -> torch.dtype:
    """What score sums accumulate in: float64, except on MPS (no float64 there), float32."""
    return torch.float32 if device.type == "mps" else torch.float64


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (timings must not stop the clock before the GPU is done)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# --- processes ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Processes:
    """This process's place in a data-parallel launch (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mine(self, count: int) -> range:
        """The indices (of ``count`` batches) this rank computes: every ``world``-th one."""
        return range(self.rank, count, self.world)


_ALONE = [0]  # > 0 inside one_process(): the collectives are off


def launched_world() -> int:
    """How many processes the launcher started (``WORLD_SIZE``; 1 without a launcher)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def start_processes(device: str | torch.device | None = "auto") -> torch.device:
    """Join the launch's process group when there is one (accelerate's ``PartialState``: gloo on
    the CPU, NCCL on GPUs) and return this process's device. Without a launcher this only
    resolves ``device``."""
    target = resolve_device(device)
    if launched_world() > 1:
        from accelerate import PartialState

        state = PartialState(cpu=target.type == "cpu")
        if target.type == "cuda":
            target = state.device
    return target


def stop_processes() -> None:
    """Leave the process group (at the end of a command), if this process joined one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def processes() -> Processes:
    """This rank and the world size of the process group (0 of 1 when there is none, or inside
    ``one_process``)."""
    dist = torch.distributed
    if _ALONE[0] or not dist.is_available() or not dist.is_initialized():
        return Processes()
    return Processes(dist.get_rank(), dist.get_world_size())


@contextlib.contextmanager
def one_process() -> Iterator[None]:
    """Within this block each process works alone: no batch is split over the ranks."""
    _ALONE[0] += 1
    try:
        yield
    finally:
        _ALONE[0] -= 1


def sum_across(tensors: Sequence[torch.Tensor]) -> None:
    """Sum each tensor over the ranks, in place (nothing to do in a single process)."""
    if processes().world == 1:
        return
    nccl = torch.distributed.get_backend() == "nccl"  # NCCL reduces GPU tensors only
    for tensor in tensors:
        if nccl and tensor.device.type != "cuda":
            moved = tensor.to(torch.device("cuda", torch.cuda.current_device()))
            torch.distributed.all_reduce(moved, op=torch.distributed.ReduceOp.SUM)
            tensor.copy_(moved.cpu())
        else:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)


def gather_across(parts: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Every rank's ``parts`` (CPU tensors), indexed by rank; ``[parts]`` in a single process."""
    if processes().world == 1:
        return [parts]
    out: list = [None] * processes().world
    torch.distributed.all_gather_object(out, parts)
    return out


def add_device_arguments(parser, *, precision: str | None = "evaluation and LoRA recovery") -> None:
    """``--device`` (default auto) and, unless ``precision`` is None, ``--precision`` (what it
    applies to, for the help) on an argparse parser: the one definition every command shares."""
    parser.add_argument("--device", default="auto", help=f"where to compute: {DEVICE_HELP} (default: auto)")
    if precision is not None:
        parser.add_argument(
            "--precision",
            default="fp32",
            choices=PRECISIONS,
            help=f"{precision}: fp32, or bf16 autocast (scores always sum in float64)",
        )
