"""Real storage servers on loopback for the target tests: OpenSSH sshd (SFTP), vsftpd (FTP and
FTPS), Samba smbd (SMB) and NFS-Ganesha (NFSv4.1). Each runs from its own config under a scratch
folder, on free ports, with its own system user, and is always stopped.

    server = STARTERS["smb"]()
    try: ... open_target(server.spec("repo")) ...
    finally: server.stop()
"""

from __future__ import annotations

from collections.abc import Callable

from tests.harness.storage.base import StorageServer
from tests.harness.storage.ganesha import start_ganesha
from tests.harness.storage.process import ServerUnavailable
from tests.harness.storage.samba import start_smbd
from tests.harness.storage.sshd import start_sshd
from tests.harness.storage.vsftpd import start_vsftpd

STARTERS: dict[str, Callable[[], StorageServer]] = {
    "sftp": start_sshd,
    "ftp": start_vsftpd,
    "smb": start_smbd,
    "nfs": start_ganesha,
}

__all__ = ["STARTERS", "ServerUnavailable", "StorageServer"]
