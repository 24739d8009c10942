"""The appliance as an OVF package for vSphere: descriptor, stand-in disk, manifest, first-boot script."""

from __future__ import annotations

from appliances.ovf.descriptor import NETWORK_NAME, PROPERTIES, PROPERTY_KEYS, build_descriptor
from appliances.ovf.package import FIRSTBOOT, OvfPackage, build_package

__all__ = ["FIRSTBOOT", "NETWORK_NAME", "PROPERTIES", "PROPERTY_KEYS", "OvfPackage", "build_descriptor",
           "build_package"]
