"""Reading and writing local diffusers model folders, offline and safetensors only.

A model folder is what ``DiffusionPipeline.save_pretrained`` writes: a ``model_index.json``
naming the pipeline class and one sub-folder per component. The study needs the transformer,
the scheduler config, the VAE (absent for pixel-space models trained by ``pfode largemodel
train``) and the null-prompt conditioning, which is either computed once from the text encoders
or read from ``null_prompt.safetensors`` (written by this module for models without encoders).

Nothing here touches the network or runs code shipped with a model: classes come from diffusers
itself, chosen by a fixed table, never from the folder.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

NULL_PROMPT_FILE = "null_prompt.safetensors"
#: a class-conditional model's learned table, prompt name -> embeddings (``largemodel.models.prompts``)
CLASS_PROMPTS_FILE = "class_prompts.safetensors"
PFODE_META_FILE = "pfode_model.json"

#: pipeline class in ``model_index.json`` -> (family, transformer class name)
SUPPORTED_PIPELINES: dict[str, tuple[str, str]] = {
    "StableDiffusion3Pipeline": ("sd3", "SD3Transformer2DModel"),
    "StableDiffusion3Img2ImgPipeline": ("sd3", "SD3Transformer2DModel"),
    "FluxPipeline": ("flux", "FluxTransformer2DModel"),
    "FluxImg2ImgPipeline": ("flux", "FluxTransformer2DModel"),
}


class ModelFolderError(ValueError):
    """A model folder is missing, malformed, unsupported or not loadable offline."""


@dataclass(frozen=True)
class FolderInfo:
    """What a model folder holds.

    Attributes:
        path: the folder.
        pipeline_class: ``_class_name`` of ``model_index.json``.
        family: ``"sd3"``, ``"sd3.5"`` or ``"flux"`` (SD3.5 is told from SD3 by its transformer
            config: dual-attention layers (Medium) or q/k RMS-norm (Large)).
        components: component name -> (library, class) for the components present.
        transformer_config: the transformer's ``config.json``.
        has_vae: whether a VAE is present (otherwise the model works in pixel space).
        has_text_encoders: whether text encoders and tokenizers are present.
        null_prompt_file: ``null_prompt.safetensors`` if the folder has one.
        meta: ``pfode_model.json`` (written for models trained here), or ``{}``.
        class_prompts_file: ``class_prompts.safetensors`` if the folder has one (a class-conditional
            model trained here: its prompts are the class names, no text encoder needed).
    """

    path: Path
    pipeline_class: str
    family: str
    components: dict[str, tuple[str, str]]
    transformer_config: dict[str, Any]
    has_vae: bool
    has_text_encoders: bool
    null_prompt_file: Path | None
    meta: dict[str, Any] = field(default_factory=dict)
    class_prompts_file: Path | None = None


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFolderError(f"{what}: {path} not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{what}: cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelFolderError(f"{what}: {path} is not a JSON object")
    return data


#: weight files diffusers (transformer, VAE) and transformers (text encoders) load, unsharded or sharded
_WEIGHT_FILES = {
    "diffusers": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json"),
    "transformers": ("model.safetensors", "model.safetensors.index.json"),
}

#: pickle weight files we refuse to load (they can run code)
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

#: scheduler settings the sigma grid is built from (``FlowModel.sigmas``)
SCHEDULER_KEYS: tuple[str, ...] = ("num_train_timesteps", "shift")
DYNAMIC_SHIFT_KEYS: tuple[str, ...] = ("base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len")


def _check_weights(folder: Path, library: str) -> None:
    """Refuse a component folder without the safetensors weights its library loads, with our
    own message (before diffusers looks, so its log lines never reach the user)."""
    names = _WEIGHT_FILES[library]
    if any((folder / n).is_file() for n in names):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise ModelFolderError(f"{folder}: weights only in pickle format ({pickles[0]}); pfode loads safetensors "
                               f"only (pickle files can run code): convert them to {names[0]}")
    others = sorted(p.name for p in folder.glob("*.safetensors"))
    found = f" (found {others[0]}; variants are not loaded: rename it)" if others else ""
    raise ModelFolderError(f"{folder}: no {names[0]} (only safetensors weights are loaded){found}")


def check_scheduler_config(config: dict[str, Any], path: Path) -> None:
    """Refuse a scheduler config that lacks what the sigma grid needs.

    A flow-matching scheduler config must give ``num_train_timesteps`` (a positive integer) and
    ``shift`` (a positive finite number), and, with ``use_dynamic_shifting``, the four dynamic
    shift settings; its ``_class_name``, when present, must be ``FlowMatchEulerDiscreteScheduler``.
    Without this check diffusers would fill the gaps with its defaults, silently changing the
    schedule (a ``{}`` config would give shift 1).

    Raises:
        ModelFolderError: naming ``path`` and the first missing or bad setting.
    """
    cls = config.get("_class_name", "FlowMatchEulerDiscreteScheduler")
    if cls != "FlowMatchEulerDiscreteScheduler":
        raise ModelFolderError(f"scheduler config {path}: {cls!r} is not a flow-matching scheduler "
                               "(expected FlowMatchEulerDiscreteScheduler)")
    needed = SCHEDULER_KEYS + (DYNAMIC_SHIFT_KEYS if config.get("use_dynamic_shifting") else ())
    missing = [k for k in needed if k not in config]
    if missing:
        raise ModelFolderError(f"scheduler config {path} lacks {', '.join(missing)}")
    for key in needed:
        value = config[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        if key in ("num_train_timesteps", "base_image_seq_len", "max_image_seq_len"):
            ok = ok and float(value).is_integer()
        if not ok:
            raise ModelFolderError(f"scheduler config {path}: {key} must be a positive "
                                   f"{'integer' if 'len' in key or 'timesteps' in key else 'number'}, got {value!r}")
    if config.get("use_dynamic_shifting") and config["max_image_seq_len"] <= config["base_image_seq_len"]:
        raise ModelFolderError(f"scheduler config {path}: max_image_seq_len must exceed base_image_seq_len")


def check_null_prompt(path: Path) -> None:
    """Refuse a ``null_prompt.safetensors`` that cannot be read or lacks the two tensors
    (``prompt_embeds`` ``(1, L, D)``, ``pooled_prompt_embeds`` ``(1, P)``), naming the file."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...: one message naming the file
        why = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFolderError(f"{path}: not a readable safetensors file ({why})") from None
    shapes = {"prompt_embeds": 3, "pooled_prompt_embeds": 2}
    for key, ndim in shapes.items():
        t = tensors.get(key)
        if t is None or t.ndim != ndim or t.shape[0] != 1 or not t.is_floating_point() or not bool(torch.isfinite(t).all()):
            raise ModelFolderError(f"{path}: needs finite float tensors prompt_embeds (1, L, D) and "
                                   f"pooled_prompt_embeds (1, P); {key} is missing or malformed")


def family_of(pipeline_class: str, transformer_config: dict[str, Any]) -> str:
    """Model family from the pipeline class and the transformer config (see ``FolderInfo``)."""
    family = SUPPORTED_PIPELINES[pipeline_class][0]
    if family == "sd3" and (transformer_config.get("dual_attention_layers") or transformer_config.get("qk_norm")):
        return "sd3.5"
    return family


def inspect_folder(path: str | Path) -> FolderInfo:
    """Check that ``path`` is a supported, complete, safetensors diffusers folder; describe it.

    Raises:
        ModelFolderError: not a folder, no ``model_index.json``, unsupported pipeline class,
            missing transformer or scheduler, weights not in safetensors (pickle-only folders are
            refused here, before diffusers looks), a scheduler config lacking what the sigma grid
            needs (``check_scheduler_config``), an unreadable ``null_prompt.safetensors``
            (``check_null_prompt``), or no way to get the null-prompt conditioning (neither text
            encoders nor ``null_prompt.safetensors``).
    """
    root = Path(path)
    if not root.is_dir():
        raise ModelFolderError(f"model folder {root} does not exist or is not a directory")
    index = _read_json(root / "model_index.json", "not a diffusers model folder")
    cls = index.get("_class_name")
    if not isinstance(cls, str):  # ["module", "Class"]: a custom pipeline shipped with the model
        raise ModelFolderError(f"{root / 'model_index.json'}: _class_name {cls!r} names a custom pipeline "
                               "(remote code); pfode loads diffusers' own classes only")
    if cls not in SUPPORTED_PIPELINES:
        supported = ", ".join(sorted(SUPPORTED_PIPELINES))
        raise ModelFolderError(f"unsupported model {cls!r} in {root} (supported: {supported})")
    components = {
        k: (v[0], v[1])
        for k, v in index.items()
        if not k.startswith("_") and isinstance(v, list) and len(v) == 2 and v[0] is not None and v[1] is not None
    }
    expected_tf = SUPPORTED_PIPELINES[cls][1]
    if components.get("transformer", (None, None))[1] != expected_tf:
        raise ModelFolderError(f"{root}: model_index.json has no {expected_tf} transformer")
    if "scheduler" not in components:
        raise ModelFolderError(f"{root}: model_index.json has no scheduler")
    for name in components:
        if not (root / name).is_dir():
            raise ModelFolderError(f"{root}: component folder {name}/ is missing")
    for name in ("transformer", "vae"):
        if name in components:
            _check_weights(root / name, "diffusers")
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        if name in components:
            _check_weights(root / name, "transformers")
    tf_config = _read_json(root / "transformer" / "config.json", "transformer config")
    sched_path = root / "scheduler" / "scheduler_config.json"
    check_scheduler_config(_read_json(sched_path, "scheduler config"), sched_path)
    encoders = [k for k in components if k.startswith("text_encoder")]
    has_text = bool(encoders) and all(k.replace("text_encoder", "tokenizer") in components for k in encoders)
    null_file = root / NULL_PROMPT_FILE
    if null_file.is_file():
        check_null_prompt(null_file)
    else:
        null_file = None
        if not has_text:
            raise ModelFolderError(
                f"{root}: no text encoders and no {NULL_PROMPT_FILE}: cannot form the null-prompt conditioning"
            )
    meta_path = root / PFODE_META_FILE
    meta = _read_json(meta_path, "pfode model metadata") if meta_path.is_file() else {}
    return FolderInfo(
        path=root,
        pipeline_class=cls,
        family=family_of(cls, tf_config),
        components=components,
        transformer_config=tf_config,
        has_vae="vae" in components,
        has_text_encoders=has_text,
        null_prompt_file=null_file,
        meta=meta,
        class_prompts_file=root / CLASS_PROMPTS_FILE if (root / CLASS_PROMPTS_FILE).is_file() else None,
    )


def _dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``dtype=`` where this diffusers reads it (it deprecates ``torch_dtype=``), else ``torch_dtype=``."""
    try:
        from diffusers.utils import deprecation_utils

        has_dtype = hasattr(deprecation_utils, "_resolve_dtype")
    except ImportError:  # older diffusers: torch_dtype only
        has_dtype = False
    return {"dtype": dtype} if has_dtype else {"torch_dtype": dtype}


def _load_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    """Offline, safetensors-only ``from_pretrained`` options, every default diffusers would warn
    about set explicitly: ``low_cpu_mem_usage`` only where ``accelerate`` is installed (without
    it diffusers prints a "Cannot initialize model with low cpu memory usage" notice)."""
    import importlib.util

    return {"local_files_only": True, "use_safetensors": True,
            "low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None, **_dtype_kwargs(dtype)}


def save_model_folder(
    out: str | Path,
    transformer: torch.nn.Module,
    scheduler: Any,
    *,
    prompt_embeds: torch.Tensor,
    pooled_prompt_embeds: torch.Tensor,
    vae: torch.nn.Module | None = None,
    meta: dict[str, Any] | None = None,
    class_prompts: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> Path:
    """Write a folder that ``largemodel.load_model`` (and diffusers) can load.

    For models without text encoders: the null-prompt conditioning is stored as
    ``null_prompt.safetensors`` (``prompt_embeds`` of shape ``(1, L, D)`` and
    ``pooled_prompt_embeds`` of shape ``(1, P)``); text-encoder entries of ``model_index.json``
    are null, as diffusers writes for absent optional components.

    Args:
        out: destination folder (created).
        transformer: an ``SD3Transformer2DModel`` or ``FluxTransformer2DModel``.
        scheduler: a ``FlowMatchEulerDiscreteScheduler``.
        vae: optional ``AutoencoderKL``; without one the model works in pixel space.
        meta: extra metadata (e.g. training data, resolution, channels) -> ``pfode_model.json``.
        class_prompts: a class-conditional model's table, name -> ``((1, L, D), (1, P))``, written
            as ``class_prompts.safetensors``: ``prompt_embeds`` ``(K, L, D)`` and
            ``pooled_prompt_embeds`` ``(K, P)`` stacked in the order of the metadata's ``prompts``
            (a JSON list of the names).
    """
    from safetensors.torch import save_file

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    tf_cls = type(transformer).__name__
    pipelines = {v[1]: k for k, v in SUPPORTED_PIPELINES.items() if not k.endswith("Img2ImgPipeline")}
    if tf_cls not in pipelines:
        raise ModelFolderError(f"cannot save a {tf_cls}: expected one of {sorted(pipelines)}")
    pipe_cls = pipelines[tf_cls]
    import diffusers

    index: dict[str, Any] = {"_class_name": pipe_cls, "_diffusers_version": diffusers.__version__}
    null_entries = ["text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"]
    if pipe_cls.startswith("StableDiffusion3"):
        null_entries += ["text_encoder_3", "tokenizer_3", "image_encoder", "feature_extractor"]
    else:
        null_entries += ["image_encoder", "feature_extractor"]
    for name in null_entries:
        index[name] = [None, None]
    index["transformer"] = ["diffusers", tf_cls]
    index["scheduler"] = ["diffusers", type(scheduler).__name__]
    index["vae"] = ["diffusers", type(vae).__name__] if vae is not None else [None, None]
    transformer.save_pretrained(root / "transformer", safe_serialization=True)
    scheduler.save_pretrained(root / "scheduler")
    if vae is not None:
        vae.save_pretrained(root / "vae", safe_serialization=True)
    save_file(
        {
            "prompt_embeds": prompt_embeds.detach().to("cpu", torch.float32).contiguous(),
            "pooled_prompt_embeds": pooled_prompt_embeds.detach().to("cpu", torch.float32).contiguous(),
        },
        str(root / NULL_PROMPT_FILE),
    )
    if class_prompts:
        names = list(class_prompts)
        save_file({"prompt_embeds": torch.cat([class_prompts[n][0] for n in names]).detach().to("cpu", torch.float32).contiguous(),
                   "pooled_prompt_embeds": torch.cat([class_prompts[n][1] for n in names]).detach().to("cpu", torch.float32).contiguous()},
                  str(root / CLASS_PROMPTS_FILE), metadata={"prompts": json.dumps(names)})
    (root / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    if meta is not None:
        (root / PFODE_META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return root
