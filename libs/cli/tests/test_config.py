"""The CLI's contexts file: owner-only, atomic, several clusters, migration of the single-cluster file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from pai_cli.client import PaiClient
from pai_cli.config import DEFAULT_URL, ConfigError, forget_token, load_config, read_file, save_config


@pytest.fixture
def path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("PAI_URL", "PAI_TOKEN", "PAI_USER", "PAI_CONTEXT"):
        monkeypatch.delenv(name, raising=False)
    target = tmp_path / "conf" / "cli.json"
    monkeypatch.setenv("PAI_CLI_CONFIG", str(target))
    return target


def test_save_writes_an_owner_only_file_that_load_reads(path: Path) -> None:
    written = save_config("http://pai.test:9186/", "alice", "tok-1")
    assert written == path and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "version": 2,
        "current": "default",
        "contexts": {"default": {"url": "http://pai.test:9186", "username": "alice", "token": "tok-1"}},
    }
    config = load_config()
    assert (config.url, config.username, config.token, config.context) == (
        "http://pai.test:9186",
        "alice",
        "tok-1",
        "default",
    )
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind


def test_an_existing_readable_file_is_tightened(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    path.chmod(0o644)
    save_config("http://x", "bob", "tok")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_single_cluster_file_becomes_the_default_context(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"url": "http://old:9186/", "username": "alice", "token": "old-token"}))
    config = load_config()
    assert (config.url, config.username, config.token, config.context) == (
        "http://old:9186",
        "alice",
        "old-token",
        "default",
    )
    assert read_file().migrated
    save_config("http://new:9186", "bob", "new-token")  # another cluster: a second context
    data = json.loads(path.read_text())
    assert data["version"] == 2 and set(data["contexts"]) == {"default", "new:9186"}
    assert data["contexts"]["default"]["token"] == "old-token" and data["current"] == "new:9186"


def test_logins_to_the_same_url_update_its_context(path: Path) -> None:
    save_config("http://a", "alice", "t1")
    save_config("http://b", "bob", "t2")
    save_config("http://a", "alice", "t3")
    file = read_file()
    assert {c.name: c.token for c in file.contexts.values()} == {"default": "t3", "b": "t2"}
    assert file.current == "default"
    assert load_config(context="b").username == "bob"
    forget_token("b")
    assert load_config(context="b").token is None and load_config(context="b").url == "http://b"


def test_context_choice_and_environment(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_config("http://a", "alice", "t1", context="lab")
    save_config("http://b", "bob", "t2", context="prod")
    assert load_config().context == "prod"
    monkeypatch.setenv("PAI_CONTEXT", "lab")
    assert load_config().username == "alice"
    monkeypatch.setenv("PAI_URL", "http://from-env")
    monkeypatch.setenv("PAI_TOKEN", "env-token")
    config = load_config()
    assert (config.url, config.username, config.token) == ("http://from-env", "alice", "env-token")
    with pytest.raises(ConfigError, match="no context named 'nope'; known: lab, prod"):
        load_config(context="nope")


def test_missing_or_damaged_file_gives_defaults(path: Path) -> None:
    assert (load_config().url, load_config().token, load_config().context) == (DEFAULT_URL, None, None)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert load_config().token is None


@pytest.mark.parametrize(("url", "name"), [("ftp://x", "ok"), ("http://x", "bad name"), ("x", "ok")])
def test_bad_urls_and_names_are_refused(path: Path, url: str, name: str) -> None:
    with pytest.raises(ConfigError):
        save_config(url, "alice", "t", context=name)


def test_from_config_builds_a_client_of_the_current_context(path: Path) -> None:
    save_config("http://pai.test", "alice", "tok-1")
    with PaiClient.from_config() as client:
        assert (client.base_url, client.username, client.token) == ("http://pai.test", "alice", "tok-1")
