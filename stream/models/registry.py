"""The model registry: which vision-language models exist and how to run them.

The registry is a JSON file (``config/models.json``)::

    {"models": [{"id": "tiny-qwen3vl-moe", "source": "var/models/tiny-qwen3vl-moe", ...}, ...]}

Services load a model by its registry ``id``. ``source`` is either

* a local checkpoint directory: absolute, or relative to the **project root**, which is
  the parent of the directory holding the registry file (``config/models.json`` ->
  the repository root), or
* a Hugging Face hub id ``owner/name``, passed unchanged to ``from_pretrained`` (it only
  works where the weights are already in the local cache: nothing is downloaded here).

A relative source is taken as a local directory when it exists under the project root,
starts with ``./`` or ``../``, has more than one ``/``, or belongs to a ``tiny`` entry;
otherwise a two-part ``owner/name`` is a hub id. Write ``./models/foo`` to force a
local reading.

``backend`` says who runs the model:

* ``"transformers"`` (the default): this process loads ``source`` with transformers;
* ``"openai"``: an OpenAI-compatible server (vLLM, SGLang, ``transformers serve``) at
  ``endpoint`` (its base URL, without ``/v1``) runs it; requests name it
  ``served_model`` (default: ``source``, which is what vLLM and SGLang serve a hub id
  as). ``source`` then only says which weights the server holds; ``dtype`` is the
  server's business. The image budget, ``max_new_tokens`` and ``temperature`` still
  apply: images are downscaled before they are sent.

A draw model (tier ``draw``: a diffusers pipeline such as ``Qwen/Qwen-Image``) has no
``mode``, ``max_new_tokens``, ``temperature`` or image budget; its ``draw`` block gives
steps, picture size, guidance, the wall-time deadline and, for pose drawing, a ControlNet::

    {"id": "tiny-qwen-image", "source": "var/models/tiny-qwen-image", "architecture": "dense",
     "tier": "draw", "dtype": "float32", "tiny": true,
     "draw": {"steps": 4, "width": 128, "height": 128, "deadline_ms": 20000,
              "controlnet": "var/models/tiny-qwen-image-controlnet"}}

An entry for a vLLM fleet behind one Service::

    {"id": "qwen3vl-8b-fleet", "source": "Qwen/Qwen3-VL-8B-Instruct", "backend": "openai",
     "endpoint": "http://vllm-fast:8000", ...}

``tier`` says who uses the model: ``"fast"`` and ``"deep"`` entries write a tier's replies;
``"guard"`` entries judge what fans send and what she says (``stream.moderation.guard``) and
are never a tier's reply model. A guard is a text guard in the Qwen3Guard-Gen format when
``text_only`` is set (a text-only causal LM, loaded with ``AutoModelForCausalLM``; it takes
no image budget), otherwise an image guard: a Qwen3-VL prompted as a judge. Guards, like
every entry, run in process or behind an OpenAI-compatible ``endpoint``::

    {"id": "Qwen/Qwen3Guard-Gen-4B", "source": "Qwen/Qwen3Guard-Gen-4B", "tier": "guard",
     "text_only": true, "architecture": "dense", "mode": "instruct", "dtype": "bfloat16",
     "max_new_tokens": 64, "temperature": 0.0}
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stream.models.errors import ModelLoadError, UnknownModelError

Architecture = Literal["dense", "moe"]
Mode = Literal["instruct", "thinking"]
Tier = Literal["fast", "deep", "guard", "draw"]
DType = Literal["float32", "bfloat16", "float16"]
Backend = Literal["transformers", "openai"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class Lineage(BaseModel):
    """What a fine-tuned checkpoint was trained from, so a registry entry can be traced and redone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: str = Field(min_length=1, description="registry id (or source) of the model it started from")
    data: str = Field(min_length=1, description="the dataset file, as given")
    data_digest: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the dataset and its images")
    steps: int = Field(ge=1)
    final_loss: float = Field(ge=0.0)
    seed: int = 0


class DrawSettings(BaseModel):
    """How a draw model (a diffusers pipeline, tier ``draw``) draws: steps, size, guidance, deadline.

    ``controlnet`` is the source of a ControlNet for pose drawing (a directory or hub id,
    resolved like ``source``); without one the pipeline cannot draw in the fan's pose.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(ge=1, le=200, description="denoising steps per picture")
    width: int = Field(ge=16, le=4096, multiple_of=16, description="picture width (a multiple of 16)")
    height: int = Field(ge=16, le=4096, multiple_of=16, description="picture height (a multiple of 16)")
    # 1 turns true classifier-free guidance off (one transformer pass per step, not two).
    true_cfg_scale: float = Field(default=1.0, ge=1.0, le=20.0)
    deadline_ms: int = Field(
        ge=100, le=600_000, description="wall time a picture may take before the fan gets her apology"
    )
    # img2img: how far the fan's picture is noised (0 keeps it, 1 ignores it).
    img2img_strength: float = Field(default=0.7, gt=0.0, le=1.0)
    controlnet: str | None = Field(default=None, min_length=1)
    controlnet_scale: float = Field(default=1.0, ge=0.0, le=2.0)


class ModelSpec(BaseModel):
    """One registry entry. Immutable; unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    architecture: Architecture
    # Instruct or thinking: what a language model is; none for a draw model.
    mode: Mode | None = None
    tier: Tier
    dtype: DType
    # Image budget in pixels; the processor resizes into [min_pixels, max_pixels] and
    # callers downscale to max_pixels first so big uploads never reach the processor.
    # Required for every model that sees images; absent for text-only ones.
    max_pixels: int | None = Field(default=None, gt=0)
    min_pixels: int | None = Field(default=None, gt=0)
    # Required for language models, none for a draw model.
    max_new_tokens: int | None = Field(default=None, ge=1)
    # 0 means greedy decoding.
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    # Built offline by ``build-tiny`` (random weights); never fetched from the hub.
    tiny: bool = False
    # Trained here from scratch by ``models train-demo``; never fetched from the hub.
    demo: bool = False
    # Where a fine-tuned model came from; None for models trained elsewhere or from scratch.
    lineage: Lineage | None = None
    backend: Backend = "transformers"
    # Base URL of the OpenAI-compatible server (``http://vllm-fast:8000``); openai backend only.
    endpoint: str | None = None
    # The ``model`` name sent to that server; ``source`` when unset.
    served_model: str | None = Field(default=None, min_length=1)
    # A text-only causal LM (a Qwen3Guard-Gen text guard): no images, no image budget.
    text_only: bool = False
    # A draw model's steps, size, guidance and deadline; required for tier ``draw``, only there.
    draw: DrawSettings | None = None

    @model_validator(mode="after")
    def _draw_or_language(self) -> ModelSpec:
        language = ("mode", "max_new_tokens", "temperature")
        if self.tier != "draw":
            missing = [name for name in language if getattr(self, name) is None]
            if missing:
                raise ValueError(f"{' and '.join(missing)} missing: a {self.tier} model generates text")
            if self.draw is not None:
                raise ValueError(f"draw settings make no sense for a {self.tier} model (tier 'draw' only)")
            return self
        if self.draw is None:
            raise ValueError("a draw model needs its draw settings (steps, width, height, deadline_ms)")
        stray = [name for name in (*language, "max_pixels", "min_pixels", "endpoint", "served_model")
                 if getattr(self, name) is not None]
        if stray:
            raise ValueError(f"{' and '.join(stray)} make no sense for a draw model (a diffusers pipeline)")
        if self.text_only or self.backend != "transformers":
            raise ValueError("a draw model runs in this process (backend 'transformers', not text_only)")
        return self

    @model_validator(mode="after")
    def _one_builder(self) -> ModelSpec:
        if self.tiny and self.demo:
            raise ValueError("an entry is built by build-tiny or by train-demo, not both (tiny and demo are set)")
        return self

    @model_validator(mode="after")
    def _pixel_range(self) -> ModelSpec:
        given = [name for name in ("max_pixels", "min_pixels") if getattr(self, name) is not None]
        if self.tier == "draw":  # checked with the draw settings
            return self
        if self.text_only:
            if given:
                raise ValueError(f"{' and '.join(given)} make no sense for a text_only model (it takes no images)")
            return self
        missing = [name for name in ("max_pixels", "min_pixels") if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{' and '.join(missing)} missing: a model that sees images needs its image budget")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) > max_pixels ({self.max_pixels})")
        return self

    @model_validator(mode="after")
    def _text_only_guard(self) -> ModelSpec:
        # The fast and deep tiers send pictures: a model that cannot see one is no tier's model.
        if self.text_only and self.tier != "guard":
            raise ValueError(f"a text_only model can only be a guard (tier is {self.tier!r})")
        return self

    @model_validator(mode="after")
    def _backend_fields(self) -> ModelSpec:
        if self.backend == "transformers":
            # Ignoring them would send traffic somewhere the operator did not mean.
            stray = [name for name in ("endpoint", "served_model") if getattr(self, name) is not None]
            if stray:
                raise ValueError(f"{' and '.join(stray)} need backend 'openai' (backend is 'transformers')")
            return self
        if self.endpoint is None:
            raise ValueError("backend 'openai' needs an endpoint (the server's base URL, e.g. http://vllm:8000)")
        url = urlsplit(self.endpoint)
        if url.scheme not in ("http", "https") or not url.netloc or url.query or url.fragment:
            raise ValueError(f"endpoint {self.endpoint!r} must be an http(s) base URL such as http://vllm:8000")
        if url.path.rstrip("/").endswith("/v1"):
            raise ValueError(f"endpoint {self.endpoint!r}: give the base URL without /v1 (it is added per request)")
        return self

    @property
    def served_model_name(self) -> str:
        """The ``model`` an OpenAI-compatible server is asked for."""
        return self.served_model or self.source

    def local_dir(self, project_root: Path) -> Path | None:
        """The checkpoint directory this spec points at, or None for a hub id."""
        return self._local(self.source, project_root)

    def controlnet_dir(self, project_root: Path) -> Path | None:
        """The draw model's ControlNet directory, or None for a hub id or when it names none."""
        if self.draw is None or self.draw.controlnet is None:
            return None
        return self._local(self.draw.controlnet, project_root)

    def resolve_controlnet(self, project_root: Path) -> str | None:
        """What to hand to the ControlNet's ``from_pretrained``: a directory path, a hub id, or None."""
        if self.draw is None or self.draw.controlnet is None:
            return None
        local = self.controlnet_dir(project_root)
        return str(local) if local is not None else self.draw.controlnet

    def _local(self, raw: str, project_root: Path) -> Path | None:
        path = Path(raw).expanduser()
        if path.is_absolute():
            return path
        candidate = Path(project_root) / path
        looks_local = (
            self.tiny
            or self.demo
            or candidate.exists()
            or raw.startswith(("./", "../"))
            or not _HUB_ID.match(raw)
        )
        return candidate if looks_local else None

    def resolve_source(self, project_root: Path) -> str:
        """What to hand to ``from_pretrained``: a directory path or a hub id."""
        local = self.local_dir(project_root)
        return str(local) if local is not None else self.source


def register_model(path: str | Path, spec: ModelSpec) -> bool:
    """Add ``spec`` to the registry file at ``path``, or replace the entry with its id.

    Other entries and their order are kept; the file is rewritten whole (write, then
    rename). Returns False, leaving the file untouched, when the entry is already there
    as given.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        _RegistryFile.model_validate(raw)
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        raise ModelLoadError(f"invalid model registry {path}: {exc}") from exc
    entry = spec.model_dump(mode="json", exclude_defaults=True)
    entry = {**entry, **{key: getattr(spec, key) for key in ("tiny",)}}  # always spelled out, like the others
    models = raw["models"]
    index = next((i for i, old in enumerate(models) if old.get("id") == spec.id), None)
    if index is not None and ModelSpec.model_validate(models[index]) == spec:
        return False
    if index is None:
        models.append(entry)
    else:
        models[index] = entry
    staging = path.with_name(f".{path.name}.writing")
    staging.write_text(json.dumps(raw, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    staging.replace(path)
    return True


class _RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelSpec]


class ModelRegistry:
    """All known models, by id, plus the project root that relative sources resolve against."""

    def __init__(self, specs: Iterable[ModelSpec], project_root: Path) -> None:
        self.project_root = Path(project_root)
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            if spec.id in self._specs:
                raise ModelLoadError(f"duplicate model id {spec.id!r} in registry")
            self._specs[spec.id] = spec

    @classmethod
    def load(cls, path: str | Path) -> ModelRegistry:
        """Read and validate a registry file; the project root is the file's directory's parent."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            parsed = _RegistryFile.model_validate(raw)
        except (OSError, json.JSONDecodeError, ValidationError) as exc:
            raise ModelLoadError(f"invalid model registry {path}: {exc}") from exc
        return cls(parsed.models, project_root=path.resolve().parent.parent)

    def get(self, model_id: str) -> ModelSpec:
        try:
            return self._specs[model_id]
        except KeyError:
            raise UnknownModelError(model_id, self.ids()) from None

    def ids(self) -> list[str]:
        return list(self._specs)

    def resolve_source(self, model_id: str) -> str:
        return self.get(model_id).resolve_source(self.project_root)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._specs
