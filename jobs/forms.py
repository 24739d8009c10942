"""Portal form of a backup repository, and the rules of a repository's settings that the API shares.

The password and the passphrase are write-only: never rendered back, blank on edit keeps the stored
one. The passphrase of an initialised repository cannot be changed here (the repository's keys are
wrapped with it); before initialisation it can, with its confirmation.
"""

from __future__ import annotations

import re

from django import forms

from inventory.forms import css_class
from jobs.models import Repository

KIND = Repository.Kind
NETWORK_KINDS = (KIND.SFTP, KIND.FTP, KIND.FTPS, KIND.SMB, KIND.NFS)
LOGIN_KINDS = (KIND.SFTP, KIND.FTP, KIND.FTPS, KIND.SMB)
HOST = re.compile(r"[A-Za-z0-9.\-:\[\]_]+")
MIN_PASSPHRASE = 8
KIB = 1 << 10
CHUNK_SIZES = [(1 << n, f"{(1 << n) // KIB} KiB" if n < 20 else f"{(1 << n) >> 20} MiB") for n in range(16, 25)]
SERVER_NAMES = {KIND.SFTP: "SFTP server", KIND.FTP: "FTP server", KIND.FTPS: "FTPS server",
                KIND.SMB: "SMB server", KIND.NFS: "NFS server"}
DEFAULT_PORTS = {KIND.SFTP: 22, KIND.FTP: 21, KIND.FTPS: 21, KIND.SMB: 445, KIND.NFS: 2049}
PASSPHRASE_LOCKED = ("The passphrase of an initialised repository cannot be changed here: its keys are sealed with "
                     "it, and the appliances would no longer open it. Leave the passphrase blank to keep it.")


def repository_problems(values: dict, *, password_stored: bool = False, instance: Repository | None = None) -> dict:
    """Sentences per field for a repository's settings (`values` holds the model's fields and `options`)."""
    kind = values.get("kind")
    problems: dict[str, str] = {}
    host, path = (values.get("host") or "").strip(), (values.get("path") or "").strip()
    options = values.get("options") or {}
    if kind == KIND.LOCAL:
        if not path:
            problems["path"] = "Enter the folder on the appliance, e.g. /srv/vafleet/repository."
        elif not path.startswith("/"):
            problems["path"] = "Enter the folder on the appliance as an absolute path (starting with /)."
    elif kind in NETWORK_KINDS:
        server = SERVER_NAMES[kind]
        if not host:
            problems["host"] = f"Enter the address of the {server}, e.g. nas.example.com."
        elif not HOST.fullmatch(host):
            problems["host"] = "The address may contain only a host name or an IP address, without a scheme or a path."
        if not path:
            problems["path"] = ("Enter the repository's folder inside the share, e.g. vafleet." if kind == KIND.SMB
                                else f"Enter the repository's folder on the {server}, e.g. backups/vafleet.")
        if kind == KIND.SMB and not (values.get("share") or "").strip("\\/ "):
            problems["share"] = "Enter the name of the SMB share, e.g. backups (without slashes)."
        if kind in LOGIN_KINDS:
            if not (values.get("username") or "").strip():
                problems["username"] = f"Enter the user name to log in to the {server} with."
            has_key = kind == KIND.SFTP and bool(options.get("private_key"))
            if not values.get("password") and not password_stored and not has_key:
                problems["password"] = "Enter the password of this user."
    port = values.get("port")
    if port is not None and not 1 <= port <= 65535:
        problems["port"] = "The port must be between 1 and 65535; leave it empty for the protocol's default."
    chunk = values.get("chunk_size")
    if chunk is not None and chunk not in dict(CHUNK_SIZES):
        problems["chunk_size"] = "The chunk size must be a power of two between 64 KiB and 16 MiB."
    initialised = instance is not None and instance.pk and instance.initialized_at is not None
    if initialised and chunk is not None and chunk != instance.chunk_size:
        problems["chunk_size"] = ("The chunk size of an initialised repository is fixed: it was chosen when the "
                                  "repository was created.")
    passphrase = values.get("passphrase")
    if passphrase and initialised:
        problems["passphrase"] = PASSPHRASE_LOCKED
    elif passphrase and len(passphrase) < MIN_PASSPHRASE:
        problems["passphrase"] = (f"Choose a passphrase of at least {MIN_PASSPHRASE} characters: it alone protects "
                                  "every backup in the repository.")
    elif not passphrase and (instance is None or not instance.pk):
        problems["passphrase"] = ("Choose a passphrase: it encrypts the repository, and without it nothing can be "
                                  "restored.")
    return problems


def password_input() -> forms.PasswordInput:
    return forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})


class RepositoryForm(forms.ModelForm):
    password = forms.CharField(required=False, strip=False, widget=password_input(),
                               help_text="Stored encrypted. Leave blank to keep the stored password.")
    passphrase = forms.CharField(
        required=False, strip=False, widget=password_input(),
        help_text="Encrypts the repository; without it nothing can be restored. Keep a copy in a safe place.")
    passphrase_confirm = forms.CharField(label="Passphrase (again)", required=False, strip=False,
                                         widget=password_input())
    chunk_size = forms.TypedChoiceField(choices=CHUNK_SIZES, coerce=int, initial=1 << 20,
                                        help_text="Unit of deduplication; fixed once the repository is created.")
    host_key = forms.CharField(label="Pinned host key", required=False,
                               help_text="Optional: the server's public key as in known_hosts (ssh-ed25519 AAAA...).")
    tls_verify = forms.BooleanField(label="Verify the server's certificate", required=False, initial=True)
    ca_file = forms.CharField(label="CA file on the appliance", required=False,
                              help_text="Optional: a CA bundle to trust instead of the system's.")
    export = forms.CharField(label="NFS export", required=False,
                             help_text="The NFSv4 pseudo path, e.g. /exports/backup; empty: the server's root.")

    class Meta:
        model = Repository
        fields = ["name", "kind", "host", "port", "share", "path", "username", "chunk_size"]
        labels = {"kind": "Type", "host": "Address", "share": "Share", "path": "Folder", "username": "User name"}
        help_texts = {"path": "Local: an absolute folder on the appliance. SMB: the folder inside the share. "
                              "Others: the folder on the server."}
        error_messages = {"name": {"unique": "A repository with this name already exists: choose another name."}}

    field_order = ["name", "kind", "host", "port", "share", "path", "username", "password", "host_key", "tls_verify",
                   "ca_file", "export", "passphrase", "passphrase_confirm", "chunk_size"]

    # Fields that only apply to some kinds (the form shows them for those kinds).
    KIND_FIELDS = {
        "host": NETWORK_KINDS, "port": NETWORK_KINDS, "share": (KIND.SMB,), "username": LOGIN_KINDS,
        "password": LOGIN_KINDS, "host_key": (KIND.SFTP,), "tls_verify": (KIND.FTPS,), "ca_file": (KIND.FTPS,),
        "export": (KIND.NFS,),
    }
    OPTION_FIELDS = {"host_key": KIND.SFTP, "tls_verify": KIND.FTPS, "ca_file": KIND.FTPS, "export": KIND.NFS}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        instance = self.instance
        options = instance.options or {}
        for name in ("host_key", "ca_file", "export"):
            self.fields[name].initial = options.get(name, "")
        self.fields["tls_verify"].initial = bool(options.get("tls_verify", True))
        if instance.pk:
            self.fields["passphrase"].help_text = "Leave blank to keep the stored passphrase."
            if instance.initialized_at:
                self.fields["passphrase"].help_text = PASSPHRASE_LOCKED
                self.fields["passphrase"].disabled = self.fields["passphrase_confirm"].disabled = True
                self.fields["chunk_size"].disabled = True
        else:
            self.fields["password"].help_text = "Stored encrypted; never shown again."
        for name, field in self.fields.items():
            field.widget.attrs["class"] = css_class(field.widget)
            if name in self.KIND_FIELDS:
                field.widget.attrs["data-kinds"] = " ".join(self.KIND_FIELDS[name])

    def _password_stored(self) -> bool:
        """Asked of the database: decrypting is not needed (and fails after a change of the secrets key)."""
        return bool(self.instance.pk) and Repository.objects.filter(pk=self.instance.pk).exclude(password="").exists()

    def clean(self) -> dict:
        data = super().clean()
        kind = data.get("kind")
        if data.get("passphrase") != data.get("passphrase_confirm") and not self.fields["passphrase"].disabled:
            self.add_error("passphrase_confirm", "The two passphrases differ: type them again.")
        options = {name: data.get(name) for name, only in self.OPTION_FIELDS.items() if only == kind}
        values = {**data, "options": {k: v for k, v in options.items() if v not in ("", None)}}
        if self.instance.pk and self.instance.initialized_at:
            values.pop("passphrase", None)
        for name, sentence in repository_problems(values, password_stored=self._password_stored(),
                                                  instance=self.instance).items():
            if name in self.fields and name not in self.errors:
                self.add_error(name, sentence)
        return data

    def save(self, commit: bool = True) -> Repository:
        repository = super().save(commit=False)
        data = self.cleaned_data
        options = {k: v for k, v in (repository.options or {}).items() if k not in self.OPTION_FIELDS}
        for name, only in self.OPTION_FIELDS.items():
            value = data.get(name)
            if only == repository.kind and value not in ("", None):
                options[name] = value
        if repository.kind == KIND.FTPS:
            options["tls_verify"] = bool(data.get("tls_verify"))
        repository.options = options
        if repository.kind not in NETWORK_KINDS:
            repository.host, repository.port = "", None
        if repository.kind != KIND.SMB:
            repository.share = ""
        if repository.kind not in LOGIN_KINDS:
            repository.username, repository.password = "", ""
        elif data.get("password"):
            repository.password = data["password"]
        if data.get("passphrase") and not self.fields["passphrase"].disabled:
            repository.passphrase = data["passphrase"]
        if commit:
            repository.save()
        return repository
