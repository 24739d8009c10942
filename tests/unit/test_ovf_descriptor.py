"""The appliance's OVF descriptor asks vSphere for the VM settings hot-add backups depend on."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from appliances.ovf.descriptor import OVF_NS, VMW_NS, DiskFile, build_descriptor, descriptor_extra_config


def test_the_descriptor_turns_on_disk_uuids_in_the_hardware_section():
    text = build_descriptor("1.2.3", DiskFile("va-disk1.vmdk", 1 << 20, 8))

    assert descriptor_extra_config(text) == {"disk.EnableUUID": "TRUE"}
    hardware = ET.fromstring(text).find(f".//{{{OVF_NS}}}VirtualHardwareSection")
    (entry,) = hardware.findall(f"{{{VMW_NS}}}ExtraConfig")
    assert entry.get(f"{{{OVF_NS}}}required") == "false"  # a host that refuses the key still imports the VA
    assert list(hardware)[-1] is entry  # after every Item, where the OVF schema wants it
