"""The network side of lab appliances: /30 slots of 10.231.0.0/16, namespaces and veth pairs.

Slot n is the /30 starting at 10.231.0.0 + 4n: this machine takes `.1` (host side of the veth),
the appliance `.2` (inside its namespace). So a lab appliance's address is always 10.231.x.y with
y % 4 == 2. Nothing is routed or forwarded: traffic only flows between this machine and each
namespace over its own veth.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import subprocess
from pathlib import Path

SUBNET = ipaddress.ip_network("10.231.0.0/16")
SLOTS = SUBNET.num_addresses // 4
LOCK_FILE = "/run/vafleet-lab-alloc.lock"
ADDRESS_RULE = ("Lab appliances use addresses 10.231.x.y where y % 4 == 2 (e.g. 10.231.0.2, 10.231.0.6, "
                "10.231.1.10): each one is the appliance side of its own /30, whose .1 is this machine")


class LabHostError(RuntimeError):
    """A lab appliance could not be created, started or removed; the message says why and what to do."""


def run(argv: list[str], stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=30)
    if check and proc.returncode != 0:
        raise LabHostError(f"`{' '.join(argv[:4])}` failed (exit {proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    return proc


def addresses(slot: int) -> tuple[str, str]:
    """(this machine's address, the appliance's address) of a slot."""
    base = SUBNET.network_address + 4 * slot
    return str(base + 1), str(base + 2)


def slot_of(address: str) -> int:
    """The slot whose appliance side is `address`; LabHostError with the rule otherwise."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise LabHostError(f"{address!r} is not an IPv4 address. {ADDRESS_RULE}.") from None
    if ip.version != 4 or ip not in SUBNET or int(ip) % 4 != 2:
        raise LabHostError(f"{address} cannot be a lab appliance's address. {ADDRESS_RULE}; "
                           "or leave the address empty for an automatic one.")
    return (int(ip) - int(SUBNET.network_address)) // 4


@contextlib.contextmanager
def alloc_lock():
    """Machine-wide: slots are chosen and their addresses configured under it, so labs of several var
    directories (parallel test runs) never pick the same /30."""
    with open(LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _used_slots(root: Path) -> dict[int, str]:
    used = {}
    for state in root.glob("*/state.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            used[json.loads(state.read_text())["slot"]] = state.parent.name
    return used


def _machine_addresses() -> str:
    return run(["ip", "-o", "-4", "addr"], check=False).stdout.decode()


def host_address_in_use(slot: int) -> bool:
    """Does an interface of this machine already carry the slot's `.1` (another lab, another var dir)?"""
    return f" {addresses(slot)[0]}/" in _machine_addresses()


def take_slot(root: Path, address: str | None = None) -> int:
    """A free slot (call under `alloc_lock`, then `up` it before leaving): the first free one, or the one
    of a static `address`."""
    used = _used_slots(root)
    if address is not None:
        slot = slot_of(address)
        if slot in used:
            raise LabHostError(f"{address} is already used by lab appliance {used[slot]}: pick another address "
                               "or leave it empty for an automatic one.")
        if host_address_in_use(slot):
            raise LabHostError(f"{address} is already used on this machine ({addresses(slot)[0]} is configured on "
                               "an interface): pick another address or leave it empty for an automatic one.")
        return slot
    taken = _machine_addresses()
    for slot in range(SLOTS):
        if slot not in used and f" {addresses(slot)[0]}/" not in taken:
            return slot
    raise LabHostError("No free lab address in 10.231.0.0/16: remove unused lab appliances.")


def up(namespace: str, veth: str, slot: int) -> None:
    """Create the namespace and the veth pair, with the slot's addresses, both ends up."""
    host_addr, va_addr = addresses(slot)
    run(["ip", "netns", "add", namespace])
    run(["ip", "link", "add", veth + "h", "type", "veth", "peer", "name", veth + "v"])
    run(["ip", "link", "set", veth + "v", "netns", namespace])
    run(["ip", "addr", "add", f"{host_addr}/30", "dev", veth + "h"])
    run(["ip", "link", "set", veth + "h", "up"])
    for argv in (["ip", "addr", "add", f"{va_addr}/30", "dev", veth + "v"], ["ip", "link", "set", veth + "v", "up"],
                 ["ip", "link", "set", "lo", "up"],
                 # The rest of the lab (this machine's other lab addresses, where lab targets listen) via this
                 # machine; nothing outside 10.231.0.0/16 is reachable from a lab appliance.
                 ["ip", "route", "add", str(SUBNET), "via", host_addr]):
        run(["ip", "netns", "exec", namespace, *argv])


def namespace_exists(namespace: str) -> bool:
    return Path(f"/run/netns/{namespace}").exists()


def is_up(namespace: str, veth: str, slot: int) -> bool:
    """Are the namespace and the host side of the veth there, with the slot's address?"""
    if not namespace_exists(namespace):
        return False
    shown = run(["ip", "-o", "-4", "addr", "show", "dev", veth + "h"], check=False)
    return shown.returncode == 0 and f" {addresses(slot)[0]}/" in shown.stdout.decode()


def namespace_pids(namespace: str) -> list[int]:
    out = run(["ip", "netns", "pids", namespace], check=False).stdout.decode()
    return [int(text) for text in out.split() if text.isdigit()]


def down(namespace: str, veth: str) -> None:
    """Delete the namespace and the veth pair (call once nothing runs in the namespace); idempotent."""
    if namespace_exists(namespace):
        run(["ip", "netns", "del", namespace], check=False)
    run(["ip", "link", "del", veth + "h"], check=False)
