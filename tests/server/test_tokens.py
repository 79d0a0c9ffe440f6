"""Bearer tokens on real files: hashing, revocation seen by a running store, atomic and concurrent writes, the CLI."""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from slidesam.server.errors import InvalidArgument, NotFound
from slidesam.server.edge.tokens import TokenFileError, TokenStore, UserLimits
from slidesam.server.edge.tokens_cli import add_token_commands, run_tokens_command

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "config" / "tokens.json"


def test_add_then_authenticate(path):
    store = TokenStore(path)
    assert store.records() == [] and store.authenticate("ssam_00000000_" + "a" * 43) is None
    secret, record = store.add("alice", UserLimits(max_streams=2, upload_bytes_per_minute=10 * 2**20), note="laptop")
    assert secret.startswith(f"ssam_{record.token_id}_") and len(secret) == len("ssam_") + 8 + 1 + 43
    assert (record.user, record.revoked, record.note, record.limits.max_streams) == ("alice", None, "laptop", 2)
    assert record.created.endswith("+00:00")
    assert store.authenticate(secret) == record
    assert TokenStore(path).authenticate(secret) == record
    other, _ = store.add("alice")
    assert other != secret and len(store.records()) == 2


def test_wrong_malformed_or_empty_secrets_are_refused(path):
    store = TokenStore(path)
    secret, record = store.add("bob")
    forged = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    other_id = secret.replace(record.token_id, "0" * 8 if record.token_id != "0" * 8 else "1" * 8)
    for presented in (forged, other_id, "", "ssam_", secret + "x", " " + secret, secret.upper(), "Bearer " + secret, None, b"x"):
        assert store.authenticate(presented) is None


def test_revoke_by_id_and_by_user(path):
    store = TokenStore(path)
    first, record = store.add("carol")
    second, _ = store.add("carol")
    third, _ = store.add("dave")
    assert [r.token_id for r in store.revoke(record.token_id)] == [record.token_id]
    assert store.authenticate(first) is None and store.authenticate(second) is not None
    revoked = store.revoke("carol")
    assert [r.user for r in revoked] == ["carol"] and revoked[0].revoked is not None
    assert store.authenticate(second) is None and store.authenticate(third) is not None
    assert store.revoke("carol") == []  # already revoked: nothing changes
    with pytest.raises(NotFound, match="nobody"):
        store.revoke("nobody")
    states = {r.user: r.active for r in store.records()}
    assert states == {"carol": False, "dave": True}


def test_running_store_sees_a_revoke_made_elsewhere(path):
    server_store = TokenStore(path)
    secret, record = TokenStore(path).add("erin")
    assert server_store.authenticate(secret) == record
    TokenStore(path).revoke("erin")
    assert server_store.authenticate(secret) is None
    new_secret, _ = TokenStore(path).add("erin")
    assert server_store.authenticate(new_secret) is not None


def test_file_holds_hashes_only_with_private_modes(tmp_path):
    path = tmp_path / "new" / "dir" / "tokens.json"
    secret, record = TokenStore(path).add("frank", note="desk")
    text = path.read_text()
    assert secret not in text and secret.split("_", 2)[2] not in text
    document = json.loads(text)
    assert document["version"] == 1
    assert document["tokens"][0]["id"] == record.token_id and len(document["tokens"][0]["sha256"]) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_writes_are_atomic(path):
    store = TokenStore(path)
    store.add("grace")
    stop, seen, problems = threading.Event(), [], []

    def read_continuously() -> None:
        while not stop.is_set():
            try:
                seen.append(len(json.loads(path.read_text())["tokens"]))
            except Exception as error:  # a partial or missing file
                problems.append(error)

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        for _ in range(40):
            store.add("grace")
    finally:
        stop.set()
        reader.join()
    assert problems == [] and seen and seen == sorted(seen)
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokens.json", "tokens.json.lock"]


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not valid JSON"),
    ('{"version": 2, "tokens": []}', "version 2"),
    ('{"version": 1, "tokens": [{"id": "zz"}]}', "record 0 is malformed .missing field 'limits'"),
    ('{"version": 1, "tokens": 3}', "not a version-1"),
])
def test_corrupt_file_is_a_clear_error(path, content, expected):
    path.parent.mkdir()
    path.write_text(content)
    path.chmod(0o600)
    store = TokenStore(path)
    for call in (store.records, lambda: store.authenticate("ssam_00000000_" + "a" * 43), lambda: store.add("heidi")):
        with pytest.raises(TokenFileError, match=expected) as raised:
            call()
        assert str(path) in str(raised.value)
    assert path.read_text() == content  # never overwritten


def test_file_writable_by_others_is_refused_and_readable_warns(path, caplog):
    secret, _ = TokenStore(path).add("ivan")
    path.chmod(0o644)
    assert TokenStore(path).authenticate(secret) is not None
    assert "readable by group or others" in caplog.text
    path.chmod(0o664)
    with pytest.raises(TokenFileError, match="writable by group or others"):
        TokenStore(path).authenticate(secret)


def test_a_running_store_refuses_a_file_made_writable_after_it_started(path):
    secret, _ = TokenStore(path).add("judy")
    running = TokenStore(path)
    assert running.authenticate(secret) is not None
    path.chmod(0o666)  # same size and mtime: only the mode (and ctime) change
    with pytest.raises(TokenFileError, match="writable by group or others"):
        running.authenticate(secret)


def test_a_same_size_edit_with_the_mtime_restored_is_reloaded(path):
    secret, _ = TokenStore(path).add("kim")
    running = TokenStore(path)
    assert running.authenticate(secret) is not None
    before = path.stat()
    stored_hash = json.loads(path.read_text())["tokens"][0]["sha256"]
    path.write_text(path.read_text().replace(stored_hash, "0" * 64))  # same size: the token no longer matches
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    assert running.authenticate(secret) is None


def test_a_token_expires(path):
    secret, record = TokenStore(path).add("lee", valid_days=1 / 86400)
    assert record.expires and TokenStore(path).authenticate(secret) is not None
    time.sleep(2.1)
    assert TokenStore(path).authenticate(secret) is None and TokenStore(path).records()[0].expired
    with pytest.raises(InvalidArgument, match="days"):
        TokenStore(path).add("lee", valid_days=0)


@pytest.mark.parametrize("user", ["", "a" * 65, "alice smith", "../etc", "al\nice", "älice", "a:b"])
def test_invalid_user_names_are_refused(path, user):
    with pytest.raises(InvalidArgument, match="user name"):
        TokenStore(path).add(user)
    assert not path.exists()


def test_valid_names_and_bad_limits(path):
    store = TokenStore(path)
    for user in ("a", "a" * 64, "a.smith@lab-1_x"):
        store.add(user)
    for limits in ({"max_streams": 0}, {"upload_bytes_per_minute": -1}, {"max_streams": True}):
        with pytest.raises(InvalidArgument):
            UserLimits(**limits)
    with pytest.raises(InvalidArgument, match="note"):
        store.add("a", note="two\nlines")


_ADD_MANY = """
import sys
from pathlib import Path
from slidesam.server.edge.tokens import TokenStore
store = TokenStore(Path(sys.argv[1]))
print("ready", flush=True)
sys.stdin.read()  # all start adding when the test closes stdin
for _ in range(int(sys.argv[2])):
    print(store.add(sys.argv[3])[0], flush=True)
"""


def test_concurrent_adds_from_processes_keep_every_record(path):
    per_process, users = 25, ["p0", "p1", "p2", "p3"]
    processes = [subprocess.Popen([sys.executable, "-c", _ADD_MANY, str(path), str(per_process), user], cwd=REPO,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for user in users]
    assert [process.stdout.readline() for process in processes] == ["ready\n"] * len(users)
    for process in processes:
        process.stdin.close()
    secrets_by_user = {user: process.stdout.read().split() for user, process in zip(users, processes)}
    assert all(process.wait(timeout=120) == 0 for process in processes)
    store = TokenStore(path)
    records = store.records()
    assert len(records) == len({r.token_id for r in records}) == per_process * len(users)
    for user, issued in secrets_by_user.items():
        assert len(issued) == per_process and all(store.authenticate(s).user == user for s in issued)


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="slidesam-server")
    add_token_commands(parser.add_subparsers(dest="command"))
    return run_tokens_command(parser.parse_args(list(argv)))


def test_cli_add_list_revoke(path, capsys):
    file = ["--tokens-file", str(path)]
    limits = ["--max-streams", "3", "--upload-mb-per-minute", "1.5"]
    assert _cli("tokens", "add", "judy", *limits, "--note", "scanner pc", *file) == 0
    out, err = capsys.readouterr()
    secret = out.strip()
    assert "not stored" in err and "judy" in err and secret not in err
    record = TokenStore(path).authenticate(secret)
    assert record.limits == UserLimits(3, 3 * 2**19) and record.note == "scanner pc"

    assert _cli("tokens", "list", *file) == 0
    listing = capsys.readouterr().out
    stored_hash = json.loads(path.read_text())["tokens"][0]["sha256"]
    assert record.token_id in listing and "judy" in listing and "active" in listing and "1.5 MiB" in listing
    assert "scanner pc" in listing and secret not in listing and stored_hash not in listing

    assert _cli("tokens", "revoke", record.token_id, *file) == 0
    assert f"revoked token {record.token_id} of judy" in capsys.readouterr().out
    assert TokenStore(path).authenticate(secret) is None
    assert _cli("tokens", "list", *file) == 0 and "revoked 20" in capsys.readouterr().out


def test_cli_errors_exit_1_with_a_message(path, capsys):
    file = ["--tokens-file", str(path)]
    assert _cli("tokens", "revoke", "nobody", *file) == 1
    assert "nobody" in capsys.readouterr().err
    assert _cli("tokens", "add", "bad name", *file) == 1
    assert "invalid user name" in capsys.readouterr().err
    assert _cli("tokens", "add", "kim", "--max-streams", "0", *file) == 1
    assert "max_streams" in capsys.readouterr().err
    path.parent.mkdir(exist_ok=True)
    path.write_text("[]")
    assert _cli("tokens", "list", *file) == 1
    assert str(path) in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        _cli("tokens", "add", "kim", "--upload-mb-per-minute", "nan", *file)
    assert exited.value.code == 2  # argparse's own usage error


def test_cli_default_file_and_help(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLIDESAM_TOKENS_FILE", str(tmp_path / "env.json"))
    assert _cli("tokens", "add", "leo") == 0
    assert (tmp_path / "env.json").exists()
    capsys.readouterr()
    for command in (["tokens", "--help"], ["tokens", "add", "--help"], ["tokens", "revoke", "--help"]):
        with pytest.raises(SystemExit) as exited:
            _cli(*command)
        assert exited.value.code == 0
    help_text = capsys.readouterr().out
    assert "SLIDESAM_TOKENS_FILE" in help_text and "not stored" in help_text and "USER_OR_ID" in help_text


def test_tokens_do_not_load_torch():
    code = "import sys, slidesam.server.edge.tokens; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True).stdout.strip() == "False"
