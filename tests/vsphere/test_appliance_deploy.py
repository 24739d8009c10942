"""Deploying an appliance from the OVF package onto the simulator: placement, properties, removal, failures."""

from __future__ import annotations

import subprocess

import pytest
from pyVmomi import vim, vmodl

from appliances.deployers import DeployError, deployer_class
from appliances.deployers.base import ApplianceSpec
from appliances.ovf import NETWORK_NAME, PROPERTY_KEYS, build_package
from inventory.connectors.vsphere import VSphereConnector
from inventory.connectors.vsphere.ovf import OvfImport
from tests.harness import vcsim
from tests.vsphere.helpers import params_for

pytestmark = pytest.mark.vcsim

ROOT_PASSWORD = "Root-Secret-7431"
USER_PASSWORD = "User-Secret-9902"


@pytest.fixture(scope="module")
def simulator():
    with vcsim.running(vcsim.Shape(vms=4, cluster_hosts=2, standalone_hosts=1)) as simulator:
        yield simulator


@pytest.fixture
def params(simulator):
    return params_for(simulator)


@pytest.fixture
def connector(params):
    with VSphereConnector(params) as connector:
        yield connector


@pytest.fixture
def lab(connector):
    inventory = connector.fetch_inventory()
    host = inventory.hosts[0]
    return {
        "inventory": inventory,
        "host": host,
        "local_ds": next(d for d in inventory.datastores if d.hosts == [host.moref]),
        "shared_ds": next(d for d in inventory.datastores if len(d.hosts) > 1),
        "other_local_ds": next(d for d in inventory.datastores if d.hosts and host.moref not in d.hosts),
        "standard": next(n for n in inventory.networks if n.kind == "standard" and n.name != "VM Network"),
        "distributed": next(n for n in inventory.networks if n.kind == "distributed"),
    }


def spec_for(lab, name, *, addressing="static", datastore=None, network=None, **fields) -> ApplianceSpec:
    values = dict(
        name=name, hostname=name, addressing=addressing, root_password=ROOT_PASSWORD, user_password=USER_PASSWORD,
        user_name="operator1", dns=["10.0.0.2", "10.0.0.3"], vcpus=4, memory_mb=3072, host=lab["host"].moref,
        datastore=datastore or lab["local_ds"].moref, network=network or lab["distributed"].moref,
    )
    if addressing == "static":
        values.update(address="10.0.0.51", prefix=24, gateway="10.0.0.1")
    values.update(fields)
    return ApplianceSpec(**values)


def read_vm(connector, moref) -> dict:
    collector = connector._connect()
    ref = vim.VirtualMachine(moref, collector.si._stub)
    return collector.properties(ref, ["name", "runtime.host", "runtime.powerState", "datastore", "network",
                                      "config", "config.hardware.numCPU", "config.hardware.memoryMB",
                                      "config.hardware.device"])


def vm_names(connector) -> list[str]:
    return [v.name for v in connector.fetch_inventory().vms]


def crypt_matches(password: str, hashed: str) -> bool:
    salt = hashed.split("$")[2]
    result = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=password + "\n",
                            capture_output=True, text=True, check=True)
    return result.stdout.strip() == hashed


def test_static_appliance_on_a_distributed_port_group(params, connector, lab):
    phases = []
    spec = spec_for(lab, "va-static")

    result = deployer_class("vsphere")(params).provision(spec, lambda sentence, pct: phases.append((sentence, pct)))

    assert result.address == "10.0.0.51" and result.port == 22 and result.host_key == ""
    vm = read_vm(connector, result.vm_moref)
    assert vm["name"] == "va-static"
    assert vm["runtime.host"]._moId == lab["host"].moref
    assert [d._moId for d in vm["datastore"]] == [lab["local_ds"].moref]
    assert vm["runtime.powerState"] == "poweredOn"
    assert vm["config.hardware.numCPU"] == 4 and vm["config.hardware.memoryMB"] == 3072
    assert [n._moId for n in vm["network"]] == [lab["distributed"].moref]
    nics = [d for d in vm["config.hardware.device"] if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    assert len(nics) == 1 and isinstance(nics[0], vim.vm.device.VirtualVmxnet3)
    assert isinstance(nics[0].backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo)
    disks = [d for d in vm["config.hardware.device"] if isinstance(d, vim.vm.device.VirtualDisk)]
    assert len(disks) == 1 and disks[0].capacityInKB == 8 << 20

    props = connector.vapp_properties(result.vm_moref, list(PROPERTY_KEYS))
    assert set(props) == set(PROPERTY_KEYS)
    assert {k: props[k] for k in ("vafleet.hostname", "vafleet.addressing", "vafleet.address", "vafleet.prefix",
                                  "vafleet.gateway", "vafleet.dns", "vafleet.user_name", "vafleet.ssh_enable")} == {
        "vafleet.hostname": "va-static", "vafleet.addressing": "static", "vafleet.address": "10.0.0.51",
        "vafleet.prefix": "24", "vafleet.gateway": "10.0.0.1", "vafleet.dns": "10.0.0.2,10.0.0.3",
        "vafleet.user_name": "operator1", "vafleet.ssh_enable": "true",
    }
    assert crypt_matches(ROOT_PASSWORD, props["vafleet.root_password_hash"])
    assert crypt_matches(USER_PASSWORD, props["vafleet.user_password_hash"])
    assert ROOT_PASSWORD not in repr(vm["config"]) and USER_PASSWORD not in repr(vm["config"])

    sentences = [s for s, _ in phases]
    assert sentences[0] == "Building the appliance package"
    assert any(s.startswith("Asking vCenter for an import spec") for s in sentences)
    assert "Uploading the appliance disk: 100%" in sentences
    assert "Powering on the appliance" in sentences and phases[-1] == ("Appliance deployed", 100)
    assert [p for _, p in phases] == sorted(p for _, p in phases)


def test_upload_reaches_the_lease(simulator, params, connector, lab):
    package = build_package()

    result = deployer_class("vsphere")(params).provision(spec_for(lab, "va-upload"), lambda s, p: None)

    log = (simulator.workdir / "stderr.log").read_text(errors="replace")
    assert f"transferred {package.disk.stat().st_size} bytes" in log
    assert "va-upload" in vm_names(connector) and result.vm_moref


def test_dhcp_appliance_on_a_standard_port_group_reports_the_guest_address(params, connector, lab):
    spec = spec_for(lab, "va-dhcp", addressing="dhcp", datastore=lab["shared_ds"].moref,
                    network=lab["standard"].moref)

    def tools_report_an_address(sentence, percent):
        if sentence.startswith("Waiting for the appliance's DHCP address"):
            # What VMware Tools in the guest would report once DHCP answered.
            vm = next(v for v in connector.fetch_inventory().vms if v.name == "va-dhcp")
            task = vim.VirtualMachine(vm.moref, connector._connect().si._stub).ReconfigVM_Task(
                spec=vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key="SET.guest.ipAddress",
                                                                            value="10.0.9.77")]))
            connector._connect().wait(task)

    deployer = deployer_class("vsphere")(params)
    deployer.poll_interval = 0.1
    result = deployer.provision(spec, tools_report_an_address)

    assert result.address == "10.0.9.77"
    vm = read_vm(connector, result.vm_moref)
    assert [d._moId for d in vm["datastore"]] == [lab["shared_ds"].moref]
    assert [n._moId for n in vm["network"]] == [lab["standard"].moref]
    nic = next(d for d in vm["config.hardware.device"] if isinstance(d, vim.vm.device.VirtualEthernetCard))
    assert nic.backing.deviceName == lab["standard"].name
    props = connector.vapp_properties(result.vm_moref, list(PROPERTY_KEYS))
    assert props["vafleet.addressing"] == "dhcp"
    assert props["vafleet.address"] == props["vafleet.prefix"] == props["vafleet.gateway"] == ""


def test_dhcp_without_a_reported_address_returns_an_empty_one(simulator, lab):
    deployer = deployer_class("vsphere")(params_for(simulator, options={"guest_address_timeout": 0.3}))
    deployer.poll_interval = 0.1

    result = deployer.provision(spec_for(lab, "va-dhcp-silent", addressing="dhcp"), lambda s, p: None)

    assert result.address == "" and result.vm_moref


def test_remove_deletes_the_vm_and_tolerates_a_second_call(params, connector, lab):
    deployer = deployer_class("vsphere")(params)
    result = deployer.provision(spec_for(lab, "va-removed"), lambda s, p: None)
    assert "va-removed" in vm_names(connector)

    deployer.remove(result.vm_moref, result.handle)

    assert "va-removed" not in vm_names(connector)
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        read_vm(connector, result.vm_moref)
    deployer.remove(result.vm_moref, result.handle)  # already gone: not an error


@pytest.mark.parametrize(("change", "message"), [
    ({"datastore": "datastore-does-not-exist"}, "Datastore datastore-does-not-exist does not exist"),
    ({"network": "network-999"}, "Network network-999 does not exist"),
    ({"network": "dvportgroup-999"}, "Network dvportgroup-999 does not exist"),
    ({"memory_mb": 64 << 20}, r"Datastore \S+ is full: it has [\d.]+ GiB free and the appliance needs"),
])
def test_bad_placement_is_refused_and_leaves_nothing(params, connector, lab, change, message):
    before = vm_names(connector)
    spec = spec_for(lab, "va-refused", **change)

    with pytest.raises(DeployError, match=f"Deploying appliance 'va-refused' failed: {message}"):
        deployer_class("vsphere")(params).provision(spec, lambda s, p: None)

    assert vm_names(connector) == before


def test_datastore_of_another_host_is_refused(params, connector, lab):
    spec = spec_for(lab, "va-elsewhere", datastore=lab["other_local_ds"].moref)

    with pytest.raises(DeployError, match=f"Datastore {lab['other_local_ds'].name} is not mounted on host"):
        deployer_class("vsphere")(params).provision(spec, lambda s, p: None)

    assert "va-elsewhere" not in vm_names(connector)


def test_duplicate_name_is_refused(params, connector, lab):
    taken = lab["inventory"].vms[0].name
    before = vm_names(connector)

    with pytest.raises(DeployError, match=f"A VM named {taken!r} already exists: choose another name"):
        deployer_class("vsphere")(params).provision(spec_for(lab, taken, hostname="va-dup"), lambda s, p: None)

    assert sorted(vm_names(connector)) == sorted(before)


def test_a_failed_upload_aborts_the_lease_and_removes_the_vm(connector, lab):
    package = build_package()
    request = OvfImport(name="va-half", host=lab["host"].moref, datastore=lab["local_ds"].moref,
                        network=lab["standard"].moref, descriptor=package.descriptor, files={},
                        network_name=NETWORK_NAME)

    with pytest.raises(Exception, match="lacks the file .*-disk1.vmdk its descriptor references"):
        connector.deploy_ovf(request)

    assert "va-half" not in vm_names(connector)


def test_plaintext_password_never_reaches_the_properties(lab):
    from appliances.deployers.vsphere import property_values

    values = property_values(spec_for(lab, "va-props"))

    assert set(values) == set(PROPERTY_KEYS)
    assert all(ROOT_PASSWORD not in v and USER_PASSWORD not in v for v in values.values())
    assert values["vafleet.root_password_hash"].startswith("$6$")
    assert values["vafleet.root_password_hash"] != property_values(spec_for(lab, "va-props"))[
        "vafleet.root_password_hash"]  # salted
