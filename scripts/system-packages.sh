#!/usr/bin/env bash
# The Debian packages the test suite needs, in one place; installs those that are absent.
#   scripts/system-packages.sh            install the test suite's packages
#   scripts/system-packages.sh PKG...     install these packages instead
set -euo pipefail

TEST_PACKAGES=(
    golang-go                          # builds the vCenter simulator harness
    golang-github-vmware-govmomi-dev   # govmomi's simulator sources (offline build)
    chromium                           # browser tests (Playwright drives Debian's Chromium)
    postgresql                         # scale-out run: the database
    redis-server                       # scale-out run: channel layer and task broker
    openssh-server                     # appliances as real SSH hosts; the SFTP target
    iproute2                           # lab appliances live in network namespaces
    vsftpd                             # FTP and explicit FTPS target tests
    samba                              # SMB target tests (smbd, smbpasswd)
    nfs-ganesha                        # NFSv4.1 target tests (userspace server, no kernel nfsd)
    nfs-ganesha-vfs                    # ganesha's backend that exports a plain folder
    openssl                            # self-signed certificates (FTPS)
)

wanted=("$@")
[[ ${#wanted[@]} -gt 0 ]] || wanted=("${TEST_PACKAGES[@]}")

missing=()
for package in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
    echo "vafleet: these Debian packages are missing: ${missing[*]}; install them as root (apt-get install ${missing[*]}) and run again." >&2
    exit 1
fi
echo "==> Installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
