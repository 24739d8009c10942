#!/usr/bin/env bash
# The storage servers the target tests start on loopback (OpenSSH, vsftpd, Samba, NFS-Ganesha).
# Installing them starts no daemon here; ./vafleet test installs them with the rest of its list.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/system-packages.sh" openssh-server vsftpd samba nfs-ganesha nfs-ganesha-vfs openssl
