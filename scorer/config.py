"""Service configuration: parsed once at the entry point into frozen objects, passed down."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from scorer.core.units import parse_size

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "scorer"


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxDefaults:
    """Limits every benchmark inherits unless it sets its own."""

    pids: int = 512
    tmp_bytes: int = 1024**3
    output_bytes: int = 64 * 1024**2
    shm_bytes: int = 256 * 1024**2
    log_bytes: int = 256 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    listen: str = DEFAULT_LISTEN
    metrics_listen: str = DEFAULT_METRICS_LISTEN
    state_dir: Path = field(default_factory=default_state_dir)
    runtime: str = "runc"  # or "runsc" (gVisor)
    cpu_slots: int = 1  # CPU-only evaluations that may run at once
    # Host GPU indices the service may hand out; None: every GPU discovered at start-up.
    gpus: tuple[int, ...] | None = None
    gpu_mode: str = "devices"  # "devices" (plain device nodes) or "toolkit"
    gpu_driver_dir: str = "/usr/local/nvidia"
    max_attempts: int = 3  # INFRASTRUCTURE retries are bounded (CMS retries 3 times)
    dataset_verify_interval_s: float = 24 * 3600.0
    sandbox: SandboxDefaults = field(default_factory=SandboxDefaults)
    self_test: bool = True
    # Image intake (UploadImage): caps checked as the bytes arrive, and the disk budget of the
    # images this service loaded (least recently used ones not needed by an evaluation go first).
    upload_max_bytes: int = 20 * 1024**3  # bytes on the wire (compressed or not)
    image_max_uncompressed_bytes: int = 40 * 1024**3  # the tar, and its layers' contents
    image_max_layers: int = 127
    image_store_bytes: int = 100 * 1024**3
    # An upload whose client sends nothing for this long is cancelled: it would otherwise hold a
    # worker thread and an open load in the engine for good.
    upload_idle_timeout_s: float = 60.0

    @property
    def db_path(self) -> Path:
        return self.state_dir / "scorer.db"

    @property
    def key_path(self) -> Path:
        return self.state_dir / "signing.key"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"


_SIZE_KEYS = {"tmp_bytes", "output_bytes", "shm_bytes", "log_bytes"}
_TOP_SIZE_KEYS = {"upload_max_bytes", "image_max_uncompressed_bytes", "image_store_bytes"}


def load_config(path: Path | None, **overrides: Any) -> ServiceConfig:
    """Read a TOML file (optional) and apply non-None overrides from the command line."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read config {path}: {exc}") from exc
    sandbox_raw = raw.pop("sandbox", {})
    known = set(ServiceConfig.__dataclass_fields__) - {"sandbox"}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
    sb_known = set(SandboxDefaults.__dataclass_fields__)
    if set(sandbox_raw) - sb_known:
        raise ValueError(
            f"unknown [sandbox] keys: {', '.join(sorted(set(sandbox_raw) - sb_known))}"
        )
    sandbox = SandboxDefaults(**{k: _sandbox_value(k, v) for k, v in sandbox_raw.items()})
    values: dict[str, Any] = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    if "state_dir" in values:
        values["state_dir"] = Path(values["state_dir"]).expanduser()
    for key in _TOP_SIZE_KEYS & set(values):
        values[key] = parse_size(values[key])
    if "gpus" in values:
        values["gpus"] = _gpus(values["gpus"])
    for key in set(values) - _TOP_SIZE_KEYS - {"state_dir", "gpus"}:
        values[key] = _typed(key, values[key])
    config = replace(ServiceConfig(sandbox=sandbox), **values)
    _check(config)
    return config


def _sandbox_value(key: str, value: Any) -> int:
    if key in _SIZE_KEYS:
        try:
            return parse_size(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"[sandbox] {key}: {exc}") from None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"[sandbox] {key} must be a positive integer, not {value!r}")
    return value


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _typed(key: str, value: Any) -> Any:
    """The value if it has the type of the key's default (an integer will do for a number)."""
    expected = type(ServiceConfig.__dataclass_fields__[key].default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ValueError(
            f"{key} must be {_TYPE_NAMES.get(expected, expected.__name__)}, not {value!r}"
        )
    return value


def _gpus(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(g, int) and not isinstance(g, bool) for g in value
    ):
        raise ValueError(f"gpus must be a list of GPU indices, not {value!r}")
    return tuple(value)


def _check(config: ServiceConfig) -> None:
    if config.runtime not in ("runc", "runsc"):
        raise ValueError(f"runtime must be runc or runsc, not {config.runtime!r}")
    if config.gpu_mode not in ("devices", "toolkit"):
        raise ValueError(f"gpu_mode must be devices or toolkit, not {config.gpu_mode!r}")
    if config.cpu_slots < 1:
        raise ValueError("cpu_slots must be at least 1")
    if min(config.upload_max_bytes, config.image_max_uncompressed_bytes) < 1024**2:
        raise ValueError("upload_max_bytes and image_max_uncompressed_bytes must be at least 1m")
    if config.image_max_layers < 1:
        raise ValueError("image_max_layers must be at least 1")
    if config.upload_idle_timeout_s <= 0:
        raise ValueError("upload_idle_timeout_s must be positive")
    if config.max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if config.gpus is not None and (
        any(i < 0 for i in config.gpus) or len(set(config.gpus)) != len(config.gpus)
    ):
        raise ValueError(f"gpus must list distinct GPU indices (0, 1, ...), not {config.gpus}")
