"""The operator's config file and flags: what is accepted, and a clear error for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from scorer.config import ServiceConfig, load_config


def _load(tmp_path: Path, text: str, **overrides: object) -> ServiceConfig:
    path = tmp_path / "scorer.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, **overrides)


def test_no_file_gives_the_defaults() -> None:
    assert load_config(None) == ServiceConfig(state_dir=load_config(None).state_dir)


def test_sizes_are_parsed_and_flags_win_over_the_file(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        'listen = "0.0.0.0:1"\nupload_max_bytes = "2g"\nupload_idle_timeout_s = 5\n'
        '[sandbox]\ntmp_bytes = "512m"\npids = 64\n',
        listen="127.0.0.1:2",
        cpu_slots=None,  # a flag left out does not override
    )
    assert config.listen == "127.0.0.1:2"
    assert config.upload_max_bytes == 2 * 1024**3
    assert config.upload_idle_timeout_s == 5
    assert (config.sandbox.tmp_bytes, config.sandbox.pids) == (512 * 1024**2, 64)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("listne = 1\n", "unknown config keys: listne"),
        ("[sandbox]\npid = 1\n", "unknown [sandbox] keys: pid"),
        ('runtime = "kata"\n', "runtime must be runc or runsc"),
        ('gpu_mode = "magic"\n', "gpu_mode must be devices or toolkit"),
        ("cpu_slots = 0\n", "cpu_slots must be at least 1"),
        ('upload_max_bytes = "1k"\n', "must be at least 1m"),
        ('image_max_uncompressed_bytes = "12 parsecs"\n', "invalid size"),
        ("image_max_layers = 0\n", "image_max_layers must be at least 1"),
        ("upload_idle_timeout_s = 0\n", "upload_idle_timeout_s must be positive"),
        ("max_attempts = 0\n", "max_attempts must be at least 1"),
        ("gpus = [0, 0]\n", "gpus must list distinct GPU indices"),
        ("this is not toml\n", "cannot read config"),
        ('cpu_slots = "two"\n', "cpu_slots must be an integer, not 'two'"),
        ("self_test = 1\n", "self_test must be true or false"),
        ("listen = 50051\n", "listen must be a string"),
        ('upload_idle_timeout_s = "soon"\n', "upload_idle_timeout_s must be a number"),
        ('gpus = "all"\n', "gpus must be a list of GPU indices"),
        ('[sandbox]\npids = "many"\n', "[sandbox] pids must be a positive integer"),
        ('[sandbox]\ntmp_bytes = "lots"\n', "[sandbox] tmp_bytes: invalid size"),
        ("[sandbox]\nshm_bytes = true\n", "[sandbox] shm_bytes: a size must be"),
    ],
)
def test_a_bad_setting_is_refused_with_its_name(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ValueError) as info:
        _load(tmp_path, text)
    assert expected in str(info.value)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")


def test_the_example_config_in_deploy_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "scorer.toml"
    config = load_config(example)
    assert config.state_dir == Path("/var/lib/scorer")
    assert config.image_store_bytes == 100 * 1024**3
