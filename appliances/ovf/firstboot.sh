#!/bin/sh
# VA Fleet appliance, first boot: apply the vApp properties vSphere delivers as guestinfo.ovfEnv.
#
# Runs once (as root, from a oneshot unit with ConditionPathExists=!/var/lib/vafleet/firstboot.done):
# host name, network (systemd-networkd, static or DHCP, with DNS), root and user passwords from
# SHA-512 crypt hashes (the user is created when missing), fresh SSH host keys, sshd enabled and
# started, then the done-marker.
#
# VAFLEET_ROOT=/some/dir applies everything to files under that directory instead of /: the same
# code edits etc/hostname, etc/systemd/network, etc/passwd, etc/shadow, etc/group and the
# systemd "wants" links there, and the commands that act on the running system (hostname,
# systemctl start/restart, networkctl) are skipped. vmtoolsd is found on PATH.
set -eu

ROOT="${VAFLEET_ROOT:-}"
ROOT="${ROOT%/}"
STATE_DIR="$ROOT/var/lib/vafleet"
MARKER="$STATE_DIR/firstboot.done"
NETWORK_FILE="$ROOT/etc/systemd/network/10-vafleet.network"
WANTS="$ROOT/etc/systemd/system/multi-user.target.wants"

say() { printf 'vafleet-firstboot: %s\n' "$*"; }
die() { printf 'vafleet-firstboot: %s\n' "$*" >&2; exit 1; }
live() { [ -z "$ROOT" ]; }

if [ -e "$MARKER" ]; then
    say "already configured ($(cat "$MARKER")); nothing to do"
    exit 0
fi

ENV_XML=$(vmtoolsd --cmd "info-get guestinfo.ovfEnv" 2>/dev/null) || ENV_XML=""
[ -n "$ENV_XML" ] || die "no OVF environment in guestinfo.ovfEnv: deploy the appliance from its OVF package with vApp options on"

# key=value per <Property oe:key=".." oe:value=".."/>, attributes in any order.
PROPS=$(printf '%s\n' "$ENV_XML" | awk 'BEGIN { RS = "<" }
    /^Property[ \t\r\n]/ {
        key = ""; value = ""
        if (match($0, /oe:key="[^"]*"/)) key = substr($0, RSTART + 8, RLENGTH - 9)
        if (match($0, /oe:value="[^"]*"/)) value = substr($0, RSTART + 10, RLENGTH - 11)
        if (key != "") print key "=" value
    }')

unescape() { sed -e 's/&lt;/</g' -e 's/&gt;/>/g' -e 's/&quot;/"/g' -e "s/&apos;/'/g" -e 's/&#10;/ /g' -e 's/&amp;/\&/g'; }
prop() {
    printf '%s\n' "$PROPS" | awk -v k="$1" 'index($0, k "=") == 1 { print substr($0, length(k) + 2); exit }' | unescape
}

HOSTNAME_VALUE=$(prop vafleet.hostname)
ADDRESSING=$(prop vafleet.addressing)
ADDRESS=$(prop vafleet.address)
PREFIX=$(prop vafleet.prefix)
GATEWAY=$(prop vafleet.gateway)
DNS=$(prop vafleet.dns)
ROOT_HASH=$(prop vafleet.root_password_hash)
USER_NAME=$(prop vafleet.user_name)
USER_HASH=$(prop vafleet.user_password_hash)
SSH_ENABLE=$(prop vafleet.ssh_enable)
: "${ADDRESSING:=dhcp}" "${USER_NAME:=vauser}" "${SSH_ENABLE:=true}"

# -- validate everything before changing anything -------------------------------------------
printf '%s' "$HOSTNAME_VALUE" | grep -Eq '^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$' \
    || die "vafleet.hostname '$HOSTNAME_VALUE' is not a valid host name"
printf '%s' "$USER_NAME" | grep -Eq '^[a-z_][a-z0-9_-]{0,30}$' && [ "$USER_NAME" != root ] \
    || die "vafleet.user_name '$USER_NAME' is not a valid user name"
for hash in "$ROOT_HASH" "$USER_HASH"; do
    printf '%s' "$hash" | grep -Eq '^\$6\$[^:$]*\$[./A-Za-z0-9]+$' \
        || die "a password property is not a SHA-512 crypt hash (\$6\$...): refusing to set it"
done
IPV4='^([0-9]{1,3}\.){3}[0-9]{1,3}$'
case "$ADDRESSING" in
    static)
        printf '%s' "$ADDRESS" | grep -Eq "$IPV4" || die "vafleet.address '$ADDRESS' is not an IPv4 address"
        printf '%s' "$PREFIX" | grep -Eq '^[0-9]{1,2}$' && [ "$PREFIX" -le 32 ] \
            || die "vafleet.prefix '$PREFIX' is not a prefix length (0-32)"
        [ -z "$GATEWAY" ] || printf '%s' "$GATEWAY" | grep -Eq "$IPV4" \
            || die "vafleet.gateway '$GATEWAY' is not an IPv4 address" ;;
    dhcp) ;;
    *) die "vafleet.addressing '$ADDRESSING' is neither static nor dhcp" ;;
esac
DNS_LIST=$(printf '%s' "$DNS" | tr ', ' '\n\n' | sed '/^$/d')
for server in $DNS_LIST; do
    printf '%s' "$server" | grep -Eq '^[0-9A-Fa-f:.]+$' || die "vafleet.dns entry '$server' is not an address"
done

# -- host name ----------------------------------------------------------------------------
mkdir -p "$ROOT/etc"
printf '%s\n' "$HOSTNAME_VALUE" > "$ROOT/etc/hostname"
{
    printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$HOSTNAME_VALUE"
    printf '::1\tlocalhost ip6-localhost ip6-loopback\n'
} > "$ROOT/etc/hosts"
if live; then hostname "$HOSTNAME_VALUE"; fi
say "host name $HOSTNAME_VALUE"

# -- network ------------------------------------------------------------------------------
mkdir -p "$(dirname "$NETWORK_FILE")"
{
    printf '[Match]\nName=en* eth*\n\n[Network]\n'
    if [ "$ADDRESSING" = static ]; then
        printf 'Address=%s/%s\n' "$ADDRESS" "$PREFIX"
        [ -z "$GATEWAY" ] || printf 'Gateway=%s\n' "$GATEWAY"
    else
        printf 'DHCP=yes\n'
    fi
    for server in $DNS_LIST; do printf 'DNS=%s\n' "$server"; done
} > "$NETWORK_FILE.tmp"
mv "$NETWORK_FILE.tmp" "$NETWORK_FILE"
say "network: $ADDRESSING${ADDRESS:+ $ADDRESS/$PREFIX}"

enable_unit() { # the link `systemctl enable` makes for a WantedBy=multi-user.target unit
    mkdir -p "$WANTS"
    ln -sfn "/lib/systemd/system/$1" "$WANTS/$1"
}
enable_unit systemd-networkd.service
enable_unit systemd-resolved.service
if live; then systemctl daemon-reload; systemctl restart systemd-networkd systemd-resolved; fi

# -- accounts -----------------------------------------------------------------------------
PASSWD="$ROOT/etc/passwd"; SHADOW="$ROOT/etc/shadow"; GROUP="$ROOT/etc/group"
touch "$PASSWD" "$SHADOW" "$GROUP"
TODAY=$(( $(date +%s) / 86400 ))

if ! awk -F: -v u="$USER_NAME" '$1 == u { found = 1 } END { exit !found }' "$PASSWD"; then
    uid=$(awk -F: '$3 >= 1000 && $3 < 60000 && $3 > max { max = $3 } END { print (max ? max + 1 : 1000) }' \
        "$PASSWD" "$GROUP")
    printf '%s:x:%s:%s::/home/%s:/bin/bash\n' "$USER_NAME" "$uid" "$uid" "$USER_NAME" >> "$PASSWD"
    awk -F: -v u="$USER_NAME" '$1 == u { found = 1 } END { exit !found }' "$GROUP" \
        || printf '%s:x:%s:\n' "$USER_NAME" "$uid" >> "$GROUP"
    mkdir -p "$ROOT/home/$USER_NAME"
    if [ -d "$ROOT/etc/skel" ]; then cp -a "$ROOT/etc/skel/." "$ROOT/home/$USER_NAME/"; fi
    chmod 750 "$ROOT/home/$USER_NAME"
    chown -R "$uid:$uid" "$ROOT/home/$USER_NAME" 2>/dev/null || ! live
    say "created user $USER_NAME (uid $uid)"
fi

# Rewrite shadow with both hashes (entries added when missing), then replace it in one rename.
awk -F: -v OFS=: -v today="$TODAY" -v u="$USER_NAME" -v rh="$ROOT_HASH" -v uh="$USER_HASH" '
    $1 == "root" { $2 = rh; $3 = today; seen_root = 1 }
    $1 == u { $2 = uh; $3 = today; seen_user = 1 }
    { print }
    END {
        if (!seen_root) print "root", rh, today, 0, 99999, 7, "", "", ""
        if (!seen_user) print u, uh, today, 0, 99999, 7, "", "", ""
    }' "$SHADOW" > "$SHADOW.vafleet-new"
chmod 640 "$SHADOW.vafleet-new"
chgrp shadow "$SHADOW.vafleet-new" 2>/dev/null || true
mv "$SHADOW.vafleet-new" "$SHADOW"
say "passwords set for root and $USER_NAME"

# -- SSH ----------------------------------------------------------------------------------
case "$SSH_ENABLE" in
    [Tt]rue|1|[Yy]es) SSH_ON=1 ;;
    *) SSH_ON=0 ;;
esac
if [ "$SSH_ON" = 1 ]; then
    mkdir -p "$ROOT/etc/ssh/sshd_config.d"
    # Every appliance gets its own host keys, never the image's.
    rm -f "$ROOT"/etc/ssh/ssh_host_*
    if live; then ssh-keygen -A; else ssh-keygen -A -f "$ROOT"; fi
    # The server logs in once with the root password to install its key (bootstrap).
    printf 'PermitRootLogin yes\nPasswordAuthentication yes\n' > "$ROOT/etc/ssh/sshd_config.d/10-vafleet.conf"
    enable_unit ssh.service
    if live; then systemctl restart ssh.service; fi
    say "sshd enabled"
else
    rm -f "$WANTS/ssh.service"
    if live; then systemctl disable --now ssh.service || true; fi
    say "sshd left disabled (vafleet.ssh_enable=$SSH_ENABLE)"
fi

mkdir -p "$STATE_DIR"
date -u '+%Y-%m-%dT%H:%M:%SZ' > "$MARKER"
say "first boot done"
