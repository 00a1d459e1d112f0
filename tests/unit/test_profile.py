"""`load_profile`: a valid profile loads; every mistake an admin can make is named with its field
and its fix; loading touches nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from etcdguard.core import errors, profile

pytestmark = pytest.mark.unit


def secrets(base: Path) -> dict[str, Path]:
    """The files a profile points at (their content does not matter to `load_profile`)."""
    files = {
        "kubeconfig": base / "secrets" / "kubeconfig",
        "identity_file": base / "secrets" / "id_ed25519",
        "known_hosts": base / "secrets" / "known_hosts",
        "credentials_file": base / "secrets" / "s3.env",
    }
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("placeholder\n", encoding="utf-8")
    return files


def profile_data(files: dict[str, Path], name: str = "prod-eu") -> dict[str, Any]:
    return {
        "name": name,
        "api": {"kubeconfig": str(files["kubeconfig"])},
        "ssh": {
            "user": "core",
            "identity_file": str(files["identity_file"]),
            "known_hosts": str(files["known_hosts"]),
        },
        "storage": {
            "endpoint_url": "http://127.0.0.1:9000",
            "region": "eu-west-1",
            "credentials_file": str(files["credentials_file"]),
            "snapshots": {
                "bucket": "acme-etcd-backups",
                "prefix": "etcd",
                "kms_key_id": "alias/etcd-backups",
            },
            "static_resources": {
                "bucket": "acme-etcd-keys",
                "prefix": "static",
                "kms_key_id": "alias/etcd-keys",
            },
            "compression": "zstd",
        },
        "window": {
            "timezone": "Europe/Berlin",
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "start": "01:00",
            "end": "04:00",
        },
        "retention": "default",
    }


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return secrets(tmp_path)


@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    directory = tmp_path / "profiles"
    directory.mkdir()
    return directory


def write(directory: Path, data: Any, *, cluster: str = "prod-eu") -> Path:
    path = directory / f"{cluster}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def refused(cluster: str, directory: Path) -> str:
    with pytest.raises(errors.ConfigError) as info:
        profile.load_profile(cluster, directory=directory)
    return str(info.value)


def snapshot_of(tree: Path) -> dict[str, tuple[int, float]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime) for p in sorted(tree.rglob("*"))}


def test_a_valid_profile_loads(files: dict[str, Path], profiles: Path) -> None:
    write(profiles, profile_data(files))

    loaded = profile.load_profile("prod-eu", directory=profiles)

    assert loaded.name == "prod-eu"
    assert loaded.api.kubeconfig == files["kubeconfig"]
    assert loaded.ssh.identity_file == files["identity_file"]
    assert loaded.storage.credentials_file == files["credentials_file"]
    assert loaded.storage.snapshots.kms_key_id == "alias/etcd-backups"
    assert loaded.storage.compression == "zstd"
    assert loaded.storage.part_size == 16 * 1024 * 1024
    assert loaded.window is not None
    assert loaded.window.describe() == "01:00-04:00 Europe/Berlin on mon,tue,wed,thu,fri"
    assert loaded.backup.min_cluster_age_hours == 24.0
    assert loaded.ssh.port == 22


def test_the_directory_defaults_to_etcdguard_profiles(
    files: dict[str, Path], profiles: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(profiles, profile_data(files))
    monkeypatch.setenv("ETCDGUARD_PROFILES", str(profiles))
    assert profile.profiles_dir() == profiles.resolve()
    assert profile.load_profile("prod-eu").name == "prod-eu"


def test_a_missing_profile_lists_the_known_ones(files: dict[str, Path], profiles: Path) -> None:
    write(profiles, profile_data(files, "dev"), cluster="dev")
    write(profiles, profile_data(files, "staging"), cluster="staging")

    message = refused("prod-eu", profiles)

    assert f"No profile for cluster 'prod-eu': {profiles / 'prod-eu.yaml'} does not exist" in message
    assert f"Known profiles in {profiles}: dev, staging." in message
    assert "Create the file or set ETCDGUARD_PROFILES." in message


def test_a_missing_directory_says_none_and_is_not_created(tmp_path: Path) -> None:
    absent = tmp_path / "nowhere"
    message = refused("prod-eu", absent)
    assert "Known profiles in" in message
    assert message.endswith("none. Create the file or set ETCDGUARD_PROFILES.")
    assert not absent.exists()


def test_a_bad_cluster_name_is_refused_before_any_file_is_read(profiles: Path) -> None:
    message = refused("../etc/passwd", profiles)
    assert message.startswith("Parameter cluster: Cluster name '../etc/passwd' is not a DNS-1123 label")


def test_a_name_mismatch_is_refused(files: dict[str, Path], profiles: Path) -> None:
    write(profiles, profile_data(files, "prod-us"), cluster="prod-eu")
    message = refused("prod-eu", profiles)
    assert "says name: 'prod-us' but is the file for 'prod-eu'; make them equal." in message


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ("api", "kubeconfig"),
        ("ssh", "identity_file"),
        ("ssh", "known_hosts"),
        ("storage", "credentials_file"),
    ],
)
def test_relative_paths_are_refused(files: dict[str, Path], profiles: Path, section: str, field: str) -> None:
    data = profile_data(files)
    data[section][field] = "secrets/some-file"
    write(profiles, data)

    message = refused("prod-eu", profiles)

    assert f"Profile {profiles / 'prod-eu.yaml'} is invalid; fix these fields:" in message
    assert (
        f"  {section}.{field}: Value error, 'secrets/some-file' is a relative path; give an absolute path"
        in message
    )


@pytest.mark.parametrize("size", [0, 4])
def test_part_size_below_5_mib_is_refused(files: dict[str, Path], profiles: Path, size: int) -> None:
    data = profile_data(files)
    data["storage"]["part_size_mib"] = size
    write(profiles, data)
    assert "storage.part_size_mib: Input should be greater than or equal to 5" in refused("prod-eu", profiles)


@pytest.mark.parametrize(
    ("snapshots", "static"),
    [
        ({"bucket": "acme-etcd", "prefix": "etcd"}, {"bucket": "acme-etcd", "prefix": "etcd"}),
        ({"bucket": "acme-etcd", "prefix": ""}, {"bucket": "acme-etcd", "prefix": "static"}),
        ({"bucket": "acme-etcd", "prefix": "etcd"}, {"bucket": "acme-etcd", "prefix": ""}),
        ({"bucket": "acme-etcd", "prefix": "etcd"}, {"bucket": "acme-etcd", "prefix": "etcd/static"}),
        ({"bucket": "acme-etcd", "prefix": "backups/etcd"}, {"bucket": "acme-etcd", "prefix": "backups"}),
    ],
)
def test_static_resources_must_not_share_the_snapshots_location(
    files: dict[str, Path], profiles: Path, snapshots: dict[str, str], static: dict[str, str]
) -> None:
    data = profile_data(files)
    data["storage"]["snapshots"] = snapshots
    data["storage"]["static_resources"] = static
    write(profiles, data)

    message = refused("prod-eu", profiles)

    assert (
        "storage: Value error, storage.static_resources must be stored apart from storage.snapshots"
        in message
    )
    assert "two non-empty prefixes neither of which contains the other" in message


def test_the_same_bucket_with_other_prefixes_is_allowed(files: dict[str, Path], profiles: Path) -> None:
    data = profile_data(files)
    data["storage"]["snapshots"] = {"bucket": "acme-etcd", "prefix": "snapshots"}
    data["storage"]["static_resources"] = {"bucket": "acme-etcd", "prefix": "keys"}
    write(profiles, data)
    assert profile.load_profile("prod-eu", directory=profiles).storage.static_resources.prefix == "keys"


def test_a_bad_window_timezone_is_refused(files: dict[str, Path], profiles: Path) -> None:
    data = profile_data(files)
    data["window"]["timezone"] = "Europe/Atlantis"
    write(profiles, data)
    message = refused("prod-eu", profiles)
    assert (
        "window.timezone: Value error, Time zone 'Europe/Atlantis' is not an IANA time zone name" in message
    )


def test_unknown_and_missing_fields_are_named(files: dict[str, Path], profiles: Path) -> None:
    data = profile_data(files)
    data["storage"]["bucket"] = "typo"
    del data["ssh"]["known_hosts"]
    write(profiles, data)
    message = refused("prod-eu", profiles)
    assert "  storage.bucket: Extra inputs are not permitted" in message
    assert "  ssh.known_hosts: Field required" in message


def test_files_that_do_not_exist_are_named(files: dict[str, Path], profiles: Path) -> None:
    write(profiles, profile_data(files))
    files["kubeconfig"].unlink()
    files["credentials_file"].unlink()

    message = refused("prod-eu", profiles)

    assert (
        f"names files that do not exist: api.kubeconfig ({files['kubeconfig']}), "
        f"storage.credentials_file ({files['credentials_file']}). Fix the paths or create the files."
    ) in message
    assert "ssh.identity_file" not in message


def test_a_directory_is_not_a_file(files: dict[str, Path], profiles: Path, tmp_path: Path) -> None:
    data = profile_data(files)
    data["ssh"]["known_hosts"] = str(tmp_path)
    write(profiles, data)
    assert f"ssh.known_hosts ({tmp_path})" in refused("prod-eu", profiles)


def test_invalid_yaml_is_refused(profiles: Path) -> None:
    (profiles / "prod-eu.yaml").write_text("name: prod-eu\napi: {kubeconfig: [unclosed\n", encoding="utf-8")
    message = refused("prod-eu", profiles)
    assert message.startswith(f"Profile {profiles / 'prod-eu.yaml'} is not valid YAML:")


@pytest.mark.parametrize("content", ["", "- a\n- b\n"])
def test_yaml_that_is_not_a_mapping_is_refused_at_the_top_level(profiles: Path, content: str) -> None:
    (profiles / "prod-eu.yaml").write_text(content, encoding="utf-8")
    assert "  (top level): Input should be a valid dictionary" in refused("prod-eu", profiles)


def test_loading_has_no_side_effects(files: dict[str, Path], profiles: Path, tmp_path: Path) -> None:
    write(profiles, profile_data(files))
    write(profiles, profile_data(files, "other"), cluster="broken")
    cwd_before = sorted(os.listdir(Path.cwd()))
    before = snapshot_of(tmp_path)

    profile.load_profile("prod-eu", directory=profiles)
    refused("broken", profiles)
    refused("absent", profiles)

    assert snapshot_of(tmp_path) == before
    assert sorted(os.listdir(Path.cwd())) == cwd_before
