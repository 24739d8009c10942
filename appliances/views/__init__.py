"""Portal views of the appliance fleet."""

from appliances.views.appliance import (
    appliance_add,
    appliance_check,
    appliance_deploy,
    appliance_detail,
    appliance_edit,
    appliance_placement,
    appliance_redeploy,
    appliance_remove,
)
from appliances.views.bulk import bulk_deploy, bulk_placement
from appliances.views.fleet import fleet_health, fleet_list, fleet_upgrade
from appliances.views.operations import operation_detail

__all__ = [
    "appliance_add",
    "appliance_check",
    "appliance_deploy",
    "appliance_detail",
    "appliance_edit",
    "appliance_placement",
    "appliance_redeploy",
    "appliance_remove",
    "bulk_deploy",
    "bulk_placement",
    "fleet_health",
    "fleet_list",
    "fleet_upgrade",
    "operation_detail",
]
