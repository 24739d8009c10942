"""The appliance's OVF 1.x descriptor: hardware, one disk, one NIC, and the vApp properties.

The properties reach the guest through `ovf:transport="com.vmware.guestInfo"`: vSphere hands
the guest an OVF environment document as `guestinfo.ovfEnv`, which `firstboot.sh` reads.
Passwords travel only as SHA-512 crypt hashes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

OVF_NS = "http://schemas.dmtf.org/ovf/envelope/1"
RASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
VMW_NS = "http://www.vmware.com/schema/ovf"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
NAMESPACES = {"ovf": OVF_NS, "rasd": RASD_NS, "vssd": VSSD_NS, "vmw": VMW_NS, "xsi": XSI_NS}
STREAM_OPTIMIZED = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
TRANSPORT = "com.vmware.guestInfo"
NETWORK_NAME = "VA Network"
PRODUCT = "VA Fleet appliance"
VENDOR = "VA Fleet"
OS_TYPE = "debian12_64Guest"  # CIM id 96: Debian 64-bit
HARDWARE_VERSION = "vmx-13"  # ESXi 6.5 and later
# disk.EnableUUID: the guest sees each disk's backing UUID (udev's /dev/disk/by-id/wwn-0x...), which is how
# the engine finds a hot-added disk.
EXTRA_CONFIG: tuple[tuple[str, str], ...] = (("disk.EnableUUID", "TRUE"),)


@dataclass(frozen=True)
class PropertyDef:
    key: str
    type: str
    label: str
    description: str
    default: str = ""
    password: bool = False
    qualifiers: str = ""


PROPERTIES: tuple[PropertyDef, ...] = (
    PropertyDef("vafleet.hostname", "string", "Host name", "Host name of the appliance (letters, digits, '-').",
                qualifiers="MinLen(1) MaxLen(63)"),
    PropertyDef("vafleet.addressing", "string", "Addressing", "static or dhcp.", "dhcp",
                qualifiers="ValueMap{\"static\",\"dhcp\"}"),
    PropertyDef("vafleet.address", "string", "IPv4 address", "Static address (empty for DHCP)."),
    PropertyDef("vafleet.prefix", "string", "Prefix length", "Static network prefix length, e.g. 24."),
    PropertyDef("vafleet.gateway", "string", "Gateway", "Default gateway (static addressing)."),
    PropertyDef("vafleet.dns", "string", "DNS servers", "Comma-separated DNS server addresses."),
    PropertyDef("vafleet.root_password_hash", "string", "root password hash",
                "SHA-512 crypt hash ($6$...) of the root password.", password=True),
    PropertyDef("vafleet.user_name", "string", "User name", "Non-root login created on first boot.", "vauser"),
    PropertyDef("vafleet.user_password_hash", "string", "User password hash",
                "SHA-512 crypt hash ($6$...) of the user's password.", password=True),
    PropertyDef("vafleet.ssh_enable", "boolean", "Enable SSH", "Enable and start sshd on first boot.", "true"),
)
PROPERTY_KEYS: tuple[str, ...] = tuple(p.key for p in PROPERTIES)


@dataclass(frozen=True)
class DiskFile:
    href: str  # file name inside the package
    size: int  # bytes of the file
    capacity_gib: int  # virtual size of the disk


def _q(prefix: str, name: str) -> str:
    return f"{{{NAMESPACES[prefix]}}}{name}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    prefix, _, name = tag.partition(":")
    element = ET.SubElement(parent, _q(prefix, name), {_attr(k): v for k, v in attrs.items()})
    if text is not None:
        element.text = text
    return element


def _attr(name: str) -> str:
    prefix, _, local = name.partition("_")  # ovf_id -> {ovf}id
    return _q(prefix, local) if local and prefix in NAMESPACES else name


def _item(hardware: ET.Element, fields: list[tuple[str, str]]) -> None:
    """One rasd:Item; CIM wants its children in alphabetical order."""
    item = _sub(hardware, "ovf:Item")
    for name, value in sorted(fields):
        _sub(item, f"rasd:{name}", value)


def build_descriptor(version: str, disk: DiskFile, *, vcpus: int = 2, memory_mb: int = 2048,
                     name: str = "va-fleet-appliance") -> str:
    for prefix, uri in NAMESPACES.items():
        ET.register_namespace(prefix, uri)
    envelope = ET.Element(_q("ovf", "Envelope"), {_q("vmw", "buildId"): f"va-fleet-{version}"})
    refs = _sub(envelope, "ovf:References")
    _sub(refs, "ovf:File", ovf_id="file1", ovf_href=disk.href, ovf_size=str(disk.size))

    disks = _sub(envelope, "ovf:DiskSection")
    _sub(disks, "ovf:Info", "Virtual disk information")
    _sub(disks, "ovf:Disk", ovf_diskId="vmdisk1", ovf_fileRef="file1", ovf_capacity=str(disk.capacity_gib),
         ovf_capacityAllocationUnits="byte * 2^30", ovf_format=STREAM_OPTIMIZED)

    networks = _sub(envelope, "ovf:NetworkSection")
    _sub(networks, "ovf:Info", "The network the appliance's NIC is mapped to")
    network = _sub(networks, "ovf:Network", ovf_name=NETWORK_NAME)
    _sub(network, "ovf:Description", "The network over which VA Fleet reaches the appliance")

    system = _sub(envelope, "ovf:VirtualSystem", ovf_id=name)
    _sub(system, "ovf:Info", "A VA Fleet backup appliance")
    _sub(system, "ovf:Name", name)
    os_section = _sub(system, "ovf:OperatingSystemSection", ovf_id="96", vmw_osType=OS_TYPE)
    _sub(os_section, "ovf:Info", "The guest operating system")
    _sub(os_section, "ovf:Description", "Debian GNU/Linux 12 (64-bit)")
    _hardware(system, name, vcpus, memory_mb)
    _product(system, version)
    return ET.tostring(envelope, encoding="unicode", xml_declaration=True) + "\n"


def _hardware(system: ET.Element, name: str, vcpus: int, memory_mb: int) -> None:
    hardware = _sub(system, "ovf:VirtualHardwareSection", ovf_transport=TRANSPORT)
    _sub(hardware, "ovf:Info", "Virtual hardware requirements")
    vssd = _sub(hardware, "ovf:System")
    for field, value in (("ElementName", "Virtual Hardware Family"), ("InstanceID", "0"),
                         ("VirtualSystemIdentifier", name), ("VirtualSystemType", HARDWARE_VERSION)):
        _sub(vssd, f"vssd:{field}", value)
    _item(hardware, [("AllocationUnits", "hertz * 10^6"), ("Description", "Number of virtual CPUs"),
                     ("ElementName", f"{vcpus} virtual CPU(s)"), ("InstanceID", "1"), ("ResourceType", "3"),
                     ("VirtualQuantity", str(vcpus))])
    _item(hardware, [("AllocationUnits", "byte * 2^20"), ("Description", "Memory size"),
                     ("ElementName", f"{memory_mb} MB of memory"), ("InstanceID", "2"), ("ResourceType", "4"),
                     ("VirtualQuantity", str(memory_mb))])
    _item(hardware, [("Address", "0"), ("Description", "SCSI controller"), ("ElementName", "SCSI controller 0"),
                     ("InstanceID", "3"), ("ResourceSubType", "VirtualSCSI"), ("ResourceType", "6")])
    _item(hardware, [("AddressOnParent", "0"), ("ElementName", "Hard disk 1"),
                     ("HostResource", "ovf:/disk/vmdisk1"), ("InstanceID", "4"), ("Parent", "3"),
                     ("ResourceType", "17")])
    _item(hardware, [("AddressOnParent", "7"), ("AutomaticAllocation", "true"), ("Connection", NETWORK_NAME),
                     ("Description", "VmxNet3 ethernet adapter"), ("ElementName", "Network adapter 1"),
                     ("InstanceID", "5"), ("ResourceSubType", "VmxNet3"), ("ResourceType", "10")])
    for key, value in EXTRA_CONFIG:
        _sub(hardware, "vmw:ExtraConfig", ovf_required="false", vmw_key=key, vmw_value=value)


def _product(system: ET.Element, version: str) -> None:
    product = _sub(system, "ovf:ProductSection")
    _sub(product, "ovf:Info", "Settings applied by the appliance on first boot")
    _sub(product, "ovf:Product", PRODUCT)
    _sub(product, "ovf:Vendor", VENDOR)
    _sub(product, "ovf:Version", version.split("-")[0])
    _sub(product, "ovf:FullVersion", version)
    for prop in PROPERTIES:
        attrs = {"ovf_key": prop.key, "ovf_type": prop.type, "ovf_userConfigurable": "true",
                 "ovf_value": prop.default}
        if prop.qualifiers:
            attrs["ovf_qualifiers"] = prop.qualifiers
        if prop.password:
            attrs["ovf_password"] = "true"
        element = _sub(product, "ovf:Property", **attrs)
        _sub(element, "ovf:Label", prop.label)
        _sub(element, "ovf:Description", prop.description)


def descriptor_extra_config(text: str) -> dict[str, str]:
    """The VM settings (vmx keys) a descriptor asks for, key -> value."""
    root = ET.fromstring(text)
    return {e.get(_q("vmw", "key"), ""): e.get(_q("vmw", "value"), "") for e in root.iter(_q("vmw", "ExtraConfig"))}


def descriptor_properties(text: str) -> dict[str, str]:
    """The vApp properties a descriptor declares, key -> default value."""
    root = ET.fromstring(text)
    return {p.get(_q("ovf", "key"), ""): p.get(_q("ovf", "value"), "")
            for p in root.iter(_q("ovf", "Property"))}
