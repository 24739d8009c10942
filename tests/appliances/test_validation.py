"""Configuration checks before deployment: every rule gives a sentence on the right field."""

from __future__ import annotations

import pytest

from appliances.models import Appliance
from appliances.validation import problems
from inventory.models import Connection, Datacenter, Host
from tests.appliances.conftest import values


def test_a_good_configuration_has_no_problem(place):
    assert problems(values(place)) == {}
    assert problems(values(place, addressing="dhcp", address=None, prefix=None, gateway="")) == {}


@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"address": "192.0.2.300"}, "address", "not an IPv4 address"),
    ({"address": "192.0.2.0"}, "address", "network or broadcast"),
    ({"address": "127.0.0.5"}, "address", "cannot be"),
    ({"prefix": 31}, "prefix", "8-30"),
    ({"gateway": "198.51.100.1"}, "gateway", "not in the appliance's network"),
    ({"gateway": "192.0.2.10"}, "gateway", "own address"),
    ({"dns": "192.0.2.53, dns.example"}, "dns", "'dns.example' is not"),
    ({"hostname": "-bad-"}, "hostname", "hyphen"),
    ({"name": "has space"}, "name", "letters, digits"),
    ({"datastore": "elsewhere"}, "datastore", "does not mount datastore elsewhere"),
    ({"datastore": "small"}, "datastore", "1.0 GiB free"),
    ({"network": "dvpg"}, "network", "not available on host esx1"),
    ({"root_password": "short1A"}, "root_password", "too short"),
    ({"root_password": "password1234"}, "root_password", "too common"),
    ({"user_password": "alllowercaseletters"}, "user_password", "three of"),
    ({"user_name": "root"}, "user_name", "other than root"),
    ({"vcpus": 0}, "vcpus", "between 1 and 64"),
    ({"transport": "local"}, "transport", "Only lab appliances"),
])
def test_each_rule_names_its_field(place, changes, field, words):
    changes = {k: place[v] if k in ("datastore", "network") else v for k, v in changes.items()}
    found = problems(values(place, **changes))
    assert field in found, found
    assert any(words in message for message in found[field]), found[field]


def test_duplicates_of_another_appliance_are_refused(place):
    existing = Appliance.objects.create(**{k: v for k, v in values(place).items()})
    found = problems(values(place, name="VA-1", hostname="VA-1"))
    assert "already exists" in found["name"][0]
    assert "already used by appliance va-1" in found["hostname"][0]
    assert "already the address of appliance va-1" in found["address"][0]
    # Editing the appliance itself is not a duplicate; blank passwords on edit keep the stored ones.
    assert problems(values(place, root_password=None, user_password=None), instance=existing) == {}


def test_lab_appliances_on_ssh_use_the_lab_addresses(place):
    lab = place["connection"]
    lab.kind = "lab"
    found = problems(values(place, address="192.0.2.10"))
    assert "10.231" in found["address"][0]
    assert "address" not in problems(values(place, address="10.231.0.6", prefix=30, gateway="10.231.0.5"))


def test_served_hosts_belong_to_the_connection(place):
    elsewhere = Connection.objects.create(name="other vc", kind="vsphere", host="vc2.example.test")
    dc = Datacenter.objects.create(connection=elsewhere, moref="dc-9", name="DC9")
    foreign = Host.objects.create(connection=elsewhere, moref="host-9", name="esx9", datacenter=dc)
    found = problems(values(place, served_hosts=[place["host"], foreign]))
    assert "esx9 is not" in found["served_hosts"][0]
    assert "served_hosts" not in problems(values(place, served_hosts=[place["host"]]))

