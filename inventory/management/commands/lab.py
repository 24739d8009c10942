"""`manage.py lab seed|write|status`: run the local demo hypervisor.

`seed` creates what is missing of the demo lab, then creates or updates the "Lab" connection
and syncs it (the system's first start calls exactly this). Every subcommand is idempotent.
"""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from inventory.connectors.base import ConnectorError
from inventory.connectors.lab import LabConnector, seed
from inventory.connectors.lab.seed import MIB
from inventory.models import Connection
from inventory.sync import sync_connection

CONNECTION_NAME = "Lab"
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """'64M', '1G', '1.5GiB', '4096' -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not match:
        raise CommandError(f"{text!r} is not a size; write it like 64M, 1G or 1073741824.")
    return int(float(match[1]) * UNITS[match[2]])


class Command(BaseCommand):
    help = "Seed, exercise and inspect the lab (a local demo hypervisor)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, parser_class=type(parser))
        seed_parser = sub.add_parser("seed", help="Create the demo lab (idempotent) and sync the Lab connection.")
        seed_parser.add_argument("--root", help="Lab folder (default: VAFLEET_LAB_ROOT).")
        seed_parser.add_argument("--vms", type=int, default=32, help="Number of demo VMs (default 32).")
        seed_parser.add_argument("--disk-size", default="64M", help="Capacity of each new disk (default 64M).")
        seed_parser.add_argument("--fill", type=float, help="Written share of each new disk, 0-1 (default 0.15-0.35).")
        seed_parser.add_argument("--no-sync", action="store_true", help="Only seed the folder; no database change.")
        write_parser = sub.add_parser("write", help="Make VMs write to their disks, so incrementals find changes.")
        write_parser.add_argument("vms", nargs="*", help="VM names or morefs.")
        write_parser.add_argument("--all", action="store_true", help="Every VM in the lab.")
        write_parser.add_argument("--percent", type=float, default=5.0, help="Share of each disk to change.")
        write_parser.add_argument("--seed", default="1", help="Same seed, same writes.")
        write_parser.add_argument("--root", help="Lab folder (default: the Lab connection's, else VAFLEET_LAB_ROOT).")
        status_parser = sub.add_parser("status", help="Show what the lab holds.")
        status_parser.add_argument("--root", help="Lab folder (default: the Lab connection's, else VAFLEET_LAB_ROOT).")

    def handle(self, *args, **options) -> None:
        try:
            getattr(self, f"_{options['action']}")(options)
        except (ConnectorError, ValueError, OSError) as exc:
            raise CommandError(str(exc)) from exc

    # -- subcommands ---------------------------------------------------------------------
    def _seed(self, options: dict) -> None:
        root = Path(options["root"] or settings.VAFLEET_LAB_ROOT).expanduser().resolve()
        disk_size = parse_size(options["disk_size"])
        if disk_size < MIB or disk_size % MIB:
            raise CommandError(f"--disk-size {options['disk_size']} is not possible; use whole MiB, at least 1M.")
        result = seed(root, vms=options["vms"], disk_size=disk_size, fill=options["fill"])
        self.stdout.write(
            f"Lab at {root}: {result.created} VMs created, {result.kept} kept, "
            f"{result.bytes_written / MIB:.0f} MiB written in {result.seconds:.1f} s."
        )
        if options["no_sync"]:
            return
        connection = self._connection(root)
        outcome = sync_connection(connection.pk)
        if not outcome.ok:
            raise CommandError(f"The lab was seeded but the sync of connection {connection.name!r} failed: "
                               f"{outcome.message}")
        self.stdout.write(self.style.SUCCESS(f"Connection {connection.name!r}: {outcome.message}"))

    def _connection(self, root: Path) -> Connection:
        connection = Connection.objects.filter(name=CONNECTION_NAME).first()
        if connection is None:
            return Connection.objects.create(name=CONNECTION_NAME, kind="lab", options={"root": str(root)})
        if connection.kind != "lab":
            raise CommandError(f"A {connection.kind} connection is already named {CONNECTION_NAME!r}; "
                               "rename it so the lab can use that name.")
        if connection.options.get("root") != str(root):
            connection.options = {**connection.options, "root": str(root)}
            connection.save(update_fields=["options", "updated"])
        return connection

    def _write(self, options: dict) -> None:
        lab = LabConnector(root=self._root(options))
        targets = [vm.moref for vm in lab.fetch_inventory().vms] if options["all"] else options["vms"]
        if not targets:
            raise CommandError("Name the VMs to write to (names or morefs), or pass --all.")
        for target in targets:
            moref = lab.find_vm(target)
            written = lab.write(moref, options["percent"], options["seed"])
            total = sum(n for extents in written.values() for _, n in extents)
            self.stdout.write(f"{target}: {total / MIB:.1f} MiB written in "
                              f"{sum(len(e) for e in written.values())} extents.")

    def _status(self, options: dict) -> None:
        lab = LabConnector(root=self._root(options))
        info = lab.test()
        inv = lab.fetch_inventory()
        self.stdout.write(f"{info.product} {info.version} at {lab.root}: {len(inv.hosts)} hosts, "
                          f"{len(inv.datastores)} datastores, {len(inv.networks)} networks, {len(inv.vms)} VMs.")
        for vm in sorted(inv.vms, key=lambda v: v.name):
            snaps = lab.list_snapshots(vm.moref)
            line = (f"  {vm.moref:<10} {vm.name:<30} {vm.power_state:<10} "
                    f"{len(vm.disks)} disk(s) {sum(d.capacity_bytes for d in vm.disks) / MIB:>8.0f} MiB"
                    f"  CBT {'on' if vm.cbt_enabled else 'off'}")
            if snaps:
                line += f"  snapshots: {', '.join(s.name for s in snaps)}"
            self.stdout.write(line)

    def _root(self, options: dict) -> Path:
        if options["root"]:
            return Path(options["root"]).expanduser().resolve()
        connection = Connection.objects.filter(name=CONNECTION_NAME, kind="lab").first()
        if connection and connection.options.get("root"):
            return Path(connection.options["root"])
        return Path(settings.VAFLEET_LAB_ROOT)
