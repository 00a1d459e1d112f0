"""The profile's optional `cloud:`, `shutdown:` and `external_dependencies` sections (graceful
shutdown and restart): defaults, validation, and the cloud credentials file checked like the others."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from etcdguard.core import errors, profile
from tests.unit.test_profile import profile_data, secrets

pytestmark = pytest.mark.unit


def _write(tmp_path: Path, **extra: object) -> Path:
    data = {**profile_data(secrets(tmp_path)), **extra}
    directory = tmp_path / "profiles"
    directory.mkdir(exist_ok=True)
    (directory / "prod-eu.yaml").write_text(yaml.safe_dump(data))
    return directory


def test_sections_are_optional_with_documented_defaults(tmp_path: Path) -> None:
    loaded = profile.load_profile("prod-eu", directory=_write(tmp_path))
    assert loaded.cloud is None
    assert loaded.shutdown.min_cert_margin_days == 30.0
    assert loaded.external_dependencies == ()


def test_sections_load(tmp_path: Path) -> None:
    creds = tmp_path / "secrets" / "s3.env"
    directory = _write(
        tmp_path,
        cloud={
            "endpoint_url": "http://127.0.0.1:5000",
            "region": "eu-west-1",
            "credentials_file": str(creds),
        },
        shutdown={"min_cert_margin_days": 7},
        external_dependencies=["NetApp ONTAP", "LDAP"],
    )
    loaded = profile.load_profile("prod-eu", directory=directory)
    assert loaded.cloud == profile.CloudSettings(
        endpoint_url="http://127.0.0.1:5000", region="eu-west-1", credentials_file=creds
    )
    assert loaded.shutdown.min_cert_margin_days == 7
    assert loaded.external_dependencies == ("NetApp ONTAP", "LDAP")


def test_missing_cloud_credentials_file_and_bad_fields_are_named(tmp_path: Path) -> None:
    directory = _write(tmp_path, cloud={"credentials_file": str(tmp_path / "nope.env")})
    with pytest.raises(errors.ConfigError, match=r"cloud\.credentials_file \(.*nope\.env\)"):
        profile.load_profile("prod-eu", directory=directory)
    directory = _write(
        tmp_path, cloud={"region": "eu-west-1", "zone": "a"}, shutdown={"min_cert_margin_days": -1}
    )
    with pytest.raises(errors.ConfigError) as exc:
        profile.load_profile("prod-eu", directory=directory)
    assert "cloud.zone: Extra inputs are not permitted" in str(exc.value)
    assert "shutdown.min_cert_margin_days: Input should be greater than or equal to 0" in str(exc.value)
