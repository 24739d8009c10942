"""The appliance's first-boot script, run for real under a root prefix with a stand-in vmtoolsd.

Also: the OVF descriptor and the package it travels in.
"""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

import pytest

from appliances.ovf import FIRSTBOOT, NETWORK_NAME, PROPERTY_KEYS, build_package
from appliances.ovf.descriptor import OVF_NS, RASD_NS, TRANSPORT, descriptor_properties
from appliances.ovf.package import verify_manifest

ENV_NS = "http://schemas.dmtf.org/ovf/environment/1"


def ovf_environment(values: dict[str, str], vm_id: str = "vm-1042") -> str:
    """The document ESXi puts in guestinfo.ovfEnv for a VM with vApp options and the guestInfo transport."""
    props = "\n".join(f"         <Property oe:key={quoteattr(k)} oe:value={quoteattr(v)}/>" for k, v in values.items())
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Environment
     xmlns="{ENV_NS}"
     xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
     xmlns:oe="{ENV_NS}"
     xmlns:ve="http://www.vmware.com/schema/ovfenv"
     oe:id=""
     ve:vCenterId="{escape(vm_id)}">
   <PlatformSection>
      <Kind>VMware ESXi</Kind>
      <Version>8.0.2</Version>
      <Vendor>VMware, Inc.</Vendor>
      <Locale>en</Locale>
   </PlatformSection>
   <PropertySection>
{props}
   </PropertySection>
   <ve:EthernetAdapterSection>
      <ve:Adapter ve:mac="00:50:56:a1:2b:3c" ve:network="{escape(NETWORK_NAME)}" ve:unitNumber="7"/>
   </ve:EthernetAdapterSection>
</Environment>
"""


def crypt(password: str) -> str:
    return subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n", capture_output=True,
                          text=True, check=True).stdout.strip()


ROOT_HASH = crypt("Root-Secret-1")
USER_HASH = crypt("User-Secret-2")


def values(**overrides) -> dict[str, str]:
    base = {
        "vafleet.hostname": "va07", "vafleet.addressing": "static", "vafleet.address": "10.0.0.51",
        "vafleet.prefix": "24", "vafleet.gateway": "10.0.0.1", "vafleet.dns": "10.0.0.2,10.0.0.3",
        "vafleet.root_password_hash": ROOT_HASH, "vafleet.user_name": "operator1",
        "vafleet.user_password_hash": USER_HASH, "vafleet.ssh_enable": "True",
    }
    return {**base, **overrides}


@pytest.fixture
def guest(tmp_path):
    """An image root with the base accounts and the image's SSH host key, and a vmtoolsd on PATH."""
    root = tmp_path / "root"
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\nbuilder:x:1000:1000::/home/builder:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nshadow:x:42:\nbuilder:x:1000:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\nbuilder:!:19000:0:99999:7:::\n")
    (root / "etc/ssh/ssh_host_ed25519_key").write_text("THE IMAGE'S KEY\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "vmtoolsd"
    tool.write_text('#!/bin/sh\necho "$*" >> "$FAKE_TOOLS_LOG"\n'
                    '[ "$*" = "--cmd info-get guestinfo.ovfEnv" ] || exit 1\ncat "$FAKE_OVF_ENV"\n')
    tool.chmod(0o755)

    class Guest:
        def __init__(self):
            self.root, self.calls = root, tmp_path / "vmtoolsd.log"

        def run(self, env_values: dict[str, str] | str) -> subprocess.CompletedProcess:
            env_file = tmp_path / "ovfEnv.xml"
            env_file.write_text(env_values if isinstance(env_values, str) else ovf_environment(env_values))
            env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "VAFLEET_ROOT": str(root),
                   "FAKE_OVF_ENV": str(env_file), "FAKE_TOOLS_LOG": str(self.calls)}
            return subprocess.run(["sh", str(FIRSTBOOT)], env=env, capture_output=True, text=True, timeout=60)

        def read(self, path: str) -> str:
            return (root / path).read_text()

        def shadow(self) -> dict[str, list[str]]:
            return {line.split(":")[0]: line.split(":") for line in self.read("etc/shadow").splitlines()}

        def snapshot(self) -> dict[str, tuple[bytes, int]]:
            return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
                    for p in root.rglob("*") if p.is_file() and not p.is_symlink()}

    return Guest()


def test_static_first_boot_configures_everything(guest):
    result = guest.run(values())

    assert result.returncode == 0, result.stderr
    assert guest.read("etc/hostname") == "va07\n"
    assert "127.0.1.1\tva07" in guest.read("etc/hosts")
    network = guest.read("etc/systemd/network/10-vafleet.network")
    assert "Address=10.0.0.51/24\n" in network and "Gateway=10.0.0.1\n" in network
    assert "DNS=10.0.0.2\nDNS=10.0.0.3\n" in network and "DHCP" not in network
    shadow = guest.shadow()
    assert shadow["root"][1] == ROOT_HASH and shadow["operator1"][1] == USER_HASH
    assert shadow["builder"][1] == "!"  # other accounts untouched
    assert "operator1:x:1001:1001::/home/operator1:/bin/bash" in guest.read("etc/passwd").splitlines()
    assert "operator1:x:1001:" in guest.read("etc/group").splitlines()
    assert (guest.root / "home/operator1").is_dir()
    assert oct((guest.root / "etc/shadow").stat().st_mode & 0o777) == "0o640"
    wants = guest.root / "etc/systemd/system/multi-user.target.wants"
    assert os.readlink(wants / "ssh.service") == "/lib/systemd/system/ssh.service"
    assert os.readlink(wants / "systemd-networkd.service") == "/lib/systemd/system/systemd-networkd.service"
    host_key = guest.read("etc/ssh/ssh_host_ed25519_key")
    assert "OPENSSH PRIVATE KEY" in host_key and "THE IMAGE'S KEY" not in host_key
    assert "PermitRootLogin yes" in guest.read("etc/ssh/sshd_config.d/10-vafleet.conf")
    assert (guest.root / "var/lib/vafleet/firstboot.done").is_file()
    assert "first boot done" in result.stdout


def test_second_run_does_nothing(guest):
    assert guest.run(values()).returncode == 0
    before = guest.snapshot()

    again = guest.run(values(**{"vafleet.hostname": "changed", "vafleet.addressing": "dhcp"}))

    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert guest.snapshot() == before
    assert guest.calls.read_text().splitlines() == ["--cmd info-get guestinfo.ovfEnv"]  # asked only once


def test_dhcp_first_boot(guest):
    result = guest.run(values(**{"vafleet.addressing": "dhcp", "vafleet.address": "", "vafleet.prefix": "",
                                 "vafleet.gateway": "", "vafleet.dns": "10.0.0.9"}))

    assert result.returncode == 0, result.stderr
    network = guest.read("etc/systemd/network/10-vafleet.network")
    assert "DHCP=yes\n" in network and "DNS=10.0.0.9\n" in network
    assert "Address=" not in network and "Gateway=" not in network


def test_existing_user_keeps_its_account_and_gets_the_new_hash(guest):
    result = guest.run(values(**{"vafleet.user_name": "builder"}))

    assert result.returncode == 0, result.stderr
    assert guest.shadow()["builder"][1] == USER_HASH
    assert [line for line in guest.read("etc/passwd").splitlines() if line.startswith("builder:")] == [
        "builder:x:1000:1000::/home/builder:/bin/sh"]


@pytest.mark.parametrize(("change", "message"), [
    ({"vafleet.root_password_hash": "Root-Secret-1"}, "not a SHA-512 crypt hash"),
    ({"vafleet.hostname": "bad_name"}, "not a valid host name"),
    ({"vafleet.address": "10.0.0"}, "not an IPv4 address"),
    ({"vafleet.addressing": "bootp"}, "neither static nor dhcp"),
])
def test_bad_properties_change_nothing(guest, change, message):
    before = guest.snapshot()

    result = guest.run(values(**change))

    assert result.returncode != 0 and message in result.stderr
    assert guest.snapshot() == before
    assert not (guest.root / "var/lib/vafleet/firstboot.done").exists()


def test_without_an_ovf_environment_it_fails_clearly(guest):
    before = guest.snapshot()

    result = guest.run("")

    assert result.returncode != 0 and "no OVF environment in guestinfo.ovfEnv" in result.stderr
    assert guest.snapshot() == before
    assert "not a valid host name" in guest.run({}).stderr  # an environment without the properties


def test_descriptor_parses_and_declares_every_property(tmp_path):
    package = build_package(tmp_path)

    root = ET.fromstring(package.descriptor)

    assert root.tag == f"{{{OVF_NS}}}Envelope"
    assert list(descriptor_properties(package.descriptor)) == list(PROPERTY_KEYS)
    hardware = root.find(f".//{{{OVF_NS}}}VirtualHardwareSection")
    assert hardware.get(f"{{{OVF_NS}}}transport") == TRANSPORT
    items = {i.findtext(f"{{{RASD_NS}}}ResourceType"): i for i in hardware.iter(f"{{{OVF_NS}}}Item")}
    assert set(items) == {"3", "4", "6", "17", "10"}
    assert items["10"].findtext(f"{{{RASD_NS}}}Connection") == NETWORK_NAME
    assert items["10"].findtext(f"{{{RASD_NS}}}ResourceSubType") == "VmxNet3"
    passwords = {p.get(f"{{{OVF_NS}}}key") for p in root.iter(f"{{{OVF_NS}}}Property")
                 if p.get(f"{{{OVF_NS}}}password") == "true"}
    assert passwords == {"vafleet.root_password_hash", "vafleet.user_password_hash"}
    file_ref = root.find(f"{{{OVF_NS}}}References/{{{OVF_NS}}}File")
    assert file_ref.get(f"{{{OVF_NS}}}href") == package.disk.name
    assert int(file_ref.get(f"{{{OVF_NS}}}size")) == package.disk.stat().st_size


def test_package_is_deterministic_and_manifested(tmp_path):
    first = build_package(tmp_path)
    mtimes = {p.name: p.stat().st_mtime_ns for p in first.directory.iterdir()}

    again = build_package(tmp_path)

    assert again == first
    assert {p.name: p.stat().st_mtime_ns for p in again.directory.iterdir()} == mtimes  # reused, not rewritten
    assert first.directory.name == f"va-fleet-appliance-{first.version}"
    assert sorted(p.name for p in first.directory.iterdir()) == sorted([first.ovf.name, first.disk.name,
                                                                        first.manifest.name])
    assert verify_manifest(first) == []
    assert first.disk.read_bytes()[:4] == b"KDMV"
    other = build_package(tmp_path / "elsewhere")
    assert other.version == first.version and other.disk.read_bytes() == first.disk.read_bytes()
    first.disk.write_bytes(b"tampered")
    assert verify_manifest(first) == [first.disk.name]
    assert build_package(tmp_path).disk.read_bytes() == other.disk.read_bytes()  # a damaged copy is rebuilt
