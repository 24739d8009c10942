"""NFS-Ganesha (VFS backend, NFSv4.0/4.1 only, no rpcbind) on a free loopback port (NFS target)."""

from __future__ import annotations

from pathlib import Path

from engines.targets.base import TargetSpec
from tests.harness.storage.base import StorageServer
from tests.harness.storage.process import (
    HOST,
    Daemon,
    free_port,
    mount_tmpfs,
    require_binary,
    require_root,
    scratch_dir,
)

EXPORT = "/export"
SMALL_EXPORT = "/small"


class GaneshaServer(StorageServer):
    def spec(self, folder: str, export: str = EXPORT, **options) -> TargetSpec:
        options.setdefault("export", export)
        return TargetSpec(type="nfs", path=folder, host=HOST, port=self.port, options=options)

    def small_spec(self, folder: str, **options) -> TargetSpec:
        return self.spec(folder, export=SMALL_EXPORT, **options)


def _export(export_id: int, path: Path, pseudo: str) -> str:
    return f"""
EXPORT {{
    Export_Id = {export_id};
    Path = {path};
    Pseudo = {pseudo};
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    Protocols = 4;
    Transports = TCP;
    FSAL {{ Name = VFS; }}
}}
"""


def start_ganesha() -> GaneshaServer:
    require_root()  # the VFS backend uses file handles, root only
    ganesha = require_binary("/usr/bin/ganesha.nfsd", "nfs-ganesha")
    require_binary("/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so", "nfs-ganesha-vfs")
    root = scratch_dir("ganesha")
    data = root / "export"
    data.mkdir()
    (root / "run").mkdir()
    server = GaneshaServer(type="nfs", root=root, data_dir=data, port=free_port())
    exports = _export(1, data, EXPORT)
    small = root / "small"
    if mount_tmpfs(small, "8m"):
        server.small_dir = small
        server.mounts.append(small)
        exports += _export(2, small, SMALL_EXPORT)
    config = root / "ganesha.conf"
    # Graceless: otherwise the first operations wait out a 90 s grace period and look hung.
    config.write_text(f"""\
NFS_CORE_PARAM {{
    Protocols = 4;
    NFS_Port = {server.port};
    Bind_addr = {HOST};
    Enable_UDP = false;
    Enable_NLM = false;
    Enable_RQUOTA = false;
}}
NFSV4 {{
    Graceless = true;
    Minor_Versions = 0, 1;
    RecoveryBackend = fs;
}}
LOG {{
    Default_Log_Level = EVENT;
}}
{exports}""")
    # -p: the default pid file directory /var/run/ganesha does not exist, which is fatal.
    args = [ganesha, "-F", "-f", str(config), "-L", str(root / "ganesha.log"), "-p", str(root / "run" / "ganesha.pid")]
    server.daemon = Daemon("ganesha.nfsd", args, root / "ganesha.log", server.port)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server
