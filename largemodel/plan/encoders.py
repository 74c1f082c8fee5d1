r"""The text encoders' phase of a plan: the weights ``load_model`` moves to the device together.

``largemodel.models.load`` encodes the null prompt before the transformer loads: the folder's text
encoders (SD3 / SD3.5: CLIP-L, CLIP-G, T5-XXL; FLUX.1: CLIP-L, T5-XXL) are moved to the device
together, run once on one prompt, and freed; the embeddings are cached in ``--out``. So a run's
first peak is the encoders' weights (SD3.5: 5.58 B parameters, 11.2 GB in bf16), which a plan of
the transformer alone misses. The phase is skipped when the folder ships ``null_prompt.safetensors``
or ``--out`` holds the cache. Activations of one short prompt (at most 512 tokens) are not counted.
Parameter counts: the folder's ``text_encoder*/config.json`` or, for a ``KNOWN_MODELS`` name, the
published configs in ``largemodel/models/configs/text_encoders.json``, counted on the meta device.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from largemodel.models.transformer_configs import CONFIG_DIR

__all__ = ["EncoderPhase", "encoder_phase", "count_encoder", "TEXT_ENCODERS"]

TEXT_ENCODERS = CONFIG_DIR / "text_encoders.json"
#: display names of the encoders
_SHOWN = {"clip-l-projection": "CLIP-L", "clip-l": "CLIP-L", "clip-g-projection": "CLIP-G", "t5-xxl": "T5-XXL"}


@dataclass(frozen=True)
class EncoderPhase:
    """The encoders a run loads (names, parameters), or ``skipped`` with the reason."""

    names: tuple[str, ...]
    parameters: int
    skipped: str = ""


def count_encoder(cls_name: str, config: dict[str, Any]) -> int:
    """Parameters and buffers of a ``transformers`` text encoder built from ``config`` on the meta device."""
    import torch
    import transformers

    cls = getattr(transformers, cls_name)
    cfg_cls = cls.config_class
    cfg = cfg_cls(**{k: v for k, v in config.items() if not k.startswith("_") and k not in ("architectures",)})
    with torch.device("meta"):
        model = cls(cfg)
    return sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())


def _known(family: str) -> EncoderPhase:
    table = json.loads(TEXT_ENCODERS.read_text())
    keys = table["families"]["flux" if family == "flux" else "sd3"]
    return EncoderPhase(tuple(_SHOWN[k] for k in keys), sum(count_encoder(table[k]["class"], table[k]["config"]) for k in keys))


def _from_folder(path: Path) -> EncoderPhase:
    names, total = [], 0
    for sub in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        cfg_file = path / sub / "config.json"
        if not cfg_file.is_file():
            continue
        cfg = json.loads(cfg_file.read_text())
        cls = (cfg.get("architectures") or [""])[0]
        if not cls:
            continue
        total += count_encoder(cls, cfg)
        names.append(cls.removesuffix("WithProjection").removesuffix("Model").removesuffix("Encoder") or sub)
    return EncoderPhase(tuple(names), total)


def _null_prompt_cached(out: Path) -> bool:
    """Whether ``out``'s prompt cache (``largemodel.models.prompts``) holds the null prompt's embeddings (read
    from the files' metadata only; a run with other prompts still encodes those)."""
    from safetensors import safe_open

    from largemodel.models.prompts import PROMPT_CACHE_DIR

    for f in sorted((out / PROMPT_CACHE_DIR).glob("*.safetensors")) if (out / PROMPT_CACHE_DIR).is_dir() else ():
        try:
            with safe_open(str(f), framework="pt") as handle:
                if (handle.metadata() or {}).get("prompt") == "":
                    return True
        except Exception:  # noqa: BLE001 - a damaged cache file is rebuilt by the run: not cached
            continue
    return False


def encoder_phase(model: str | Path, family: str, *, out: str | Path | None = None) -> EncoderPhase:
    """The text-encoder phase of a run of ``model`` (a folder or a ``KNOWN_MODELS`` name) writing to ``out``."""
    if out is not None and _null_prompt_cached(Path(out)):
        return EncoderPhase((), 0, skipped=f"null prompt cached in {Path(out).name}")
    path = Path(model)
    if not path.is_dir():
        return _known(family)
    from largemodel.models.folder import NULL_PROMPT_FILE

    if (path / NULL_PROMPT_FILE).is_file():
        return EncoderPhase((), 0, skipped="the folder ships its null prompt")
    return _from_folder(path)
