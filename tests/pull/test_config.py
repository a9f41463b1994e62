"""PULL_PROVIDERS: YAML and TOML files, checked whole at start-up; a bad entry stops
start-up (exit 2) with a message naming it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import yaml

from pull.config import ProviderError, load_providers
from tests.e2e import ROOT

SERVICES = ("testareno", "assets")
HOST_KEY = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()


def good(**overrides: Any) -> dict[str, Any]:
    entry = {"host": "sftp.example.org", "user": "gw", "password": "pw", "host_key": HOST_KEY,
             "service": "testareno", "category": "reports"}
    entry.update(overrides)
    return {k: v for k, v in entry.items() if v is not None}


def load(tmp_path: Path, providers: Any, env: dict[str, str] | None = None) -> Any:
    path = tmp_path / "providers.yaml"
    path.write_text(yaml.safe_dump({"providers": providers}))
    return load_providers(path, SERVICES, env or {})


def error(tmp_path: Path, providers: Any, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ProviderError) as caught:
        load(tmp_path, providers, env)
    return str(caught.value)


def test_yaml_and_toml(tmp_path: Path) -> None:
    gpg_home = tmp_path / "gnupg"
    gpg_home.mkdir()
    (tmp_path / "pw").write_text("from-a-file\n")
    loaded = load(tmp_path, {"acme": good(password=None, password_file=str(tmp_path / "pw"),
                                          steps=["decrypt", "gunzip"], gpg_home=str(gpg_home),
                                          gpg_passphrase_env="GPG_PW", schedule="15m",
                                          pattern=["*.csv.gz.gpg", "*.CSV"], recursive=True,
                                          completion="move", move_to="done")},
                  {"GPG_PW": "from-a-variable"})
    acme = loaded["acme"]
    assert (acme.password, acme.gpg_passphrase, acme.schedule) == (
        "from-a-file", "from-a-variable", 900.0)
    assert acme.matches("sub/x.csv") and acme.matches("y.csv.gz.gpg") and not acme.matches("z.txt")
    assert "from-a-file" not in repr(acme) and "from-a-variable" not in repr(acme)
    assert "from-a-file" not in repr(acme.public())
    toml = tmp_path / "providers.toml"
    toml.write_text(f'[providers.beta]\nhost = "h"\nuser = "u"\npassword = "p"\n'
                    f'host_key = "{HOST_KEY}"\nservice = "assets"\ncategory = "obj"\n'
                    f'schedule = 60\nconcurrency = 2\n')
    beta = load_providers(toml, SERVICES, {})["beta"]
    assert (beta.service, beta.schedule, beta.concurrency, beta.port) == ("assets", 60.0, 2, 22)
    assert (acme.concurrency, acme.large_concurrency) == (32, 4)  # the defaults


@pytest.mark.parametrize(("entry", "says"), [
    (good(colour="blue"), "unknown setting 'colour'"),
    (good(host=None), "host is required"),
    (good(port=70000), "port must be an integer from 1 to 65535"),
    (good(service="nope"), "service 'nope' is not in VALID_UPLOAD_TYPES"),
    (good(category="a b"), "category"),
    (good(host_key=None), "unknown host keys are refused"),
    (good(host_key="ssh-ed25519 garbage"), "host_key is not an OpenSSH public key"),
    (good(password=None), "give exactly one of password"),
    (good(private_key="/nonexistent/key"), "private_key: /nonexistent/key is not a file"),
    (good(password_env="NOT_SET_ANYWHERE"), "give at most one of password"),
    (good(password=None, password_env="NOT_SET_ANYWHERE"), "the variable NOT_SET_ANYWHERE"),
    (good(steps=["decrypt"]), "give gpg_home"),
    (good(steps=["explode"]), "unknown step 'explode'"),
    (good(completion="move"), "completion move needs move_to"),
    (good(completion="shred"), "completion must be one of leave, move, delete"),
    (good(schedule="soon"), "schedule must be a positive duration"),
    (good(schedule=0), "schedule must be a positive duration"),
    (good(concurrency=0), "concurrency must be an integer from 1 to 64"),
    (good(large_concurrency=65), "large_concurrency must be an integer from 1 to 64"),
    (good(recursive="yes"), "recursive must be true or false"),
    (good(pattern=[]), "pattern must be a glob"),
    ("just a string", "expected a table of settings"),
])
def test_a_bad_entry_is_named(tmp_path: Path, entry: Any, says: str) -> None:
    message = error(tmp_path, {"fine": good(), "broken": entry})
    assert "provider 'broken'" in message and says in message, message


def test_bad_files(tmp_path: Path) -> None:
    assert "expected a table 'providers'" in error(tmp_path, {})
    assert "a provider name is" in error(tmp_path, {"Bad Name": good()})
    assert "a provider name is" in error(tmp_path, {"jobs": good()})
    path = tmp_path / "broken.yaml"
    path.write_text("providers: [unclosed")
    with pytest.raises(ProviderError, match="is not valid YAML"):
        load_providers(path, SERVICES, {})
    with pytest.raises(ProviderError, match="cannot read"):
        load_providers(tmp_path / "missing.yaml", SERVICES, {})


def run_app(role: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "app.py"), role], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_start_up_stops_on_a_bad_entry(tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(yaml.safe_dump({"providers": {"acme": good(port="22x")}}))
    env = {"WORKDIR": str(tmp_path / "work"), "PULL_PROVIDERS": str(path)}
    for role in ("puller", "all"):
        done = run_app(role, env)
        assert done.returncode == 2
        assert "provider 'acme': port must be" in done.stderr, done.stderr
    done = run_app("puller", {"WORKDIR": str(tmp_path / "work"), "PULL_PROVIDERS": ""})
    assert done.returncode == 2 and "role puller needs PULL_PROVIDERS" in done.stderr


def test_the_example_file_loads_once_its_paths_exist(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "pull" / "providers.example.yaml").read_text())
    acme = data["providers"]["acme"]
    (tmp_path / "gnupg").mkdir()
    (tmp_path / "gpg").write_text("passphrase\n")
    acme.update(gpg_home=str(tmp_path / "gnupg"), gpg_passphrase_file=str(tmp_path / "gpg"))
    loaded = load(tmp_path, data["providers"], {"ACME_SFTP_PASSWORD": "pw"})["acme"]
    assert (loaded.steps, loaded.completion, loaded.schedule) == (
        frozenset({"decrypt", "gunzip"}), "move", 900.0)
