"""The lab: a local demo hypervisor whose datastores are folders and whose disks are sparse files.

It implements the same Connector interface as vSphere, so the embedded default and every
end-to-end test run without VMware. Nothing here imports Django at module level.
"""

from inventory.connectors.lab.connector import LabConnector
from inventory.connectors.lab.seed import SeedResult, seed

__all__ = ["LabConnector", "SeedResult", "seed"]
