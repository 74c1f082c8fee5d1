"""Complete models only: the weights a model folder holds are checked against what its configs define.

diffusers' ``from_pretrained`` leaves a tensor the safetensors lack at its random initial value
(with a log line the CLI silences), so a folder with one tensor removed would be studied as a
different model. ``check_config`` refuses a config diffusers would build wrongly or not at all
(``patch_size: 0``...) and one whose declared size exceeds the machine's memory, before anything is
allocated; ``check_weights`` reads only the safetensors headers (keys, shapes, dtypes) and refuses a
missing, misshapen or non-floating tensor; ``scan_finite`` refuses a NaN/inf weight before loading
(every value of files up to 1 GiB, the first rows of each tensor of larger ones) and ``check_finite``
every value of the loaded module. Each raises a one-line ``ModelFolderError`` naming the file and the first bad tensor.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from largemodel.models.folder import ModelFolderError

__all__ = ["available_memory", "check_config", "check_finite", "check_weights", "expected_tensors", "scan_finite"]

#: transformer config entries that must be positive integers (``num_single_layers`` may be 0)
_POSITIVE_INT_KEYS = ("patch_size", "in_channels", "num_layers", "attention_head_dim", "num_attention_heads",
                      "joint_attention_dim", "pooled_projection_dim", "sample_size", "out_channels",
                      "caption_projection_dim", "pos_embed_max_size")
#: safetensors dtype codes of floating tensors
_FLOAT_CODES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")


def available_memory(device: torch.device) -> float:
    """Bytes a model can occupy on ``device``: a CUDA device's total memory, else the host's
    available memory (``MemAvailable`` of ``/proc/meminfo``, else physical pages)."""
    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_config(config: dict[str, Any], path: Path, *, dtype: torch.dtype, device: torch.device) -> None:
    """Refuse a transformer config that cannot describe a working network, or whose declared weights
    (parameters and buffers at ``dtype``, ``count_parameters``) exceed ``available_memory(device)``.

    Raises:
        ModelFolderError: naming ``path`` and the setting, or the estimate and the memory.
    """
    from largemodel.models.transformer_configs import count_parameters

    if "auto_map" in config or "_custom_class" in config:
        raise ModelFolderError(f"{path}: a remote-code config (auto_map); pfode loads diffusers' own classes only")
    for key in _POSITIVE_INT_KEYS + ("num_single_layers",):
        if key not in config or config[key] is None:
            continue
        value = config[key]
        low = 0 if key == "num_single_layers" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ModelFolderError(f"{path}: {key} must be an integer >= {low}, got {value!r}")
    try:
        params, buffers = count_parameters(config)
    except Exception as exc:  # noqa: BLE001 - any failure of diffusers' constructor: one line naming the file
        why = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFolderError(f"{path}: the config does not build a transformer ({why})") from None
    need = float(params + buffers) * torch.empty((), dtype=dtype).element_size()
    have = available_memory(device)
    if need > have:
        raise ModelFolderError(f"{path}: the config declares {params + buffers:,} weights = {need / 1e9:,.1f} GB at "
                               f"{str(dtype).removeprefix('torch.')}, more than the {have / 1e9:,.1f} GB of {device.type} "
                               "memory available; refused before loading")


def expected_tensors(module_cls: type, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of ``module_cls(config)``'s state dict (parameters and
    persistent buffers), built on the meta device (no memory)."""
    from largemodel.models.transformer_configs import quiet_diffusers

    with quiet_diffusers(), torch.device("meta"):
        module = module_cls.from_config(config)
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _weight_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (unsharded, or by the shard index)."""
    single = folder / "diffusion_pytorch_model.safetensors"
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if single.is_file():
        files = [single]
    else:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted({folder / str(f) for f in weight_map.values()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelFolderError(f"{index}: not a readable shard index ({type(exc).__name__}: {exc})") from None
    return {str(f): f for f in files}  # type: ignore[misc]


def check_weights(folder: Path, module_cls: type, config: dict[str, Any]) -> None:
    """Refuse a component folder whose safetensors lack a tensor ``module_cls(config)`` defines, or
    hold it with another shape or a non-floating dtype (headers only: nothing is loaded).

    Raises:
        ModelFolderError: naming the weight file (or folder) and the first missing or bad tensor.
    """
    from safetensors import safe_open

    headers: dict[str, tuple[Path, tuple[int, ...], str]] = {}
    for file in _weight_files(folder).values():  # headers only
        try:
            with safe_open(str(file), framework="pt") as fh:
                for key in fh.keys():
                    sl = fh.get_slice(key)
                    headers[key] = (file, tuple(sl.get_shape()), str(sl.get_dtype()))
        except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError: one line naming the file
            why = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFolderError(f"{file}: not a readable safetensors file ({why})") from None
    try:
        expected = expected_tensors(module_cls, config)
    except Exception as exc:  # noqa: BLE001 - diffusers' constructor on a bad config: one line naming it
        why = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFolderError(f"{folder / 'config.json'}: the config does not build a {module_cls.__name__} ({why})") from None
    files = _weight_files(folder)
    where = next(iter(files)) if len(files) == 1 else str(folder)
    missing = [k for k in expected if k not in headers]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ModelFolderError(f"{where}: incomplete model: tensor {missing[0]!r}{more} of the {len(expected)} the "
                               "config defines missing (it would stay at its random initial value)")
    for key, shape in expected.items():
        file, got, code = headers[key]
        if got != shape:
            raise ModelFolderError(f"{file}: tensor {key!r} has shape {list(got)}, the config defines {list(shape)}")
        if code not in _FLOAT_CODES:
            raise ModelFolderError(f"{file}: tensor {key!r} has dtype {code}, not a floating type")


#: weight files up to this size are scanned whole for NaN/inf before loading; larger ones are sampled
FULL_SCAN_BYTES = 1 << 30
#: values read per tensor of a sampled file (its first rows)
SAMPLE_VALUES = 1 << 16


def scan_finite(folder: Path) -> None:
    """Refuse a component folder whose safetensors hold a NaN or infinite weight, before anything is
    loaded: each tensor is read alone, whole in files up to ``FULL_SCAN_BYTES``, else its first rows
    (about ``SAMPLE_VALUES`` values; ``check_finite`` checks every value after loading).

    Raises:
        ModelFolderError: naming the file and the first such tensor.
    """
    from safetensors import safe_open

    for file in _weight_files(folder).values():
        whole = file.stat().st_size <= FULL_SCAN_BYTES
        with safe_open(str(file), framework="pt") as fh:
            for key in fh.keys():
                sl = fh.get_slice(key)
                shape = sl.get_shape()
                if whole or not shape:
                    t = fh.get_tensor(key)
                else:
                    row = max(1, int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1)
                    t = sl[: max(1, min(shape[0], SAMPLE_VALUES // row))]
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    raise ModelFolderError(f"{file}: tensor {key!r} holds NaN or infinite values")


def check_finite(module: torch.nn.Module, folder: Path) -> None:
    """Refuse a loaded module with a NaN or infinite weight, naming ``folder`` and the first such
    tensor (every parameter and buffer is checked, one at a time, on its own device)."""
    for key, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelFolderError(f"{folder}: tensor {key!r} holds NaN or infinite values")
