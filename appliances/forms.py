"""Portal forms of the appliance fleet: one appliance (create/edit) and a bulk deployment to several hosts.

Every rule about a configuration lives in `appliances.validation.problems`; these forms only
collect values, compare password confirmations and put problems' sentences on their fields.
Selects offer what the chosen connection and host can use (narrowed again by htmx when they change),
but accept any object, so that a stale or hand-made choice gets problems' sentence, not a bare refusal.
"""

from __future__ import annotations

from django import forms
from django.db.models import Count, Q
from django.forms.models import ModelChoiceIterator

from appliances.models import Appliance
from appliances.validation import problems
from inventory.forms import css_class
from inventory.models import Connection, Datastore, Host, Network

GIB = 1024**3
PASSWORDS = (("root_password", "root"), ("user_password", "the non-root user"))


def datastore_label(datastore: Datastore) -> str:
    return f"{datastore.name} — {datastore.free_bytes / GIB:,.1f} GiB free"


def network_label(network: Network) -> str:
    vlan = f", VLAN {network.vlan}" if network.vlan else ""
    return f"{network.name} ({network.get_kind_display().lower()}{vlan})"


class _OfferedIterator(ModelChoiceIterator):
    def __init__(self, field):
        super().__init__(field)
        if field.offered is not None:
            self.queryset = field.offered


class OfferedChoiceField(forms.ModelChoiceField):
    """Shows the `offered` objects; validates against the whole queryset."""

    iterator = _OfferedIterator
    offered = None

    def offer(self, queryset) -> None:
        self.offered = queryset
        self.widget.choices = self.choices


class OfferedMultipleChoiceField(forms.ModelMultipleChoiceField):
    iterator = _OfferedIterator
    offered = None

    def offer(self, queryset) -> None:
        self.offered = queryset
        self.widget.choices = self.choices


def password_field(label: str, help_text: str = "") -> forms.CharField:
    return forms.CharField(
        label=label, required=False, strip=False, help_text=help_text,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )


def _as_pk(value) -> int | None:
    """A select's value (pk, pk text or model instance) as a pk."""
    value = getattr(value, "pk", value)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def without_static(values: dict, instance: Appliance | None) -> None:
    """DHCP: the static settings do not apply (the address kept is the one last seen, if already DHCP)."""
    if values.get("addressing") != Appliance.Addressing.DHCP:
        return
    values.update(address=None, prefix=None, gateway=None, dns="")
    if instance is not None and instance.pk and instance.addressing == Appliance.Addressing.DHCP:
        values["address"] = instance.address


class PasswordPairs:
    """Password + confirmation fields: blank keeps the stored password on edit; never rendered back."""

    def clean_password_pairs(self, data: dict, keep_blank: bool) -> None:
        for field, who in PASSWORDS:
            password, again = data.get(field) or "", data.get(f"{field}_confirm") or ""
            if password != again:
                self.add_error(f"{field}_confirm", f"The two passwords for {who} differ: type them again.")
            data[field] = None if keep_blank and not password else password


class ApplianceForm(PasswordPairs, forms.ModelForm):
    connection = OfferedChoiceField(Connection.objects.defer("password").order_by("name"))
    host = OfferedChoiceField(Host.objects.all(), help_text="The host the appliance VM runs on.")
    datastore = OfferedChoiceField(Datastore.objects.all(), help_text="Datastores the host mounts, with free space.")
    network = OfferedChoiceField(Network.objects.all(),
                                 help_text="Port groups on the host, standard and distributed.")
    served_hosts = OfferedMultipleChoiceField(
        Host.objects.all(), required=False, label="Served hosts",
        help_text="Hosts whose VMs it protects. Only its own host: one-to-one (the default); several: one-to-many.",
    )
    root_password = password_field("Root password")
    root_password_confirm = password_field("Root password (again)")
    user_password = password_field("Password of the non-root user")
    user_password_confirm = password_field("Password of the non-root user (again)")

    class Meta:
        model = Appliance
        fields = [
            "name", "connection", "host", "datastore", "network", "served_hosts", "addressing", "address", "prefix",
            "gateway", "dns", "hostname", "user_name", "vcpus", "memory_mb", "transport",
        ]
        labels = {
            "address": "Address", "dns": "DNS servers", "hostname": "Host name", "user_name": "Non-root user name",
            "vcpus": "vCPUs", "memory_mb": "Memory (MiB)",
        }

    field_order = [
        "name", "connection", "host", "datastore", "network", "served_hosts", "addressing", "address", "prefix",
        "gateway", "dns", "hostname", "root_password", "root_password_confirm", "user_name", "user_password",
        "user_password_confirm", "vcpus", "memory_mb", "transport",
    ]
    # Fields shown only for static addressing.
    STATIC_FIELDS = ("address", "prefix", "gateway", "dns")
    PLACEMENT_FIELDS = ("host", "datastore", "network", "served_hosts")
    # Whether selects offer only what the chosen connection/host can use (the admin offers everything).
    narrow = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["datastore"].label_from_instance = datastore_label
        self.fields["network"].label_from_instance = network_label
        if self.instance.pk:
            for field, _ in PASSWORDS:
                self.fields[field].help_text = "Stored encrypted. Leave blank to keep the stored password."
        else:
            self.fields["root_password"].help_text = "Used once, to set up the appliance's key; never shown again."
        for name in self.STATIC_FIELDS:
            self.fields[name].widget.attrs["data-addressing"] = "static"
        for field in self.fields.values():
            field.widget.attrs["class"] = css_class(field.widget)
        if self.narrow:
            self.offer_placement()

    def chosen(self, name: str) -> int | None:
        return _as_pk(self[name].value())

    def offer_placement(self) -> None:
        """Offer the hosts of the chosen connection, and the datastores and networks of the chosen host."""
        connection, host = self.chosen("connection"), self.chosen("host")
        present = Q(vanished_at__isnull=True)
        hosts = Host.objects.filter(present, connection_id=connection).order_by("name")
        self.fields["host"].offer(hosts)
        self.fields["served_hosts"].offer(hosts)
        self.fields["datastore"].offer(
            Datastore.objects.filter(present, hosts=host, accessible=True).order_by("-free_bytes", "name")
        )
        self.fields["network"].offer(Network.objects.filter(present, hosts=host).order_by("name"))
        if not self.is_bound and host and not self.initial.get("served_hosts"):
            self.initial["served_hosts"] = [host]  # one-to-one unless the user chooses more

    def placement_fields(self):
        return [self[name] for name in self.PLACEMENT_FIELDS]

    def clean(self) -> dict:
        data = super().clean()
        self.clean_password_pairs(data, keep_blank=bool(self.instance.pk))
        without_static(data, self.instance)
        host = data.get("host")
        if host is not None and not data.get("served_hosts"):
            data["served_hosts"] = [host]  # one-to-one
        values = {name: data.get(name) for name in (*self.Meta.fields, "root_password", "user_password")}
        for field, sentences in problems(values, self.instance).items():
            if field in self.errors:
                continue  # the field's own check already said what is wrong
            for sentence in sentences:
                self.add_error(field if field in self.fields else None, sentence)
        return data

    def validate_unique(self) -> None:
        """problems() checks names, host names and addresses (ignoring case), in its own words."""

    def save(self, commit: bool = True) -> Appliance:
        appliance = super().save(commit=False)
        for field, _ in PASSWORDS:
            if self.cleaned_data.get(field):
                setattr(appliance, field, self.cleaned_data[field])
        if commit:
            appliance.save()
            self.save_m2m()
        return appliance


class BulkDeployForm(PasswordPairs, forms.Form):
    """What appliances on several hosts share; `appliances.bulk.plan` turns it into one appliance per host."""

    connection = OfferedChoiceField(Connection.objects.defer("password").order_by("name"))
    hosts = OfferedMultipleChoiceField(Host.objects.filter(vanished_at__isnull=True),
                                       help_text="One appliance per host, serving that host.")
    base_name = forms.CharField(
        max_length=60, label="Base name",
        help_text="Each appliance is named <base>-<host short name>; that is also its host name.",
    )
    network_name = forms.CharField(
        label="Network", widget=forms.Select,
        help_text="A port group name available on every chosen host.",
    )
    datastore = OfferedChoiceField(
        Datastore.objects.all(), required=False, empty_label="The largest datastore each host mounts",
        help_text="A datastore every chosen host mounts, or each host's datastore with the most free space.",
    )
    addressing = forms.ChoiceField(choices=Appliance.Addressing.choices, initial=Appliance.Addressing.DHCP)
    first_address = forms.GenericIPAddressField(
        protocol="IPv4", required=False, label="First address",
        help_text="Each appliance gets the next free address from here.",
    )
    prefix = forms.IntegerField(required=False, min_value=8, max_value=30)
    gateway = forms.GenericIPAddressField(protocol="IPv4", required=False)
    dns = forms.CharField(required=False, label="DNS servers", help_text="Comma separated.")
    root_password = password_field("Root password", "The same for every appliance; never shown again.")
    root_password_confirm = password_field("Root password (again)")
    user_name = forms.CharField(max_length=32, initial="vauser", label="Non-root user name")
    user_password = password_field("Password of the non-root user")
    user_password_confirm = password_field("Password of the non-root user (again)")
    vcpus = forms.IntegerField(initial=2, label="vCPUs", help_text="Also the number of jobs each runs at once.")
    memory_mb = forms.IntegerField(initial=2048, label="Memory (MiB)")

    STATIC_FIELDS = ("first_address", "prefix", "gateway", "dns")
    PLACEMENT_FIELDS = ("hosts", "network_name", "datastore")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["datastore"].label_from_instance = datastore_label
        for name in self.STATIC_FIELDS:
            self.fields[name].widget.attrs["data-addressing"] = "static"
        for field in self.fields.values():
            field.widget.attrs["class"] = css_class(field.widget)
        self.fields["hosts"].widget.attrs["size"] = 8
        self.offer_placement()

    def chosen_hosts(self) -> list[int]:
        values = self["hosts"].value() or []
        return [pk for pk in map(_as_pk, values) if pk is not None]

    def offer_placement(self) -> None:
        """Hosts of the connection; port group names and datastores that every chosen host has."""
        connection, hosts = _as_pk(self["connection"].value()), self.chosen_hosts()
        present = Q(vanished_at__isnull=True)
        self.fields["hosts"].offer(Host.objects.filter(present, connection_id=connection).order_by("name"))
        networks = Network.objects.filter(present, connection_id=connection)
        datastores = Datastore.objects.filter(present, connection_id=connection, accessible=True)
        if hosts:
            # Counted over the chosen hosts only (the filter's join): equal to their number = on every one.
            on_every = Q(on=len(hosts))
            networks = networks.filter(hosts__in=hosts).values("name").annotate(on=Count("hosts", distinct=True))
            names = sorted(row["name"] for row in networks.filter(on_every))
            datastores = datastores.filter(hosts__in=hosts).annotate(on=Count("hosts", distinct=True)).filter(on_every)
        else:
            names = sorted(set(networks.values_list("name", flat=True)))
        self.fields["network_name"].widget.choices = [("", "---------")] + [(n, n) for n in names]
        self.fields["datastore"].offer(datastores.order_by("-free_bytes", "name"))

    def placement_fields(self):
        return [self[name] for name in self.PLACEMENT_FIELDS]

    def clean(self) -> dict:
        data = super().clean()
        self.clean_password_pairs(data, keep_blank=False)
        connection = data.get("connection")
        for host in data.get("hosts") or []:
            if connection is not None and host.connection_id != connection.pk:
                self.add_error("hosts", f"Host {host.name} is not in connection {connection.name}.")
        if data.get("addressing") == Appliance.Addressing.STATIC and not data.get("first_address"):
            self.add_error("first_address", "Enter the first address of the range the appliances get.")
        return data
