"""Control-plane hosts over SSH: one small facade over `fabric` (paramiko underneath).

Host keys are always verified against the profile's known_hosts file; an unknown or changed key
is refused (`PermanentError`), never added. Commands that need root run with `sudo`, as the guide
does as `core`. Files owned by root are streamed through `sudo cat` on an exec channel, so a
multi-GiB snapshot passes through in chunks and never lands on the worker's disk.

Errors: refused/reset/timed-out connections -> `TransientError`; host key or authentication
problems -> `PermanentError`; a command's non-zero exit -> `RemoteCommandFailed` (output
truncated and redacted).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import fabric
import paramiko

from etcdguard.core import errors
from etcdguard.core.profile import SshAccess

__all__ = ["CommandResult", "HostSession"]

_CHUNK = 1024 * 1024
_WINDOW = 16 * 1024 * 1024
# AES-GCM first (paramiko's own order starts with AES-CTR + HMAC-SHA2): an AEAD cipher
# authenticates while it decrypts, which saves a separate HMAC-SHA256 pass over every byte read,
# about a third of the CPU a snapshot stream costs (bench/backup_throughput). Every cipher
# paramiko offers stays in the list after these, so hosts without GCM still connect.
_PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _transport(sock: Any, **kwargs: Any) -> paramiko.Transport:
    """paramiko's Transport with `_PREFERRED_CIPHERS` moved to the front of the cipher list."""
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    offered = tuple(options.ciphers)
    first = tuple(c for c in _PREFERRED_CIPHERS if c in offered)
    options.ciphers = first + tuple(c for c in offered if c not in first)
    return transport


class CommandResult:
    def __init__(self, *, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr


class HostSession:
    """An SSH session to one control-plane host. Use as a context manager."""

    def __init__(self, access: SshAccess, *, address: str, node: str) -> None:
        self.node = node
        self.address = address
        self._access = access
        self._conn = fabric.Connection(
            host=address,
            user=access.user,
            port=access.port,
            connect_timeout=access.connect_timeout,
            connect_kwargs={
                "key_filename": [str(access.identity_file)],
                "look_for_keys": False,
                "allow_agent": False,
                "banner_timeout": access.connect_timeout,
                "auth_timeout": access.connect_timeout,
                "transport_factory": _transport,
            },
        )
        ssh = self._conn.client
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        ssh.get_host_keys().clear()
        ssh.load_host_keys(str(access.known_hosts))

    def __enter__(self) -> HostSession:
        with self._translate("Connecting"):
            self._conn.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()

    @contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        where = f"{what} to {self.node} ({self._access.user}@{self.address}:{self._access.port})"
        try:
            yield
        except errors.EtcdguardError:
            raise
        except paramiko.BadHostKeyException as exc:
            raise errors.PermanentError(
                f"{where}: the host key differs from the one in {self._access.known_hosts}. Someone may be "
                "intercepting the connection, or the host was reinstalled; verify the new key out of band "
                "and update known_hosts."
            ) from exc
        except paramiko.AuthenticationException as exc:
            raise errors.PermanentError(
                f"{where}: authentication failed with {self._access.identity_file}; check ssh.user and "
                "ssh.identity_file in the profile."
            ) from exc
        except paramiko.SSHException as exc:
            text = str(exc)
            if "not found in known_hosts" in text:
                raise errors.PermanentError(
                    f"{where}: the host's key is not in {self._access.known_hosts}; add it after verifying "
                    "it out of band (etcdguard never trusts a key on first use)."
                ) from exc
            raise errors.TransientError(
                f"{where}: SSH failed ({errors.truncate_remote(text, limit=200)})."
            ) from exc
        except (TimeoutError, OSError, EOFError) as exc:
            raise errors.TransientError(
                f"{where}: the connection failed ({type(exc).__name__}: "
                f"{errors.truncate_remote(str(exc), limit=200)}); the host may be down or unreachable."
            ) from exc

    def run(
        self,
        argv: list[str],
        *,
        sudo: bool = False,
        env: Mapping[str, str] | None = None,
        timeout: float = 600.0,
        check: bool = True,
    ) -> CommandResult:
        """Run `argv` (quoted for the remote shell); with `sudo`, as root keeping `env` (`sudo -E`)."""
        command = " ".join(shlex.quote(part) for part in argv)
        if sudo:
            command = "sudo -E -n " + command
        if env:
            exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in sorted(env.items()))
            command = f"export {exports} && {command}"
        with self._translate(f"Running {argv[0]}"):
            result = self._conn.run(command, hide=True, warn=True, timeout=timeout, in_stream=False)
        outcome = CommandResult(exit_code=result.exited, stdout=result.stdout, stderr=result.stderr)
        if check and result.exited != 0:
            raise errors.RemoteCommandFailed(
                f"`{' '.join(argv)}` failed on {self.node}.",
                exit_code=result.exited,
                output=(result.stdout + result.stderr)[-4000:],
            )
        return outcome

    def upload(self, path: str, chunks: Iterable[bytes], *, sudo: bool = True, timeout: float = 60.0) -> int:
        """Write `chunks` to the file at `path` (created or truncated; with `sudo`, as root through
        `sudo tee`), streamed over one exec channel; returns the bytes sent. Raises when the
        remote command exits non-zero or the connection drops, so a short file never passes."""
        target = shlex.quote(path)
        command = f"sudo -n tee -- {target} >/dev/null" if sudo else f"cat > {target}"
        sent = 0
        with self._translate(f"Writing {path}"):
            transport = self._conn.client.get_transport()
            if transport is None:
                raise errors.TransientError(f"Writing {path} on {self.node}: the SSH transport is closed.")
            channel = transport.open_session(window_size=_WINDOW, max_packet_size=32768)
            try:
                channel.settimeout(timeout)
                channel.exec_command(command)
                for chunk in chunks:
                    channel.sendall(chunk)
                    sent += len(chunk)
                channel.shutdown_write()
                code = channel.recv_exit_status()
                if code == -1:
                    raise errors.TransientError(
                        f"Writing {path} on {self.node}: the connection dropped before the end of the file."
                    )
                if code != 0:
                    raise errors.RemoteCommandFailed(
                        f"Writing {path} on {self.node} failed.",
                        exit_code=code,
                        output=channel.recv_stderr(4096),
                    )
            finally:
                channel.close()
        return sent

    def stream(
        self, path: str, *, sudo: bool = True, chunk_size: int = _CHUNK, timeout: float = 60.0
    ) -> Iterator[bytes]:
        """The bytes of the file at `path`, in chunks, read once. Raises when the read fails or
        `cat` exits non-zero, so a truncated stream never looks complete."""
        command = ("sudo -n cat -- " if sudo else "cat -- ") + shlex.quote(path)
        with self._translate(f"Reading {path}"):
            transport = self._conn.client.get_transport()
            if transport is None:
                raise errors.TransientError(f"Reading {path} on {self.node}: the SSH transport is closed.")
            channel = transport.open_session(window_size=_WINDOW, max_packet_size=32768)
            try:
                channel.settimeout(timeout)
                channel.exec_command(command)
                while True:
                    data = channel.recv(chunk_size)
                    if not data:
                        break
                    yield data
                code = channel.recv_exit_status()
                if code == -1:  # the channel closed without an exit status: the connection dropped
                    raise errors.TransientError(
                        f"Reading {path} on {self.node}: the connection dropped before the end of the file."
                    )
                if code != 0:
                    stderr = channel.recv_stderr(4096)
                    raise errors.RemoteCommandFailed(
                        f"Reading {path} on {self.node} failed.", exit_code=code, output=stderr
                    )
            finally:
                channel.close()
