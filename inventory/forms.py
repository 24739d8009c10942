"""Portal forms of the inventory: adding and changing hypervisor connections."""

from __future__ import annotations

import re
from pathlib import Path

from django import forms

from inventory.connectors import LABELS
from inventory.connectors.base import canonical_thumbprint
from inventory.models import Connection


def normalize_thumbprint(value: str) -> str:
    """'aa:bb..', 'AABB..' or 'aa bb ..' -> 'AA:BB:..'; raises ValidationError when it is not SHA-256."""
    try:
        return canonical_thumbprint(value)
    except ValueError:
        raise forms.ValidationError(
            "The thumbprint must be a SHA-256 fingerprint: 64 hexadecimal digits, in pairs separated by colons."
        ) from None


def css_class(widget: forms.Widget) -> str:
    if isinstance(widget, forms.CheckboxInput):
        return "form-check-input"
    return "form-select" if isinstance(widget, forms.Select) else "form-control"


class ConnectionForm(forms.ModelForm):
    kind = forms.ChoiceField(label="Type", choices=list(LABELS.items()))
    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted. Leave blank to keep the stored password.",
    )
    lab_root = forms.CharField(
        label="Lab folder",
        required=False,
        help_text="Folder of a seeded lab on this server (see manage.py lab seed).",
    )

    class Meta:
        model = Connection
        fields = ["name", "kind", "host", "port", "username", "tls_verify", "tls_thumbprint"]
        labels = {
            "host": "Address",
            "username": "User name",
            "tls_verify": "Verify the certificate against trusted authorities",
            "tls_thumbprint": "Pinned certificate thumbprint (SHA-256)",
        }
        help_texts = {
            "host": "vCenter or ESXi host name or IP address.",
            "tls_verify": "",
            "tls_thumbprint": "Leave blank to be shown the server's thumbprint on the first test.",
        }
        error_messages = {
            "name": {"unique": "A connection with this name already exists: choose another name."},
        }

    field_order = ["name", "kind", "host", "port", "username", "password", "tls_verify", "tls_thumbprint", "lab_root"]

    # Fields that only make sense for one kind of connection (the form shows them for that kind).
    KIND_FIELDS = {
        "vsphere": ("host", "port", "username", "password", "tls_verify", "tls_thumbprint"),
        "lab": ("lab_root",),
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["lab_root"].initial = (self.instance.options or {}).get("root", "")
        else:
            self.fields["password"].help_text = "Stored encrypted; never shown again."
        for field in self.fields.values():
            field.widget.attrs["class"] = css_class(field.widget)
        for kind, names in self.KIND_FIELDS.items():
            for name in names:
                self.fields[name].widget.attrs["data-kind"] = kind

    def clean_tls_thumbprint(self) -> str:
        return normalize_thumbprint(self.cleaned_data.get("tls_thumbprint", ""))

    def clean_port(self) -> int:
        port = self.cleaned_data.get("port")
        if port is None:
            return 443
        if not 1 <= port <= 65535:
            raise forms.ValidationError("The port must be between 1 and 65535 (vCenter and ESXi use 443).")
        return port

    def clean(self) -> dict:
        data = super().clean()
        kind = data.get("kind")
        if kind == "vsphere":
            self._clean_vsphere(data)
        elif kind == "lab":
            self._clean_lab(data)
        return data

    def _clean_vsphere(self, data: dict) -> None:
        if not data.get("host"):
            self.add_error("host", "Enter the address of the vCenter or ESXi host, e.g. vcenter.example.com.")
        elif not re.fullmatch(r"[A-Za-z0-9.\-:\[\]_]+", data["host"]):
            self.add_error(
                "host", "The address may contain only a host name or an IP address, without http:// or a path."
            )
        if not data.get("username"):
            self.add_error("username", "Enter the user name to log in with, e.g. administrator@vsphere.local.")
        if not data.get("password") and not self._has_stored_password():
            self.add_error("password", "Enter the password of this user.")

    def _has_stored_password(self) -> bool:
        """Asked of the database: decrypting is not needed (and fails after a change of the secrets key)."""
        return bool(self.instance.pk) and Connection.objects.filter(pk=self.instance.pk).exclude(password="").exists()

    def _clean_lab(self, data: dict) -> None:
        root = (data.get("lab_root") or "").strip()
        if not root:
            self.add_error("lab_root", "Enter the folder of a seeded lab, e.g. /var/lib/vafleet/lab.")
            return
        path = Path(root)
        if not path.is_absolute():
            self.add_error("lab_root", "Enter the lab folder as an absolute path (starting with /).")
        elif not path.is_dir():
            self.add_error(
                "lab_root",
                f"The folder {root} does not exist: seed a lab there first (manage.py lab seed --root {root}).",
            )
        data["lab_root"] = root

    def save(self, commit: bool = True) -> Connection:
        connection = super().save(commit=False)
        options = dict(connection.options or {})
        if connection.kind == "lab":
            options["root"] = self.cleaned_data["lab_root"]
            connection.host, connection.username, connection.password = "", "", ""
        else:
            options.pop("root", None)
            if self.cleaned_data.get("password"):
                connection.password = self.cleaned_data["password"]
        connection.options = options
        if commit:
            connection.save()
        return connection
