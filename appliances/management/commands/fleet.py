"""`manage.py fleet local|upgrade|health|list`: the appliance fleet from the command line.

`local` makes sure the built-in appliance of the lab exists and is deployed (the system's first
start calls it); `upgrade` and `health` run a fleet operation to its end in this process.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from appliances import services
from appliances.builtin import ensure_local_appliance
from appliances.models import Appliance, FleetOperation
from appliances.operations import run_operation
from core.errors import ActionableError
from inventory.models import Connection


class Command(BaseCommand):
    help = "Deploy the built-in appliance, upgrade or check the fleet, list appliances."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, parser_class=type(parser))
        local = sub.add_parser("local", help="Create and deploy the built-in appliance of a lab connection.")
        local.add_argument("--connection", default="Lab", help="Lab connection name (default Lab).")
        sub.add_parser("upgrade", help="Bring every deployed appliance to the current engine.")
        sub.add_parser("health", help="Check every deployed appliance now.")
        sub.add_parser("list", help="Show the appliances.")

    def handle(self, *args, **options) -> None:
        try:
            getattr(self, f"_{options['action']}")(options)
        except (ActionableError, ValueError) as exc:
            raise CommandError(str(exc)) from exc

    def _local(self, options: dict) -> None:
        connection = Connection.objects.filter(name=options["connection"], kind="lab").first()
        if connection is None:
            raise CommandError(f"No lab connection named {options['connection']!r}: run `manage.py lab seed` first.")
        appliance, created = ensure_local_appliance(connection)
        if appliance.state in services.DEPLOYABLE:
            self._run(services.start_deploy([appliance], queue=False))
        elif appliance.state in services.DEPLOYED:
            self._run(services.start_upgrade([appliance], queue=False))
        appliance.refresh_from_db()
        self.stdout.write(f"{appliance.name}: {appliance.get_state_display()}, engine {appliance.engine_version or '-'}"
                          f"{' (new)' if created else ''}")

    def _upgrade(self, options: dict) -> None:
        self._run(services.start_upgrade(queue=False))

    def _health(self, options: dict) -> None:
        self._run(services.start_health_round(queue=False))

    def _list(self, options: dict) -> None:
        for a in Appliance.objects.select_related("host"):
            self.stdout.write(f"{a.name:24} {a.get_state_display():18} {a.host.name:20} {a.address or '-':16} "
                              f"{a.engine_version or '-'}")

    def _run(self, operation: FleetOperation) -> None:
        """Run the operation here, not in a worker."""
        operation = run_operation(operation.pk)
        for item in operation.items.all():
            self.stdout.write(f"  {item.appliance_name}: {item.get_state_display()} - {item.message}")
        if operation.state != FleetOperation.State.SUCCEEDED:
            raise CommandError(f"{operation}: {operation.message}")
