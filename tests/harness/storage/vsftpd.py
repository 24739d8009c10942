"""vsftpd serving plain FTP and explicit FTPS on one free loopback port (FTP/FTPS targets)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from engines.targets.base import TargetSpec
from tests.harness.storage.base import StorageServer
from tests.harness.storage.process import (
    HOST,
    Daemon,
    ensure_user,
    free_port,
    free_port_range,
    mount_tmpfs,
    require_binary,
    require_root,
    scratch_dir,
)

USER = "vafftp"
PASSWORD = "Ftp-pass-7"


class FtpServer(StorageServer):
    cert: Path | None = None

    def spec(self, folder: str, tls: bool = False, **options) -> TargetSpec:
        if tls:
            options.setdefault("ca_file", str(self.cert))
        return TargetSpec(type="ftps" if tls else "ftp", path=folder, host=HOST, port=self.port,
                          username=self.username, password=self.password, options=options)

    def small_spec(self, folder: str, **options) -> TargetSpec:
        return self.spec(f"small/{folder}", **options)


def start_vsftpd() -> FtpServer:
    require_root()
    vsftpd = require_binary("/usr/sbin/vsftpd", "vsftpd")
    require_binary("openssl", "openssl")
    # PAM (pam_shells) refuses users whose shell is not in /etc/shells.
    user = ensure_user(USER, PASSWORD, login_shell="/bin/bash")
    root = scratch_dir("vsftpd")
    data, empty = root / "data", root / "empty"
    data.mkdir()
    empty.mkdir()
    os.chown(data, user.pw_uid, user.pw_gid)
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=localhost",
                    "-addext", f"subjectAltName=IP:{HOST},DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    server = FtpServer(type="ftp", root=root, data_dir=data, port=free_port(), username=USER, password=PASSWORD)
    server.cert = cert
    small = data / "small"
    if mount_tmpfs(small, "8m", user.pw_uid, user.pw_gid):
        server.small_dir = small
        server.mounts.append(small)
    pasv_min, pasv_max = free_port_range(40)
    config = root / "vsftpd.conf"
    # require_ssl_reuse=NO: ftplib does not reuse the TLS session on data connections.
    config.write_text(f"""\
listen=YES
listen_ipv6=NO
listen_address={HOST}
listen_port={server.port}
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=YES
local_umask=022
local_root={data}
pam_service_name=vsftpd
pasv_enable=YES
pasv_address={HOST}
pasv_min_port={pasv_min}
pasv_max_port={pasv_max}
port_enable=YES
secure_chroot_dir={empty}
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
max_clients=64
delay_failed_login=0
max_per_ip=64
xferlog_enable=YES
vsftpd_log_file={root / "vsftpd.log"}
dual_log_enable=YES
xferlog_file={root / "xferlog"}
ssl_enable=YES
rsa_cert_file={cert}
rsa_private_key_file={key}
allow_anon_ssl=NO
force_local_data_ssl=NO
force_local_logins_ssl=NO
require_ssl_reuse=NO
ssl_ciphers=HIGH
""")
    server.daemon = Daemon("vsftpd", [vsftpd, str(config)], root / "vsftpd.stdout", server.port)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server
