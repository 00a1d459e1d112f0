"""`etcdguard`: look at a cluster's backup catalogue from a shell, without Prefect.

    etcdguard backups list   --cluster NAME [--version 4.8.12] [--profiles DIR]
    etcdguard backups show   --cluster NAME [BACKUP_ID] [--profiles DIR]
    etcdguard backups verify --cluster NAME [BACKUP_ID | --all] [--version 4.8.12] [--profiles DIR]

Profiles come from `--profiles`, else `$ETCDGUARD_PROFILES`, else `./profiles`.
Exit codes: 0 done (every verified backup is intact), 1 a verified backup has a problem,
2 bad usage or an error (the message says what to do; no traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.json import JSON
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn
from rich.table import Table

from etcdguard.clients.objectstore import ObjectStore
from etcdguard.core import errors, keys, profile, versions
from tasks import catalogue

__all__ = ["main"]

_WIDE = 200  # output width when not on a terminal, so piped lines are neither cut nor wrapped


def _console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and not os.environ.get("COLUMNS")
    return Console(stderr=stderr, width=_WIDE if wide else None, highlight=False)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etcdguard", description=__doc__.split("\n\n")[0])
    top = parser.add_subparsers(dest="group", required=True, metavar="backups")
    backups = top.add_parser("backups", help="list, show and verify a cluster's backups in S3")
    sub = backups.add_subparsers(dest="command", required=True, metavar="{list,show,verify}")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cluster", required=True, help="the cluster's profile name")
        p.add_argument(
            "--profiles", type=Path, default=None, help="profiles directory (default: $ETCDGUARD_PROFILES)"
        )

    listing = sub.add_parser("list", help="the cluster's complete backups, newest last")
    common(listing)
    listing.add_argument("--version", default=None, help="only this z-stream, e.g. 4.8.12")
    show = sub.add_parser("show", help="a backup's manifest (the newest when no id is given)")
    common(show)
    show.add_argument("backup_id", nargs="?", default=None, help="<cluster>/<version>/<timestamp>")
    show.add_argument("--version", default=None, help="with no id: the newest of this z-stream")
    verify = sub.add_parser("verify", help="download a backup and check every checksum")
    common(verify)
    which = verify.add_mutually_exclusive_group()
    which.add_argument("backup_id", nargs="?", default=None, help="<cluster>/<version>/<timestamp>")
    which.add_argument("--all", action="store_true", help="verify every backup of the cluster")
    verify.add_argument("--version", default=None, help="only this z-stream")
    return parser


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _version(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return versions.validate_version(value)
    except ValueError as exc:
        raise errors.ConfigError(f"--version: {exc}") from exc


def _list(store: ObjectStore, settings: profile.StorageSettings, args: argparse.Namespace) -> int:
    out = _console()
    version = _version(args.version)
    entries = catalogue.list_backups(store, settings, cluster=args.cluster, ocp_version=version)
    scope = f" ({version})" if version else ""
    table = Table(title=f"Backups of {args.cluster}{scope} in s3://{settings.snapshots.bucket}")
    table.add_column("backup id", no_wrap=True)
    table.add_column("taken at (UTC)", no_wrap=True)
    table.add_column("z-stream", no_wrap=True)
    table.add_column("node", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("trailer", no_wrap=True)
    table.add_column("drills", justify="right", no_wrap=True)
    for entry in entries:
        m = entry.manifest
        passed = sum(1 for d in m.drills if d.passed)
        table.add_row(
            m.backup_id,
            f"{m.taken_at:%Y-%m-%d %H:%M:%S}",
            m.ocp_version,
            m.source_node,
            _size(m.stored_size),
            m.sha256_trailer,
            f"{passed}/{len(m.drills)}",
        )
    if entries:
        out.print(table)
    else:
        out.print(
            f"Cluster {args.cluster} has no complete backup{scope} in s3://{settings.snapshots.bucket}."
        )
    leftovers = catalogue.incomplete(store, settings, cluster=args.cluster)
    if version is not None:
        within = keys.backup_prefix(
            prefix=settings.snapshots.prefix, cluster=args.cluster, ocp_version=version
        )
        leftovers = [key for key in leftovers if key.startswith(within)]
    out.print(f"{len(entries)} complete backup(s); {len(leftovers)} object(s) of incomplete uploads.")
    return 0


def _show(store: ObjectStore, settings: profile.StorageSettings, args: argparse.Namespace) -> int:
    entry = catalogue.find_backup(
        store, settings, cluster=args.cluster, backup_id=args.backup_id, ocp_version=_version(args.version)
    )
    text = entry.manifest.to_json_bytes().decode("utf-8")
    if sys.stdout.isatty():
        _console().print(JSON(text), soft_wrap=True)
    else:
        sys.stdout.write(text)
    return 0


def _verify(store: ObjectStore, settings: profile.StorageSettings, args: argparse.Namespace) -> int:
    out, err = _console(), _console(stderr=True)
    version = _version(args.version)
    if args.all:
        entries = catalogue.list_backups(store, settings, cluster=args.cluster, ocp_version=version)
        if not entries:
            raise errors.NotFoundError(f"Cluster {args.cluster!r} has no complete backup to verify.")
    else:
        entries = [
            catalogue.find_backup(
                store, settings, cluster=args.cluster, backup_id=args.backup_id, ocp_version=version
            )
        ]
    failed = 0
    for entry in entries:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
        )
        with Progress(*columns, console=err, transient=False) as progress:
            bars = {
                f.key: progress.add_task(f"{f.kind} {f.key.rsplit('/', 1)[-1]}", total=f.size)
                for f in entry.manifest.files
            }

            def advance(key: str, size: int, bars: dict[str, TaskID] = bars) -> None:
                if key in bars:
                    progress.advance(bars[key], size)

            report = catalogue.verify_backup(store, settings, entry, progress=advance)
        if report.ok:
            out.print(f"Backup {report.backup_id}: OK, {len(report.checked)} file(s) checked.")
        else:
            failed += 1
            out.print(f"Backup {report.backup_id}: {len(report.problems)} PROBLEM(S).")
        for line in report.checked:
            out.print(f"  checked  {line}", soft_wrap=True)
        for line in report.problems:
            out.print(f"  PROBLEM  {line}", soft_wrap=True)
    if args.all:
        out.print(f"{len(entries) - failed} of {len(entries)} backup(s) intact.")
    return 1 if failed else 0


_COMMANDS = {"list": _list, "show": _show, "verify": _verify}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: `sys.argv[1:]`); return the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or bad usage (argparse printed why)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        cluster_profile = profile.load_profile(args.cluster, directory=args.profiles)
        with ObjectStore(cluster_profile.storage) as store:
            return _COMMANDS[args.command](store, cluster_profile.storage, args)
    except errors.EtcdguardError as exc:
        print(f"etcdguard: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("etcdguard: interrupted.", file=sys.stderr)
        return 130
