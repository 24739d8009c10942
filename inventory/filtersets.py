"""Filters shared by the portal lists and the API (django-filter)."""

import django_filters
from django.db.models import Q

from inventory.models import Connection, Datastore, Host, Network, VirtualMachine
from jobs import protection


class InventoryFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    vanished = django_filters.BooleanFilter(field_name="vanished_at", lookup_expr="isnull", exclude=True)
    search_fields = ("name",)

    def search(self, queryset, name, value):
        query = Q()
        for field in self.search_fields:
            query |= Q(**{f"{field}__icontains": value})
        return queryset.filter(query)


class ConnectionFilterSet(InventoryFilterSet):
    vanished = None
    search_fields = ("name", "host")

    class Meta:
        model = Connection
        fields = ["kind", "status"]


class HostFilterSet(InventoryFilterSet):
    search_fields = ("name",)

    class Meta:
        model = Host
        fields = ["connection", "datacenter", "cluster", "connection_state"]


class DatastoreFilterSet(InventoryFilterSet):
    host = django_filters.NumberFilter(field_name="hosts", label="Mounted by host")

    class Meta:
        model = Datastore
        fields = ["connection", "datacenter", "type", "accessible"]


class NetworkFilterSet(InventoryFilterSet):
    host = django_filters.NumberFilter(field_name="hosts", label="On host")

    class Meta:
        model = Network
        fields = ["connection", "datacenter", "kind"]


class VirtualMachineFilterSet(InventoryFilterSet):
    search_fields = ("name", "guest_os", "folder", "uuid")
    datastore = django_filters.NumberFilter(field_name="datastores", label="On datastore")
    network = django_filters.NumberFilter(field_name="networks", label="On network")
    tag = django_filters.CharFilter(field_name="tags", lookup_expr="icontains", label="Tag")
    protection = django_filters.ChoiceFilter(choices=protection.CHOICES, method="by_protection", label="Protection")

    class Meta:
        model = VirtualMachine
        fields = ["connection", "datacenter", "host", "power_state", "is_template", "cbt_enabled"]

    def by_protection(self, queryset, name, value):
        return queryset.filter(protection.condition(value))
