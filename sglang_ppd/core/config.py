"""Strict YAML -> validated model loading. Unknown keys are errors that say how to fix them."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config and I/O model: frozen, and unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """A config that cannot be used, with a message that tells the operator what to change."""


def format_validation_error(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    lines = [f"invalid {model.__name__} in {source}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(model.model_fields))
            lines.append(f"  {loc}: unknown key; remove it or use one of: {allowed}")
        else:
            lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def validate(model: type[M], data: object, source: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model, source)) from None


def load_yaml(model: type[M], path: str | Path) -> M:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p} (pass an existing YAML file)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}") from None
    return validate(model, data if data is not None else {}, str(p))
