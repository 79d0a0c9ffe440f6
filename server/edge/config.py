"""The server's settings: defaults, then a TOML file, then SLIDESAM_* environment variables, then flags.

Every key of the file is a field of ServerConfig (the same names, `slidesam-server serve --help`
tells what each does); an unknown key or a wrong type is an error that names it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slidesam.server.engine.scheduler import SchedulerConfig
from slidesam.server.edge.tokens import UserLimits

MiB = 2**20
ENV_PREFIX = "SLIDESAM_"
AUTO_GPU_BATCH = 8


class ConfigError(ValueError):
    """The settings cannot be used; the message names the key and where it came from."""


class ServerConfig(BaseModel):
    """Everything `slidesam-server serve` can set (see --help for each)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slide_root: Path
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)               # 0 picks a free port
    model_dir: Path | None = None
    default_model: str = "mobile_sam"
    device: str = "auto"                                    # auto (every GPU, else the CPU), cpu, cuda:0, cuda:0,cuda:1
    threads: int = Field(0, ge=0)                           # torch CPU threads; 0 = torch's choice
    checkpoints: dict[str, tuple[str, str]] = {}           # name -> (path or URL, sha256)
    preload: bool = True                                    # load the default model at start
    # Memory
    cache_mb: float = Field(1024, gt=0)                     # image embeddings per device (4 MiB each at float32)
    cache_dtype: Literal["float32", "float16"] = "float32"  # float16 stores twice as many embeddings
    encoder_precision: Literal["float32", "bfloat16", "float16"] = "float32"  # autocast for the image encoder
    upload_mb: float = Field(512, gt=0)                     # decoded uploaded images, shared fairly between users
    decode_mb: float = Field(768, gt=0)                     # memory the upload decodes running at once may take
    decode_workers: int = Field(2, ge=1)                    # threads decoding uploads (lowest CPU priority)
    decodes_per_user: int = Field(1, ge=1)                  # uploads one user may have decoding at once
    embedding_store: Path | None = None                     # precomputed grid-window embeddings (`precompute --store`)
    store_gb: float = Field(20, gt=0)                       # disk budget of that store
    max_object_mpixels: float = Field(105, gt=0)            # largest multi-window field of view, megapixels at its resolution
    max_step_encodes: int = Field(64, ge=1)                 # fine-window encodes one multi-window step may need
    max_message_mb: float = Field(64, gt=0)                 # largest request or reply
    session_idle_seconds: float = Field(1800, gt=0)         # open objects unused this long are freed
    # Scheduling
    max_pending: int = Field(64, ge=1)                      # requests waiting for the model, all users
    max_pending_per_user: int = Field(16, ge=1)             # requests one user may have waiting
    max_batch: int = Field(0, ge=0)                         # decoder passes run together; 0 = auto (GPU 8, CPU 1 = off)
    # Results
    max_vertices: int = Field(4000, ge=4)                   # default polygon vertex budget
    strategy: Literal["plain", "consistent"] = "plain"      # default prompt strategy
    # Security
    tokens_file: Path | None = None                         # `slidesam-server tokens` manages it
    allow_anonymous: bool = False                           # requests without a token are user 'anonymous'
    tls_cert: Path | None = None                            # PEM certificate chain of the server
    tls_key: Path | None = None                             # its PEM private key
    tls_client_ca: Path | None = None                       # PEM CA: clients must show a certificate it signed
    max_streams_per_user: int = Field(4, ge=1)              # concurrent Interact streams (a token may set its own)
    upload_mb_per_minute: float = Field(256, ge=0)          # uploaded bytes per user per minute (idem)
    max_stream_minutes: float = Field(0, ge=0)              # an Interact stream ends after this long; 0 = never
    # Operations
    drain_seconds: float = Field(2.0, ge=0)                 # on SIGTERM: NOT_SERVING but still serving, this long
    grace_seconds: float = Field(5.0, ge=0)                 # then in-flight requests get this long
    metrics_port: int | None = Field(None, ge=0, le=65535)  # Prometheus /metrics; None = off
    metrics_host: str = "127.0.0.1"
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _consistent(self) -> "ServerConfig":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        if self.tokens_file is None and not self.allow_anonymous:
            raise ValueError(
                "no tokens_file: create one with `slidesam-server tokens add USER` and pass --tokens-file, "
                "or pass --allow-anonymous on a machine only trusted users can reach"
            )
        return self

    def scheduler(self, device_type: str) -> SchedulerConfig:
        """The scheduler's settings on a device of this type ('cuda', 'cpu', ...).

        Decoder batching pays on a GPU; on a CPU the decoder is already compute-bound, so a batch only
        makes its first click wait for the others (measured with scripts/loadtest), and auto turns it off.
        """
        max_batch = self.max_batch or (AUTO_GPU_BATCH if device_type == "cuda" else 1)
        return SchedulerConfig(self.max_pending, self.max_pending_per_user, max_batch=max_batch)

    def devices(self) -> list[str]:
        """The torch devices to run on, one worker each: 'auto' means every CUDA device, else the CPU."""
        if self.device != "auto":
            return [name.strip() for name in self.device.split(",") if name.strip()]
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{index}" for index in range(count)] or ["cpu"]

    @property
    def default_limits(self) -> UserLimits:
        return UserLimits(self.max_streams_per_user, int(self.upload_mb_per_minute * MiB))

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def load_config(
    file: Path | None = None, flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """Merges defaults < file < environment (SLIDESAM_<KEY>) < flags, and validates the result."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if file is not None:
        try:
            values.update(tomllib.loads(Path(file).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"config file {file}: {error}") from error
    scalar_fields = [name for name in ServerConfig.model_fields if name != "checkpoints"]
    values.update({name: environ[ENV_PREFIX + name.upper()] for name in scalar_fields if ENV_PREFIX + name.upper() in environ})
    values.update({name: value for name, value in (flags or {}).items() if value is not None})
    try:
        return ServerConfig(**values)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in item['loc']) or 'config'}: {item['msg']}" for item in error.errors())
        source = f" (file {file}, SLIDESAM_* environment, flags)" if file else ""
        raise ConfigError(f"invalid server settings{source}: {problems}") from error
