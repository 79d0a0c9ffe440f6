"""Server settings (TOML file < SLIDESAM_* environment < flags) and structured logs."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from slidesam.server.cli import build_parser
from slidesam.server.edge.serve_cli import serve_config
from slidesam.server.edge.config import ConfigError, load_config
from slidesam.server.edge.logs import configure_logging

ROOT = Path(__file__).resolve().parents[2]


def test_file_then_environment_then_flags(tmp_path):
    file = tmp_path / "server.toml"
    file.write_text(f'slide_root = "{tmp_path}"\nport = 6000\ncache_mb = 100\nallow_anonymous = true\n'
                    f'[checkpoints]\nsam_vit_b = ["/m/b.pth", "{"ab" * 32}"]\n')
    config = load_config(file, {"cache_mb": 300}, environ={"SLIDESAM_PORT": "7000", "SLIDESAM_CACHE_MB": "200", "SLIDESAM_VENV": "x"})
    assert config.port == 7000 and config.cache_mb == 300 and config.allow_anonymous
    assert config.slide_root == tmp_path and config.checkpoints == {"sam_vit_b": ("/m/b.pth", "ab" * 32)}
    assert load_config(file, environ={}).port == 6000


@pytest.mark.parametrize("text, problem", [
    ('slide_root = "/x"\nallow_anonymous = true\ncache_megabytes = 3\n', "cache_megabytes"),
    ('slide_root = "/x"\nallow_anonymous = true\nport = "many"\n', "port"),
    ('slide_root = "/x"\nallow_anonymous = true\nport = 70000\n', "port"),
    ('slide_root = "/x"\nallow_anonymous = true\ntls_cert = "/c.pem"\n', "tls_cert and tls_key"),
    ('slide_root = "/x"\n', "tokens add"),
    ('slide_root = "/x"\nallow_anonymous = true\ncache_dtype = "int8"\n', "cache_dtype"),
    ('slide_root = "/x"\nallow_anonymous = true\nencoder_precision = "int8"\n', "encoder_precision"),
    ("slide_root = \n", "config file"),
])
def test_bad_settings_name_the_problem(tmp_path, text, problem):
    file = tmp_path / "bad.toml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_config(file, environ={})


def test_the_documented_example_file_is_valid(tmp_path, monkeypatch):
    for name in ("SLIDESAM_PORT", "SLIDESAM_TOKENS_FILE"):
        monkeypatch.delenv(name, raising=False)
    config = load_config(ROOT / "docs" / "server.toml", {"slide_root": tmp_path})
    assert config.tls and config.cache_dtype == "float16" and config.tokens_file and not config.allow_anonymous


def test_serve_flags_override_the_file_and_unset_flags_do_not(tmp_path):
    file = tmp_path / "server.toml"
    file.write_text(f'slide_root = "{tmp_path}"\nallow_anonymous = true\nmax_batch = 4\nport = 6001\n')
    args = build_parser().parse_args(["--log-level", "DEBUG", "serve", "--config", str(file), "--max-batch", "1",
                                      "--cache-dtype", "float16", "--no-preload"])
    config = serve_config(args)
    assert config.max_batch == 1 and config.port == 6001 and config.cache_dtype == "float16"
    assert not config.preload and config.log_level == "DEBUG" and config.scheduler("cuda").max_batch == 1


def test_decoder_batching_is_automatic_by_device(tmp_path):
    config = load_config(flags={"slide_root": tmp_path, "allow_anonymous": True}, environ={})
    assert config.scheduler("cuda").max_batch == 8 and config.scheduler("cpu").max_batch == 1


def test_serve_refuses_to_start_without_tokens_or_explicit_anonymous_access(tmp_path):
    args = build_parser().parse_args(["serve", "--slide-root", str(tmp_path)])
    with pytest.raises(SystemExit, match="tokens add"):
        serve_config(args)


@pytest.fixture
def restored_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_logs_carry_the_request_fields(restored_logging, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging("INFO", "json")
    logging.getLogger("slidesam.server.edge.service").info("Interact clicks user=%s", "alice", extra={"user": "alice", "total_ms": 81.5, "code": "OK"})
    record = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert record["message"] == "Interact clicks user=alice" and record["level"] == "INFO"
    assert record["user"] == "alice" and record["total_ms"] == 81.5 and record["logger"] == "slidesam.server.edge.service" and record["time"]


def test_one_worker_per_listed_device(tmp_path):
    def devices(device: str) -> list[str]:
        return load_config(flags={"slide_root": tmp_path, "allow_anonymous": True, "device": device}, environ={}).devices()

    assert devices("cuda:0, cuda:1") == ["cuda:0", "cuda:1"] and devices("cpu") == ["cpu"]
    import torch

    expected = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else ["cpu"]
    assert devices("auto") == expected
