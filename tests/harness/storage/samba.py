"""Samba smbd with its own config, state and user database on a free loopback port (SMB target)."""

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

USER = "vafsmb"
PASSWORD = "Smb-pass-7"
SHARE = "backup"
SMALL_SHARE = "small"


class SambaServer(StorageServer):
    def spec(self, folder: str, share: str = SHARE, **options) -> TargetSpec:
        options.setdefault("share", share)
        return TargetSpec(type="smb", path=folder, host=HOST, port=self.port, username=self.username,
                          password=self.password, options=options)

    def small_spec(self, folder: str, **options) -> TargetSpec:
        return self.spec(folder, share=SMALL_SHARE, **options)


def _share(name: str, path: Path) -> str:
    # acl allow execute always: smbclient opens a rename destination with FILE_EXECUTE, which
    # Samba otherwise maps to the x bit and denies, so replace() onto an existing file fails.
    return f"""
[{name}]
    path = {path}
    read only = no
    valid users = {USER}
    create mask = 0644
    directory mask = 0755
    acl allow execute always = yes
"""


def start_smbd() -> SambaServer:
    require_root()
    smbd = require_binary("/usr/sbin/smbd", "samba")
    smbpasswd = require_binary("smbpasswd", "samba")
    user = ensure_user(USER, None)  # the Unix user must exist before smbpasswd -a
    root = scratch_dir("samba")
    for name in ("share", "state", "cache", "lock", "pid", "private", "log", "ncalrpc"):
        (root / name).mkdir()
    data = root / "share"
    os.chown(data, user.pw_uid, user.pw_gid)
    server = SambaServer(type="smb", root=root, data_dir=data, port=free_port(), username=USER, password=PASSWORD)
    shares = _share(SHARE, data)
    small = root / "small"
    if mount_tmpfs(small, "8m", user.pw_uid, user.pw_gid):
        server.small_dir = small
        server.mounts.append(small)
        shares += _share(SMALL_SHARE, small)
    config = root / "smb.conf"
    config.write_text(f"""\
[global]
    server role = standalone server
    workgroup = WORKGROUP
    netbios name = VAFTESTSMB
    interfaces = lo
    bind interfaces only = yes
    smb ports = {server.port}
    disable netbios = yes
    server min protocol = SMB2_10
    map to guest = never
    passdb backend = tdbsam:{root / "private" / "passdb.tdb"}
    private dir = {root / "private"}
    state directory = {root / "state"}
    cache directory = {root / "cache"}
    lock directory = {root / "lock"}
    pid directory = {root / "pid"}
    ncalrpc dir = {root / "ncalrpc"}
    log file = {root / "log" / "log.%m"}
    log level = 1
    max log size = 0
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes
    server services = -nbt
    usershare max shares = 0
{shares}""")
    added = subprocess.run([smbpasswd, "-c", str(config), "-s", "-a", USER], input=f"{PASSWORD}\n{PASSWORD}\n",
                           text=True, capture_output=True)
    if added.returncode:
        raise ServerUnavailable(f"smbpasswd could not add {USER}: {added.stderr.strip() or added.stdout.strip()}")
    # Never --no-process-group: smbd signals its whole process group when it stops; without the
    # flag it becomes the leader of a new session itself, so the caller's group is never hit.
    server.daemon = Daemon("smbd", [smbd, "--foreground", "-s", str(config), "--debug-stdout"],
                           root / "smbd.stdout", server.port, new_session=False)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server
