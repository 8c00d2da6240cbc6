"""`spectok app`: the Streamlit command it runs, and its refusals."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spectok_core.cli import app_launch, build_parser, main

from .helpers import APP


def test_app_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPECTOK_INDEX", raising=False)
    monkeypatch.setenv("SPECTOK_MAX_UPLOAD_MB", "200")
    args = build_parser().parse_args(["app", "--port", "8765", "--headless", "--model", "m"])
    command, env, folder = app_launch(args)
    assert command[:5] == [sys.executable, "-m", "streamlit", "run", str(APP / "Home.py")]
    flags = dict(zip(command[5::2], command[6::2]))
    assert flags["--server.port"] == "8765"
    assert flags["--server.maxUploadSize"] == "200"
    assert flags["--server.headless"] == "true"
    assert flags["--browser.gatherUsageStats"] == "false"
    assert folder == APP and (APP / ".streamlit" / "config.toml").is_file()
    assert env["SPECTOK_MODEL"] == str(tmp_path / "m")  # absolute: the app runs from app/
    assert "SPECTOK_INDEX" not in env
    assert str(APP.parent) in env["PYTHONPATH"].split(":")


def test_app_refuses_a_bad_port(capsys):
    assert main(["app", "--port", "70000"]) == 1
    assert "not a TCP port" in capsys.readouterr().err


def test_upload_limit_follows_the_environment(monkeypatch):
    monkeypatch.setenv("SPECTOK_MAX_UPLOAD_MB", "50")
    args = argparse.Namespace(port=1, headless=False, address=None, model=None, index=None)
    command, _, _ = app_launch(args)
    assert command[command.index("--server.maxUploadSize") + 1] == "50"
    assert "--server.headless" not in command


def test_streamlit_config_limits_uploads_to_200_mb():
    text = Path(APP / ".streamlit" / "config.toml").read_text()
    assert "maxUploadSize = 200" in text and "gatherUsageStats = false" in text


def test_app_listens_on_localhost_without_error_details(caplog):
    args = build_parser().parse_args(["app", "--headless"])
    with caplog.at_level("WARNING", logger="spectok.app"):
        command, _, _ = app_launch(args)
    flags = dict(zip(command[5::2], command[6::2]))
    assert flags["--server.address"] == "127.0.0.1"
    assert flags["--client.showErrorDetails"] == "false"
    assert not caplog.records
    import tomllib

    config = tomllib.loads(Path(APP / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["client"]["showErrorDetails"] is False


def test_app_address_opens_it_up_with_a_warning(caplog):
    args = build_parser().parse_args(["app", "--headless", "--address", "0.0.0.0"])
    with caplog.at_level("WARNING", logger="spectok.app"):
        command, _, _ = app_launch(args)
    assert command[command.index("--server.address") + 1] == "0.0.0.0"
    assert any("0.0.0.0" in r.getMessage() and "no login" in r.getMessage() for r in caplog.records)
