"""Portal form of a backup repository, and the rules of a repository's settings that the API shares.

The password and the passphrase are write-only: never rendered back, blank on edit keeps the stored
one. The passphrase of an initialised repository cannot be changed here (the repository's keys are
wrapped with it); before initialisation it can, with its confirmation.
"""

from __future__ import annotations

import re

from django import forms
from django.core.paginator import Paginator
from django.db.models import Q

from inventory.forms import css_class
from jobs.models import BackupJob, Repository

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


# --- Backup jobs -------------------------------------------------------------------------------------------

MAX_PARALLEL = 64
COMPRESSION_LEVELS = (1, 22)  # zstd
SCHEDULE_HELP = ("Five cron fields (minute hour day month weekday), e.g. 0 2 * * * for every day at 02:00. "
                 "Empty: the job runs only when started by hand.")


def schedule_problem(schedule: str | None) -> str:
    """A sentence when `schedule` is not a usable cron expression ('' when it is, or when it is empty)."""
    from croniter import croniter

    schedule = (schedule or "").strip()
    if not schedule:
        return ""
    fields = schedule.split()
    if (schedule.startswith("@") and croniter.is_valid(schedule)) or (len(fields) == 5 and croniter.is_valid(schedule)):
        return ""
    return (f"“{schedule}” is not a cron expression: give five fields (minute hour day month weekday), e.g. "
            "0 2 * * * for every day at 02:00, or leave the schedule empty to run the job by hand only.")


def next_run(schedule: str | None, after=None):
    """When a cron schedule fires next (aware datetime in the server's time zone), None without a schedule."""
    from croniter import croniter
    from django.utils import timezone

    if not schedule or schedule_problem(schedule):
        return None
    start = timezone.localtime(after or timezone.now())
    return croniter(schedule.strip(), start).get_next(type(start))


def clean_rules(rules) -> tuple[dict, dict[str, str]]:
    """Rules in their stored shape {"hosts": [ids], "folders": [paths], "name": glob} and sentences per rule."""
    from inventory.models import Host

    problems: dict[str, str] = {}
    if rules in (None, ""):
        rules = {}
    if not isinstance(rules, dict):
        return {}, {"rules": 'Give the rules as an object, e.g. {"hosts": [3], "folders": ["prod"], "name": "web-*"}.'}
    unknown = sorted(set(rules) - {"hosts", "folders", "name"})
    if unknown:
        problems["rules"] = (f"Unknown rule {', '.join(unknown)}: a job selects VMs by hosts (ids), folders "
                             "(paths) and name (a glob such as web-*).")
    cleaned: dict = {}
    hosts = rules.get("hosts") or []
    if not isinstance(hosts, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in hosts):
        problems["hosts"] = "Give the hosts as a list of host ids, e.g. [3, 4]."
    elif hosts:
        found = set(Host.objects.filter(pk__in=hosts).values_list("pk", flat=True))
        missing = [str(h) for h in hosts if h not in found]
        if missing:
            problems["hosts"] = (f"There is no host with id {', '.join(missing)}: choose hosts from "
                                 "/api/inventory/hosts/.")
        cleaned["hosts"] = sorted(set(hosts))
    folders = rules.get("folders") or []
    if isinstance(folders, str):
        folders = re.split(r"[\n,]", folders)
    if not isinstance(folders, list) or not all(isinstance(f, str) for f in folders):
        problems["folders"] = 'Give the folders as a list of paths, e.g. ["prod", "dc1/web"].'
    else:
        folders = [f.strip().strip("/") for f in folders if f.strip().strip("/")]
        if folders:
            cleaned["folders"] = list(dict.fromkeys(folders))
    name = rules.get("name") or ""
    if not isinstance(name, str):
        problems["name"] = "Give the name rule as a glob, e.g. web-* (* any characters, ? one character)."
    elif name.strip():
        cleaned["name"] = name.strip()
    return cleaned, problems


def job_problems(values: dict) -> dict[str, str]:
    """Sentences per field for a backup job's settings (`values`: the model's fields, `vms` a list, `rules` clean)."""
    problems: dict[str, str] = {}
    sentence = schedule_problem(values.get("schedule"))
    if sentence:
        problems["schedule"] = sentence
    if values.get("keep_last") is not None and values["keep_last"] < 1:
        problems["keep_last"] = "Keep at least the last restore point (1 or more): otherwise a backup deletes itself."
    parallel = values.get("max_parallel")
    if parallel is not None and not 1 <= parallel <= MAX_PARALLEL:
        problems["max_parallel"] = f"Back up between 1 and {MAX_PARALLEL} VMs of this job at once."
    level = values.get("compression_level")
    low, high = COMPRESSION_LEVELS
    if level is not None and not low <= level <= high:
        problems["compression_level"] = (f"The compression level must be between {low} (fastest) and {high} "
                                         "(smallest); 3 is a good default.")
    if "vms" in values and not values.get("vms") and not values.get("rules"):
        problems["vms"] = ("Choose at least one VM, or set a rule (hosts, folders or a name pattern) that "
                           "selects VMs.")
    return problems


VM_PAGE = 50
SELECT_ALL_LIMIT = 1000


def vm_matches(search: str, connection=None):
    """The VMs a job may choose whose name, host or folder contains `search`, on one connection if given."""
    from inventory.models import VirtualMachine

    vms = VirtualMachine.objects.filter(vanished_at=None, is_template=False)
    if connection and str(connection).isdigit():
        vms = vms.filter(connection_id=connection)
    search = (search or "").strip()
    if search:
        vms = vms.filter(Q(name__icontains=search) | Q(host__name__icontains=search) | Q(folder__icontains=search))
    return vms.order_by("name", "pk")


def vm_picker_page(search: str, connection, page, chosen) -> dict:
    """One page (at most VM_PAGE) of the picker's matches; two queries whatever the inventory's size."""
    paginator = Paginator(vm_matches(search, connection).select_related("host", "connection"), VM_PAGE)
    return {"page": paginator.get_page(page), "matches": paginator.count, "search": (search or "").strip(),
            "chosen_ids": {int(pk) for pk in chosen if str(pk).isdigit()}, "select_all_limit": SELECT_ALL_LIMIT}


class JobForm(forms.ModelForm):
    """A backup job: VMs chosen one by one (narrowed by connection) plus rules, schedule, retention, options."""

    connection = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="Every connection",
        help_text="Only narrows the lists of VMs and hosts below; a job may protect VMs of several connections.")
    rule_hosts = forms.ModelMultipleChoiceField(
        queryset=None, required=False, label="Every VM on these hosts",
        widget=forms.SelectMultiple(attrs={"size": 6}))
    rule_folders = forms.CharField(
        required=False, label="Every VM in these folders",
        help_text="Folder paths, one per line or separated by commas, e.g. prod; subfolders are included.",
        widget=forms.Textarea(attrs={"rows": 2}))
    rule_name = forms.CharField(required=False, max_length=200, label="Every VM whose name matches",
                                help_text="A pattern: * any characters, ? one character, e.g. web-*.")
    notify_on = forms.ChoiceField(choices=BackupJob.Notify.choices, required=False, initial=BackupJob.Notify.FAILURE,
                                  label="E-mail its recipients", help_text="When the addresses below hear of a run.")

    class Meta:
        model = BackupJob
        fields = ["name", "repository", "connection", "vms", "rule_hosts", "rule_folders", "rule_name", "schedule",
                  "keep_last", "keep_daily", "keep_weekly", "keep_monthly", "mode", "compression_level",
                  "use_cbt", "verify", "max_parallel", "throttle_mbps", "enabled",
                  "notify_on", "notify_emails"]
        labels = {"vms": "VMs", "keep_last": "Keep the last", "keep_daily": "Keep daily", "keep_weekly": "Keep weekly",
                  "keep_monthly": "Keep monthly", "mode": "Transport", "use_cbt": "Use changed block tracking",
                  "verify": "Verify every new restore point", "max_parallel": "VMs at once",
                  "throttle_mbps": "Read limit per VM (MB/s)",
                  "enabled": "Enabled (runs on its schedule)", "notify_emails": "Recipients"}
        help_texts = {"schedule": SCHEDULE_HELP,
                      "keep_last": "Restore points kept per VM, whatever their age.",
                      "keep_daily": "Also keep the newest point of this many days.",
                      "keep_weekly": "… of this many weeks.", "keep_monthly": "… of this many months.",
                      "compression_level": "zstd level, 1 (fastest) to 22 (smallest); 3 is a good default."}
        widgets = {"vms": forms.MultipleHiddenInput}  # chips of the VM picker; never every VM as a choice
        error_messages = {"name": {"unique": "A backup job with this name already exists: choose another name."}}

    def __init__(self, *args, connection=None, **kwargs):
        super().__init__(*args, **kwargs)
        from inventory.models import Connection, Host, VirtualMachine

        self.fields["connection"].queryset = Connection.objects.order_by("name")
        self.fields["repository"].queryset = Repository.objects.defer("password", "passphrase").order_by("name")
        vms = VirtualMachine.objects.filter(vanished_at=None, is_template=False).select_related("connection")
        hosts = Host.objects.filter(vanished_at=None).select_related("connection")
        rules = self.instance.rules or {}
        if self.instance.pk and not self.is_bound:
            self.fields["rule_hosts"].initial = rules.get("hosts", [])
            self.fields["rule_folders"].initial = "\n".join(rules.get("folders", []))
            self.fields["rule_name"].initial = rules.get("name", "")
        if connection is None and not self.is_bound and self.instance.pk:
            used = set(self.instance.vms.values_list("connection_id", flat=True))
            connection = used.pop() if len(used) == 1 else None
        if self.is_bound:
            connection = self.data.get("connection") or None
        if connection and str(connection).isdigit():
            self.fields["connection"].initial = int(connection)
            keep_hosts = self._chosen("rule_hosts")
            if not self.is_bound and self.instance.pk and "rule_hosts" not in self.initial:
                keep_hosts = rules.get("hosts", [])
            hosts = hosts.filter(Q(connection_id=connection) | Q(pk__in=keep_hosts))
        self.picker_connection = connection
        self.fields["vms"].queryset = vms  # validation looks up the posted ids only
        self.fields["vms"].help_text = "VMs chosen one by one: find them by name, host or folder."
        self._picker_action()
        self.fields["rule_hosts"].queryset = hosts.order_by("name", "pk")
        self.fields["rule_hosts"].label_from_instance = lambda host: f"{host.name} ({host.connection.name})"
        for field in self.fields.values():
            field.widget.attrs["class"] = css_class(field.widget)

    def clean_notify_on(self) -> str:
        return self.cleaned_data.get("notify_on") or self.instance.notify_on

    def clean_notify_emails(self) -> str:
        from jobs.notifications import address_problem, split_addresses

        value = self.cleaned_data.get("notify_emails") or ""
        if address_problem(value):
            raise forms.ValidationError(address_problem(value))
        return ", ".join(split_addresses(value))

    def _picker_action(self) -> None:
        """The VM picker's buttons without JavaScript (`narrow`): remove a chosen VM, or add every match."""
        action = str(self.data.get("narrow") or "") if self.is_bound and hasattr(self.data, "setlist") else ""
        if not (action.startswith("unchoose-") or action == "select-all"):
            return
        data, chosen = self.data.copy(), self.data.getlist("vms")
        if action == "select-all":
            matches = vm_matches(data.get("vm_q", ""), self.picker_connection).values_list("pk", flat=True)
            chosen += [str(pk) for pk in matches[:SELECT_ALL_LIMIT]]
        else:
            chosen = [pk for pk in chosen if pk != action.removeprefix("unchoose-")]
        data.setlist("vms", list(dict.fromkeys(chosen)))
        self.data = data

    def vm_picker(self) -> dict:
        """The picker's chips (the chosen VMs) and one page of the VMs matching its search."""
        from inventory.models import VirtualMachine

        chosen = self._chosen("vms")
        search = str(self.data.get("vm_q") or "") if self.is_bound else ""
        action = str(self.data.get("narrow") or "") if self.is_bound else ""
        page = action.removeprefix("page-") if action.startswith("page-") else 1
        chips = VirtualMachine.objects.filter(pk__in=chosen).only("pk", "name").order_by("name", "pk")
        return {"chosen_vms": chips, **vm_picker_page(search, self.picker_connection, page, chosen)}

    def _chosen(self, name: str) -> list[int]:
        """The ids chosen in this field (posted, or given as initial values): kept when the lists are narrowed."""
        if self.is_bound:
            values = self.data.getlist(name) if hasattr(self.data, "getlist") else self.data.get(name) or []
        else:
            values = self.initial.get(name) or []
        return [int(getattr(v, "pk", v)) for v in values if str(getattr(v, "pk", v)).isdigit()]

    def clean(self) -> dict:
        data = super().clean()
        rules, rule_problems = clean_rules({
            "hosts": [h.pk for h in data.get("rule_hosts") or []],
            "folders": data.get("rule_folders") or "",
            "name": data.get("rule_name") or "",
        })
        self.rules = rules
        fields = {"hosts": "rule_hosts", "folders": "rule_folders", "name": "rule_name"}
        problems = {fields.get(k, k): v for k, v in rule_problems.items()}
        values = {**data, "vms": list(data.get("vms") or []), "rules": rules}
        if "vms" in self.errors:
            values.pop("vms")
        problems.update(job_problems(values))
        for name, sentence in problems.items():
            if name in self.fields and name not in self.errors:
                self.add_error(name, sentence)
        return data

    def save(self, commit: bool = True) -> BackupJob:
        job = super().save(commit=False)
        job.rules = self.rules
        job.schedule = job.schedule.strip()
        if commit:
            job.save()
            self.save_m2m()
        return job


# --- Restores ----------------------------------------------------------------------------------------------


def restore_problems(destination: dict) -> dict[str, str]:
    """Sentences per field for a restore's destination; the same rules for the portal and the API.

    New VM: a name not used on the host's connection, a present host, a datastore that host mounts and
    optionally a network that host sees. Folder: an absolute path on a ready appliance.
    """
    from appliances.models import Appliance
    from inventory.models import Datastore, Host, Network, VirtualMachine

    problems: dict[str, str] = {}
    mode = destination.get("mode")
    appliance_id = destination.get("appliance")
    if appliance_id and not Appliance.objects.filter(pk=appliance_id, state=Appliance.State.READY).exists():
        problems["appliance"] = "This appliance is not ready: choose a ready one, or leave it empty to let VA Fleet " \
                                "choose."
    if mode == "folder":
        folder = str(destination.get("folder") or "").strip()
        if not folder:
            problems["folder"] = "Enter the folder on the appliance to write the disk images into, e.g. /srv/restores."
        elif not folder.startswith("/") or "/../" in f"{folder}/":
            problems["folder"] = "Give the folder on the appliance as an absolute path, e.g. /srv/restores."
        return problems
    if mode != "new_vm":
        problems["mode"] = "Choose how to restore: as a new VM (new_vm), or disk images into a folder (folder)."
        return problems
    name = str(destination.get("name") or "").strip()
    host = Host.objects.filter(pk=destination.get("host"), vanished_at=None).select_related(
        "connection").first() if str(destination.get("host") or "").isdigit() else None
    if not name:
        problems["name"] = "Enter the name of the new VM, e.g. the original name with -restored."
    elif len(name) > 80:
        problems["name"] = "Keep the VM's name to 80 characters or fewer."
    if host is None:
        problems["host"] = ("Choose the host to create the VM on." if not destination.get("host")
                            else "There is no such host (or it has vanished): choose one from the inventory.")
        return problems
    if name and VirtualMachine.objects.filter(connection_id=host.connection_id, name=name, vanished_at=None).exists():
        problems["name"] = f"A VM named {name} already exists on {host.connection.name}: choose another name."
    datastore_id = destination.get("datastore")
    if not datastore_id:
        problems["datastore"] = f"Choose a datastore that {host.name} mounts."
    else:
        datastore = Datastore.objects.filter(pk=datastore_id, vanished_at=None).first() if str(
            datastore_id).isdigit() else None
        if datastore is None:
            problems["datastore"] = "There is no such datastore (or it has vanished): choose one from the inventory."
        elif not datastore.hosts.filter(pk=host.pk).exists():
            problems["datastore"] = (f"Host {host.name} does not mount datastore {datastore.name}: choose a datastore "
                                     "the host mounts.")
        elif "appliance" not in problems:
            from jobs.restore import RestoreRefused, restore_appliance

            try:
                restore_appliance(None, {**destination, "datastore": datastore.pk})
            except RestoreRefused as exc:
                problems["datastore"] = str(exc)
    network_id = destination.get("network")
    if network_id not in (None, ""):
        network = Network.objects.filter(pk=network_id, vanished_at=None).first() if str(
            network_id).isdigit() else None
        if network is None:
            problems["network"] = "There is no such network (or it has vanished): choose one from the inventory."
        elif not network.hosts.filter(pk=host.pk).exists():
            problems["network"] = (f"Network {network.name} is not available on host {host.name}: choose a network "
                                   "the host sees, or none.")
    return problems


def _int(value) -> int | None:
    return int(value) if str(value or "").isdigit() else None


class RestoreForm(forms.Form):
    """The restore wizard's choices: what (whole VM, one disk, disk images), then where, then a summary.

    Every step posts every choice made so far (the other steps' fields as hidden inputs), so Back and
    plain POSTs without JavaScript keep them. The rules are the service's: `restore_problems` for a new VM
    or a folder, `jobs.restore.in_place_plan` for a restore over a VM's disks.
    """

    STEPS = {1: "What to restore", 2: "Where to restore it", 3: "Check and start"}
    WHAT = [("vm", "The whole VM"), ("disk", "One disk, over a disk of an existing VM"),
            ("images", "Disk images, into a folder on an appliance")]
    PLACES = [("new_vm", "As a new VM"), ("original", "To its original place, overwriting its disks")]
    VM_CHOICES_SHOWN = 50

    step = forms.IntegerField(widget=forms.HiddenInput, required=False)
    what = forms.ChoiceField(choices=WHAT, required=False, widget=forms.RadioSelect, label="Restore")
    place = forms.ChoiceField(choices=PLACES, required=False, widget=forms.RadioSelect, label="Where")
    name = forms.CharField(required=False, max_length=80, label="New VM name")
    host = forms.ModelChoiceField(queryset=None, required=False, empty_label="Choose a host", label="Host")
    datastore = forms.ModelChoiceField(queryset=None, required=False, empty_label="Choose a datastore",
                                       label="Datastore", help_text="Datastores the host mounts.")
    network = forms.ModelChoiceField(queryset=None, required=False, empty_label="No network", label="Network",
                                     help_text="Networks the host sees; the new VM's NIC is connected to it.")
    folder = forms.CharField(required=False, label="Folder on the appliance",
                             help_text="An absolute path, e.g. /srv/restores; one .img file per disk is written.")
    appliance = forms.ModelChoiceField(queryset=None, required=False, empty_label="Any suitable ready appliance",
                                       label="Appliance")
    disk = forms.ChoiceField(required=False, label="Disk of the restore point")
    vm_q = forms.CharField(required=False, max_length=200, label="Find the VM",
                           help_text="Part of its name, host or folder.")
    vm = forms.ModelChoiceField(queryset=None, required=False, empty_label="Choose a VM", label="VM to overwrite")
    target_disk = forms.TypedChoiceField(coerce=int, required=False, label="Disk of that VM to overwrite")
    confirm_name = forms.CharField(required=False, max_length=255, label="Type the VM's name to confirm")

    def __init__(self, *args, point=None, **kwargs):
        super().__init__(*args, **kwargs)
        from appliances.models import Appliance
        from inventory.models import Datastore, Host, Network, VirtualDisk, VirtualMachine

        self.point = point
        self.plan = None  # the in-place plan, once checked
        hosts = Host.objects.filter(vanished_at=None).select_related("connection").order_by("name")
        self.fields["host"].queryset = hosts
        self.fields["host"].label_from_instance = lambda h: f"{h.name} ({h.connection.name})"
        host_id = str(getattr(self.value_of("host"), "pk", self.value_of("host")) or "")
        datastores = Datastore.objects.filter(vanished_at=None).order_by("name")
        networks = Network.objects.filter(vanished_at=None).order_by("name")
        if host_id.isdigit():
            # What the host sees, and what was posted (so a wrong choice gets its sentence from the rules).
            posted = {name: self.data.get(name) if self.is_bound else None for name in ("datastore", "network")}
            datastores = datastores.filter(Q(hosts=host_id) | Q(pk=_int(posted["datastore"]))).distinct()
            networks = networks.filter(Q(hosts=host_id) | Q(pk=_int(posted["network"]))).distinct()
        elif not self.is_bound:
            datastores, networks = datastores.none(), networks.none()
        self.fields["datastore"].queryset = datastores
        from jobs.restore import writable_datastore_ids

        writable = writable_datastore_ids()
        self.fields["datastore"].label_from_instance = lambda d: "".join((
            d.name, f" ({d.free_bytes / 2**30:.0f} GiB free)" if d.free_bytes else "",
            "" if d.pk in writable else " (no ready appliance can write here)"))
        self.fields["network"].queryset = networks
        self.fields["appliance"].queryset = Appliance.objects.filter(state=Appliance.State.READY).order_by("name")
        self.fields["disk"].choices = [("", "Choose a disk")] + [
            (d["name"], f"{d['name']} ({int(d.get('size') or 0) / 2**20:,.0f} MiB)")
            for d in getattr(point, "disks", None) or []]
        targets = VirtualMachine.objects.filter(vanished_at=None, is_template=False)
        self.fields["vm"].queryset = targets  # validation looks up the posted id only
        self.fields["vm"].label_from_instance = lambda vm: f"{vm.name} ({vm.get_power_state_display().lower()})"
        vm_id = _int(getattr(self.value_of("vm"), "pk", self.value_of("vm")))
        search = str(self.value_of("vm_q") or "").strip()
        shown = targets.select_related("host").order_by("name", "pk")
        if search:
            shown = shown.filter(Q(name__icontains=search) | Q(host__name__icontains=search)
                                 | Q(folder__icontains=search))
        shown = list(shown[:self.VM_CHOICES_SHOWN])
        if vm_id and vm_id not in {vm.pk for vm in shown}:
            shown = [*targets.filter(pk=vm_id), *shown]
        self.fields["vm"].choices = [("", "Choose a VM"),
                                     *((vm.pk, self.fields["vm"].label_from_instance(vm)) for vm in shown)]
        disks = VirtualDisk.objects.filter(vm_id=vm_id, vanished_at=None).order_by("key") if vm_id else []
        self.fields["target_disk"].choices = [("", "Choose a disk")] + [
            (d.key, f"{d.label or d.key} (key {d.key}, {d.capacity_bytes / 2**20:,.0f} MiB) {d.file_name}")
            for d in disks]
        for name, field in self.fields.items():
            if name not in ("what", "place", "step"):
                field.widget.attrs["class"] = css_class(field.widget)

    def value_of(self, name: str):
        return self.data.get(name) if self.is_bound else self.initial.get(name)

    @property
    def chosen_step(self) -> int:
        value = _int(self.value_of("step"))
        return value if value in self.STEPS else 1

    def clean(self) -> dict:
        data = super().clean()
        relevant = self.step_fields(data, self.chosen_step)
        for name in [n for n in self.errors if n not in relevant and n != "__all__"]:
            del self._errors[name]  # a stale value of a step that does not apply
        if not data.get("what"):
            self.add_error("what", "Choose what to restore: the whole VM, one disk, or disk images.")
        elif self.chosen_step >= 2:
            self._check_place(data)
        return data

    def step_fields(self, data: dict, step: int) -> set[str]:
        names = {"step", "what"}
        if step >= 2:
            what, place = data.get("what"), data.get("place")
            if what == "vm":
                names |= {"place", "appliance"} | ({"confirm_name"} if place == "original" else
                                                   {"name", "host", "datastore", "network"})
            elif what == "disk":
                names |= {"disk", "vm_q", "vm", "target_disk", "confirm_name"}
            elif what == "images":
                names |= {"folder", "appliance"}
        return names

    def _check_place(self, data: dict) -> None:
        from jobs.restore import RestoreRefused, in_place_plan

        what = data["what"]
        if what == "vm" and not data.get("place"):
            self.add_error("place", "Choose where to restore the VM: as a new VM, or to its original place.")
            return
        if what == "images" or (what == "vm" and data.get("place") == "new_vm"):
            for name, sentence in restore_problems(self.destination(data)).items():
                if name in self.fields and name not in self.errors:
                    self.add_error(name, sentence)
            return
        if what == "disk":
            for name, sentence in (("disk", "Choose the disk of the restore point to restore."),
                                   ("vm", "Choose the VM whose disk is to be overwritten."),
                                   ("target_disk", "Choose the disk of that VM to overwrite.")):
                if data.get(name) in (None, "") and name not in self.errors:
                    self.add_error(name, sentence)
            if any(n in self.errors for n in ("disk", "vm", "target_disk")):
                return
        try:
            self.plan = in_place_plan(self.point, self.destination(data))
        except RestoreRefused as exc:
            self.add_error("place" if what == "vm" else "target_disk", str(exc))
            return
        typed = (data.get("confirm_name") or "").strip()
        if typed != self.plan.vm.name:
            self.add_error("confirm_name", f"Type the VM's name, {self.plan.vm.name}, exactly as shown to confirm "
                                           "that its disks are overwritten." if typed else
                           f"Type the VM's name, {self.plan.vm.name}, to confirm that its disks are overwritten.")

    def destination(self, data: dict) -> dict:
        """The destination as `jobs.services.start_restore` takes it."""
        def pk(value):
            return getattr(value, "pk", value)

        what, place = data.get("what"), data.get("place")
        if what == "images":
            destination = {"mode": "folder", "folder": (data.get("folder") or "").strip()}
        elif what == "disk":
            return {"mode": "disk", "disk": data.get("disk") or "", "vm": pk(data.get("vm")),
                    "target_disk_key": data.get("target_disk"), "confirm": True}
        elif place == "original":
            destination = {"mode": "original", "confirm": True}
        else:
            destination = {"mode": "new_vm", "name": (data.get("name") or "").strip(), "host": pk(data.get("host")),
                           "datastore": pk(data.get("datastore"))}
            if data.get("network"):
                destination["network"] = pk(data["network"])
        if data.get("appliance"):
            destination["appliance"] = pk(data["appliance"])
        return destination
