"""OpenSSH sshd with its own config, host key and user on a free loopback port (SFTP target)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from engines.targets.base import TargetSpec
from tests.harness.storage.base import StorageServer
from tests.harness.storage.process import (
    HOST,
    Daemon,
    ServerUnavailable,
    ensure_user,
    free_port,
    mount_tmpfs,
    require_binary,
    require_root,
    scratch_dir,
)

USER = "vafsftp"
PASSWORD = "Sftp-pass-7"


class SshServer(StorageServer):
    def spec(self, folder: str, **options) -> TargetSpec:
        options.setdefault("private_key", str(self.root / "client_ed25519"))
        return TargetSpec(type="sftp", path=str(self.data_dir / folder), host=HOST, port=self.port,
                          username=self.username, options=options)

    def small_spec(self, folder: str, **options) -> TargetSpec:
        spec = self.spec(folder, **options)
        spec.path = str(self.small_dir / folder)
        return spec


def start_sshd(listen: tuple[str, ...] = ()) -> SshServer:
    """An SFTP server on loopback; `listen` adds addresses (e.g. a lab appliance's side of its veth)."""
    require_root()
    sshd = require_binary("/usr/sbin/sshd", "openssh-server")
    require_binary("ssh-keygen", "openssh-client")
    user = ensure_user(USER, PASSWORD, login_shell="/bin/bash")
    root = scratch_dir("sshd")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory, mandatory
    for key in ("host_ed25519", "client_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / key)], check=True)
    keys = root / "authorized_keys"
    keys.write_text((root / "client_ed25519.pub").read_text())
    os.chown(keys, user.pw_uid, user.pw_gid)
    os.chmod(keys, 0o600)
    data = root / "data"
    data.mkdir()
    os.chown(data, user.pw_uid, user.pw_gid)
    server = SshServer(type="sftp", root=root, data_dir=data, port=free_port(), username=USER, password=PASSWORD)
    small = root / "small"
    if mount_tmpfs(small, "8m", user.pw_uid, user.pw_gid):
        server.small_dir = small
        server.mounts.append(small)
    config = root / "sshd_config"
    extra = "".join(f"ListenAddress {address}\n" for address in listen)
    config.write_text(f"""\
Port {server.port}
ListenAddress {HOST}
{extra}HostKey {root / "host_ed25519"}
PidFile {root / "sshd.pid"}
UsePAM no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile {keys}
PermitRootLogin no
AllowUsers {USER}
StrictModes no
MaxStartups 64:30:128
MaxSessions 64
Subsystem sftp internal-sftp
LogLevel INFO
""")
    check = subprocess.run([sshd, "-t", "-f", str(config)], capture_output=True, text=True)
    if check.returncode:
        raise ServerUnavailable(f"sshd rejected its test config: {check.stderr.strip()}")
    server.daemon = Daemon("sshd", [sshd, "-D", "-e", "-f", str(config)], root / "sshd.log", server.port)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server
