"""The one `Config`: its defaults are the layers' own, and every setting out of range is
refused with a message naming the ``triosip run`` option to fix."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trustme

from triosip.cli import build_config, build_parser
from triosip.config import Config, ConfigError
from triosip.mi import MIConfig
from triosip.proxy import ProxyConfig
from triosip.transaction import LoadLimits, TimerConfig
from triosip.transport import Address, TransportLimits

if TYPE_CHECKING:
    from pathlib import Path

# Valid for the parser; --db given so that no default data folder is created.
ARGV = ["run", "--db", "sqlite:///unused.db"]


def config_of(*argv: str) -> Config:
    return build_config(build_parser().parse_args([*ARGV, *argv]))


def test_the_defaults_are_the_layers_own() -> None:
    config = Config()
    assert config.proxy == ProxyConfig()
    assert config.timers == TimerConfig()
    assert config.load == LoadLimits()
    assert config.transport == TransportLimits()
    assert (config.mi, config.db_url, config.grace) == (None, None, 10.0)


def test_the_command_line_s_defaults_are_the_config_s() -> None:
    config = config_of()
    defaults = Config()
    for name in (
        "listen",
        "routes_file",
        "fr_timeout",
        "fr_inv_timeout",
        "t1",
        "t2",
        "t4",
        "max_transactions",
        "pike",
        "reply_to_via",
        "rest_connections",
        "max_launched",
        "grace",
        "log_level",
        "log_target",
        "log_format",
        "advertise",
        "aliases",
        "freeze_gc",
    ):
        assert getattr(config, name) == getattr(defaults, name), name
    assert config.db_url == "sqlite:///unused.db"
    assert config.mi == MIConfig()  # the command line's MI is on, on 127.0.0.1:8888


def test_the_command_line_sets_each_setting() -> None:
    config = config_of(
        "--fr-timeout", "2", "--fr-inv-timeout", "3", "--t1", "0.1", "--t2", "1", "--t4", "2",
        "--max-transactions", "7", "--pike", "50", "--reply-to-via", "--rest-connections", "3",
        "--max-launched", "4", "--grace", "0", "--mi", "off", "--define", "a=b",
        "--listen", "udp:127.0.0.1:5070", "--log-level", "DEBUG", "r.py",
    )  # fmt: skip
    assert config.proxy == ProxyConfig(fr_timeout=2.0, fr_inv_timeout=3.0)
    assert config.timers == TimerConfig(t1=0.1, t2=1.0, t4=2.0)
    assert config.load == LoadLimits(max_transactions=7, pike_rate=50.0)
    assert config.transport.reply_to_via is True
    assert (config.rest_connections, config.max_launched, config.grace) == (3, 4, 0.0)
    assert (config.mi, dict(config.params), config.routes_file) == (None, {"a": "b"}, "r.py")
    assert [str(address) for address in config.listen] == ["udp:127.0.0.1:5070"]
    assert config.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--fr-timeout", "-1"], "--fr-timeout must be a number of seconds > 0, not -1"),
        (["--fr-timeout", "inf"], "--fr-timeout must be a number of seconds > 0, not inf"),
        (["--fr-inv-timeout", "0"], "--fr-inv-timeout must be a number of seconds > 0, not 0"),
        (["--t1", "nan"], "--t1 must be a number of seconds > 0, not nan"),
        (["--t2", "0"], "--t2 must be a number of seconds > 0, not 0"),
        (["--t4", "-2"], "--t4 must be a number of seconds > 0, not -2"),
        (["--t1", "5"], "--t1 must be at most --t2 (4), not 5"),
        (["--grace", "-5"], "--grace must be a number of seconds >= 0, not -5"),
        (["--grace", "inf"], "--grace must be a number of seconds >= 0, not inf"),
        (["--rest-connections", "0"], "--rest-connections must be at least 1, not 0"),
        (["--max-launched", "-1"], "--max-launched must be at least 1, not -1"),
        (["--max-transactions", "0"], "--max-transactions must be at least 1, not 0"),
        (["--pike", "0"], "--pike must be a number of requests per second > 0, not 0"),
        (["--db", "mysql://x"], "--db: database URL 'mysql://x': 'mysql' is not supported"),
        (["--db", "postgres://x"], "--db: database URL 'postgres://x' names no database"),
        (["--listen", "udp:0.0.0.0:5060", "--advertise", "a b"], "--advertise 'a b': 'a b' is"),
        (["--alias", "h:99999"], "--alias 'h:99999': the port must be a number 1-65535"),
    ],
)
def test_a_setting_out_of_range_names_its_option(argv: list[str], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_of(*argv)
    assert str(caught.value).startswith(says)


def test_a_rest_ca_file_is_checked_at_start(tmp_path: Path) -> None:
    good = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(good))
    assert config_of("--rest-ca-file", str(good)).rest_ca_file == str(good)
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    for name in ("missing.pem", "bad.pem"):
        with pytest.raises(ConfigError) as caught:
            config_of("--rest-ca-file", str(tmp_path / name))
        assert str(caught.value).startswith(f"--rest-ca-file {tmp_path / name}: ")


def test_a_config_needs_somewhere_to_listen() -> None:
    with pytest.raises(ConfigError, match="--listen: give at least one address"):
        Config(listen=())


def test_an_unknown_log_level_is_refused() -> None:
    with pytest.raises(ConfigError, match="--log-level must be one of DEBUG, INFO"):
        Config(log_level="LOUD")


def test_levels_are_taken_in_any_case() -> None:
    # This used to refuse "debug": only the capitals were choices.
    assert config_of("--log-level", "debug").log_level == "DEBUG"
    assert Config(log_level="warning").log_level == "warning"  # set up as WARNING


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ConfigError, match="--log-format must be one of text, json, not xml"):
        Config(log_format="xml")


def test_advertise_names_a_listen_address() -> None:
    with pytest.raises(ConfigError, match=r"--advertise h: tcp:127.0.0.1:5060 is not a --listen"):
        Config(
            listen=(Address("udp", "127.0.0.1", 5060),),
            advertise={Address("tcp", "127.0.0.1", 5060): "h"},
        )
