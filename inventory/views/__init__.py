"""Portal views of the inventory app."""

from inventory.views.connections import (
    connection_add,
    connection_delete,
    connection_detail,
    connection_edit,
    connection_form_test,
    connection_list,
    connection_status,
    connection_sync,
    connection_test,
    connection_trust,
)
from inventory.views.objects import (
    datastore_detail,
    datastore_list,
    host_detail,
    host_list,
    network_list,
    vm_detail,
    vm_list,
)

__all__ = [
    "connection_add",
    "connection_delete",
    "connection_detail",
    "connection_edit",
    "connection_form_test",
    "connection_list",
    "connection_status",
    "connection_sync",
    "connection_test",
    "connection_trust",
    "datastore_detail",
    "datastore_list",
    "host_detail",
    "host_list",
    "network_list",
    "vm_detail",
    "vm_list",
]
