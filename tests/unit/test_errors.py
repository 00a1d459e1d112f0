"""The error hierarchy, retry classification, pickling, and redaction of remote text."""

from __future__ import annotations

import pickle
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etcdguard.core import errors

pytestmark = pytest.mark.unit

PERMANENT = [
    errors.ConfigError,
    errors.PreflightRefused,
    errors.IntegrityError,
    errors.NotFoundError,
    errors.VersionMismatch,
    errors.ApprovalRejected,
]


@pytest.mark.parametrize("cls", PERMANENT)
def test_permanent_errors_are_not_retried(cls: type[errors.EtcdguardError]) -> None:
    exc = cls("The thing failed; fix it.")
    assert isinstance(exc, errors.PermanentError)
    assert isinstance(exc, errors.EtcdguardError)
    assert not is_transient_type(cls)
    assert not errors.is_transient(exc)
    assert str(exc) == exc.message == "The thing failed; fix it."


def is_transient_type(cls: type[BaseException]) -> bool:
    return issubclass(cls, errors.TransientError)


def test_transient_error_is_retried() -> None:
    assert errors.is_transient(errors.TransientError("The API server at https://api:6443 timed out."))
    assert not issubclass(errors.TransientError, errors.PermanentError)


def test_untranslated_exceptions_are_not_retried() -> None:
    assert not errors.is_transient(TimeoutError("raw"))
    assert not errors.is_transient(ConnectionResetError("raw"))
    assert not errors.is_transient(errors.EtcdguardError("neither transient nor permanent"))


def test_exception_groups_are_retried_only_when_every_member_is_transient() -> None:
    transient = errors.TransientError("S3 answered 503 Slow Down.")
    permanent = errors.NotFoundError("No backup exists.")
    assert errors.is_transient(ExceptionGroup("all", [transient, transient]))
    assert not errors.is_transient(ExceptionGroup("mixed", [transient, permanent]))
    nested = ExceptionGroup("outer", [transient, ExceptionGroup("inner", [transient])])
    assert errors.is_transient(nested)


def test_remote_command_failed_carries_exit_code_and_safe_output() -> None:
    output = "x" * 3000 + "\npassword=hunter2hunter2\nError: unhealthy cluster\n"
    exc = errors.RemoteCommandFailed(
        "cluster-backup.sh failed on master-0; see its output.", exit_code=2, output=output
    )
    assert exc.exit_code == 2
    assert "hunter2hunter2" not in str(exc)
    assert "Error: unhealthy cluster" in exc.output
    assert len(exc.output) <= 500
    assert str(exc).startswith("cluster-backup.sh failed on master-0; see its output. Exit code 2.")
    assert exc.message == "cluster-backup.sh failed on master-0; see its output."
    assert isinstance(exc, errors.PermanentError)


def test_remote_command_failed_without_output_says_only_the_exit_code() -> None:
    exc = errors.RemoteCommandFailed("crictl ps failed on master-1.", exit_code=127, output=b"")
    assert str(exc) == "crictl ps failed on master-1. Exit code 127."


@pytest.mark.parametrize("cls", [errors.TransientError, errors.PermanentError, *PERMANENT])
def test_errors_survive_pickling(cls: type[errors.EtcdguardError]) -> None:
    exc = cls("A full sentence naming 4.8.12.")
    copy = pickle.loads(pickle.dumps(exc))  # noqa: S301 (our own bytes)
    assert type(copy) is cls
    assert str(copy) == str(exc)
    assert copy.message == exc.message


def test_remote_command_failed_survives_pickling_with_its_fields() -> None:
    exc = errors.RemoteCommandFailed("It failed.", exit_code=1, output="token: abc\nboom")
    copy = pickle.loads(pickle.dumps(exc))  # noqa: S301 (our own bytes)
    assert type(copy) is errors.RemoteCommandFailed
    assert (copy.exit_code, copy.output, copy.message, str(copy)) == (
        1,
        "token: [REDACTED]\nboom",
        "It failed.",
        str(exc),
    )


PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAq8N2mXv0yJ3kKpGd0C9pQGJ2x8nQb9rKzX3sE4Yt2vPq1mZs\n"
    "-----END RSA PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"before\n{PEM}\nafter", "MIIEowIBAAKCAQEAq8N2mXv0yJ3kKpGd0C9pQGJ2x8nQb9rKzX3sE4Yt2vPq1mZs"),
        ("-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0B", "MIIDdzCCAl+gAwIB"),
        ("client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQpNSUlF", "LS0tLS1CRUdJTiBSU0Eg"),
        ("password=s3cr3tPassw0rd other", "s3cr3tPassw0rd"),
        ('{"token": "eyabcdefghijklmn", "ok": true}', "eyabcdefghijklmn"),
        ("token: sometokenvalue123\n", "sometokenvalue123"),
        ("Authorization: Bearer abc.def-ghi_jkl\n", "abc.def-ghi_jkl"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI"),
        ("secret is wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY here", "wJalrXUtnFEMI/K7MDENG"),
        ("AWS_ACCESS_KEY_ID AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
        ("HTTPS_PROXY=http://proxyuser:pr0xyPass@proxy.example.com:3128", "pr0xyPass"),
        ("oc login --token sha256~AbCdEfGhIjKlMnOpQrStUv", "AbCdEfGhIjKlMnOpQrStUv"),
        ("etcdctl --password hunter2isnotsafe get /", "hunter2isnotsafe"),
        ("jwt eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl end", "eyJzdWIiOiJ4In0"),
        ("DB_PASSWORD: 'quoted secret value'", "quoted secret value"),
    ],
)
def test_secrets_are_redacted(text: str, secret: str) -> None:
    out = errors.truncate_remote(text)
    assert secret not in out
    assert "[REDACTED" in out


def test_redaction_keeps_ordinary_output() -> None:
    text = (
        '{"hash":3866667823,"revision":31407,"totalKey":12828,"totalSize":114446336}\n'
        "found latest kube-apiserver: /etc/kubernetes/static-pod-resources/kube-apiserver-pod-7\n"
        "commit 3f786850e387550fdab836ed7e6dc881de23001b\n"
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n"
        "Error: unhealthy cluster\tetcd exit 1"
    )
    assert errors.truncate_remote(text, limit=2000) == text


def test_control_characters_are_neutralised_but_newlines_and_tabs_kept() -> None:
    assert errors.truncate_remote("\x1b[31mred\x1b[0m\n\tok\x00") == "?[31mred?[0m\n\tok?"


def test_bytes_are_decoded_with_replacement() -> None:
    assert errors.truncate_remote(b"ok \xff done") == "ok \ufffd done"


def test_long_text_keeps_head_and_tail_within_limit() -> None:
    text = "HEAD" + "m" * 5000 + "TAIL"
    out = errors.truncate_remote(text, limit=120)
    assert len(out) == 120
    assert out.startswith("HEAD")
    assert out.endswith("TAIL")
    kept = len(out) - len(out[out.index("\n") : out.rindex("\n") + 1])
    assert f"[{len(text) - kept:,} characters cut]" in out


def test_too_small_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit=10"):
        errors.truncate_remote("abc", limit=10)


def test_redaction_is_linear_on_large_unbroken_blobs() -> None:
    blob = ("Ab0/" * 500_000) + " token"  # 2 MB without whitespace
    started = time.perf_counter()
    out = errors.truncate_remote(blob)
    assert time.perf_counter() - started < 5
    assert len(out) <= 500


@given(text=st.text(max_size=3000), limit=st.integers(min_value=80, max_value=1000))
def test_output_never_exceeds_limit(text: str, limit: int) -> None:
    assert len(errors.truncate_remote(text, limit=limit)) <= limit


NOISE = st.text(alphabet="abcdefgh \n:.,", max_size=40)
SECRET = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=12, max_size=60)
CONTEXTS = st.sampled_from(
    [
        "password={}",
        "PASSWORD: {}",
        '"token": "{}"',
        "api_key={}",
        "x-auth-token:{}",
        "Bearer {}",
        "https://admin:{}@proxy:3128",
        "--token {}",
        "client_secret = {}",
    ]
)


@given(before=NOISE, after=NOISE, context=CONTEXTS, secret=SECRET)
def test_embedded_secrets_never_survive(before: str, after: str, context: str, secret: str) -> None:
    text = before + " " + context.format(secret) + " " + after
    assert secret not in errors.truncate_remote(text, limit=10_000)
