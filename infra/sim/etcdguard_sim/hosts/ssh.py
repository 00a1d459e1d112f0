"""SSH access to the simulated control-plane hosts, as on RHCOS: user `core` with passwordless
sudo, a client key the installer put in `authorized_keys`, and a fixed host key per host that
clients verify through `DIR/ssh/known_hosts`.

`DIR/ssh_config` has one `Host` entry per control-plane node name, so `ssh -F DIR/ssh_config
<node-name>` (and fabric with that config) reaches the right host with strict host key checking.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from etcdguard_sim import layout

__all__ = ["SUDOERS_FILE", "ensure_core_user", "ensure_keys", "sshd_argv", "write_client_config"]

SUDOERS_FILE = Path("/etc/sudoers.d/etcdguard-sim-core")


def ensure_core_user() -> None:
    """The machine-wide `core` user (home /home/core, which each host provides) with sudo."""
    if os.geteuid() != 0:
        raise PermissionError(
            "the simulated hosts need root (user `core`, sshd on port 22, mount namespaces): run as root"
        )
    try:
        pwd.getpwnam("core")
    except KeyError:
        subprocess.run(
            ["useradd", "--no-create-home", "--home-dir", "/home/core", "--shell", "/bin/bash", "core"],
            check=True,
            capture_output=True,
        )
        # A locked password makes sshd refuse even key logins for the account ("!"); "*" does not.
        subprocess.run(["usermod", "-p", "*", "core"], check=True, capture_output=True)
    if not SUDOERS_FILE.exists():
        tmp = SUDOERS_FILE.with_suffix(".tmp")
        tmp.write_text("core ALL=(ALL) NOPASSWD: ALL\n")
        tmp.chmod(0o440)
        tmp.rename(SUDOERS_FILE)


def _keygen(path: Path, comment: str) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


def client_key(spec: layout.SimSpec) -> Path:
    return spec.state_dir / "ssh" / "id_ed25519"


def host_sim_dir(spec: layout.SimSpec, node: layout.NodeSpec) -> Path:
    """`/var/lib/sim` of the host, seen from outside."""
    return spec.host_root(node) / "var" / "lib" / "sim"


def ensure_keys(spec: layout.SimSpec, node: layout.NodeSpec) -> None:
    """Host key, sshd config and core's authorized_keys of one host (idempotent)."""
    sim_dir = host_sim_dir(spec, node)
    _keygen(client_key(spec), f"etcdguard-sim@{spec.cluster_name}")
    _keygen(sim_dir / "ssh_host_ed25519_key", f"root@{node.name}")
    (sim_dir / "sshd_config").write_text(
        "\n".join(
            [
                f"ListenAddress {node.ip}:22",
                "HostKey /var/lib/sim/ssh_host_ed25519_key",
                "PidFile none",
                "AuthorizedKeysFile .ssh/authorized_keys",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin no",
                "AllowUsers core",
                "UsePAM no",
                "StrictModes yes",
                "PrintMotd no",
                "AcceptEnv LANG LC_*",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    home = spec.host_root(node) / "home" / "core"
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    pub = client_key(spec).with_suffix(".pub").read_text()
    (ssh_dir / "authorized_keys").write_text(pub)
    core = pwd.getpwnam("core")
    for path in (home, ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, core.pw_uid, core.pw_gid)
    home.chmod(0o755)
    ssh_dir.chmod(0o700)
    (ssh_dir / "authorized_keys").chmod(0o600)


def write_client_config(spec: layout.SimSpec) -> None:
    """`DIR/ssh/known_hosts` (every host's key under its name and address) and `DIR/ssh_config`."""
    lines = []
    for node in spec.masters:
        pub = (host_sim_dir(spec, node) / "ssh_host_ed25519_key.pub").read_text().split()
        lines.append(f"{node.name},{node.ip} {pub[0]} {pub[1]}")
    known_hosts = spec.state_dir / "ssh" / "known_hosts"
    known_hosts.write_text("\n".join(lines) + "\n")
    entries = []
    for node in spec.masters:
        entries.append(
            "\n".join(
                [
                    f"Host {node.name}",
                    f"    HostName {node.ip}",
                    "    User core",
                    f"    IdentityFile {client_key(spec)}",
                    "    IdentitiesOnly yes",
                    f"    UserKnownHostsFile {known_hosts}",
                    "    StrictHostKeyChecking yes",
                    "    ConnectTimeout 5",
                ]
            )
        )
    (spec.state_dir / "ssh_config").write_text("\n\n".join(entries) + "\n")


def sshd_argv() -> list[str]:
    """sshd as it runs inside a host namespace (foreground, logging to stderr)."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    return [sshd, "-D", "-e", "-f", "/var/lib/sim/sshd_config"]
