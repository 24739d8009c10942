"""Deploying appliances in the lab: a VM record in a private seeded lab plus, for SSH, a real lab host.

Every VA and VM record a test makes is removed by a fixture finalizer, also when the test fails.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from appliances import REPO_DIR, labnet, var_dir
from appliances.deployers import deployer_class
from appliances.deployers.base import ApplianceSpec, DeployError, Provisioned
from appliances.deployers.lab import LabDeployer
from appliances.labhost import LabHost, cleanup_leftovers, lab_root
from appliances.transports.ssh import SSHTransport, scan_host_key
from inventory.connectors.base import ConnectionParams, NotFound
from inventory.connectors.lab import LabConnector, seed
from inventory.connectors.lab.state import by_name
from tests.appliances.conftest import ROOT_PASSWORD, USER_PASSWORD, needs_root

pytestmark = [pytest.mark.appliance]

MIB = 1 << 20
RUN = secrets.token_hex(2)  # host names of this run, so the finalizers find what a failed deployment left


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A private lab: 4 hosts, shared and local datastores, 2 networks, 4 small VMs."""
    root = tmp_path_factory.mktemp("lab") / "lab"
    seed(root, vms=4, disk_size=1 * MIB)
    return LabConnector(root=root)


@pytest.fixture(scope="module")
def deployer(lab):
    return LabDeployer(ConnectionParams(options={"root": str(lab.root)}))


@pytest.fixture(scope="module")
def where(lab):
    """Morefs of the lab objects the VAs go on: esx-02, the shared NFS datastore, the distributed port group."""
    data = lab.state.read()
    return {"datacenter": by_name(data, "datacenters", "Lab")[0],
            "host": by_name(data, "hosts", "esx-02.lab.local")[0],
            "datastore": by_name(data, "datastores", "shared-nfs-01")[0],
            "network": by_name(data, "networks", "dvPG-Production")[0]}


def make_spec(where: dict, tag: str, **changes) -> ApplianceSpec:
    values = {"name": f"VA {RUN} {tag}", "hostname": f"va-{RUN}-{tag}", "addressing": "dhcp",
              "root_password": ROOT_PASSWORD, "user_password": USER_PASSWORD, "user_name": "operator1",
              "vcpus": 3, "memory_mb": 1024, **where}
    values.update(changes)
    return ApplianceSpec(**values)


def run_hosts() -> list[LabHost]:
    """Lab hosts of this test run (by host name), whoever made them."""
    hosts = []
    for state_file in lab_root().glob("*/state.json"):
        host = LabHost.find(state_file.parent.name)
        if host is not None and host.state.get("name", "").startswith(f"va-{RUN}-"):
            hosts.append(host)
    return hosts


def run_vms(lab: LabConnector) -> dict[str, dict]:
    return {m: vm for m, vm in lab.state.read()["vms"].items() if vm["name"].startswith(f"VA {RUN} ")}


@pytest.fixture(scope="module")
def cleanup(lab, deployer):
    """Register what a test deployed; at the end remove it, and anything a failed deployment left."""
    made: list[Provisioned] = []
    yield made
    for provisioned in made:
        try:
            deployer.remove(provisioned.vm_moref, provisioned.handle)
        except DeployError:
            pass
    for host in run_hosts():
        host.destroy()
    for moref in run_vms(lab):
        lab.destroy_vm(moref)


@pytest.fixture
def deploy(deployer, cleanup):
    def run(spec: ApplianceSpec) -> Provisioned:
        provisioned = deployer.provision(spec, lambda phase, percent: None)
        cleanup.append(provisioned)
        return provisioned

    return run


def free_static_address() -> str:
    """A free address from the upper half of the lab range (automatic addresses are taken from the bottom),
    picked at random so that parallel runs do not ask for the same one."""
    used = {json.loads(f.read_text())["slot"] for f in lab_root().glob("*/state.json")}
    for slot in random.sample(range(labnet.SLOTS // 2, labnet.SLOTS), 64):
        if slot not in used and not labnet.host_address_in_use(slot):
            return labnet.addresses(slot)[1]
    raise AssertionError("no free lab address")


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def pair(where, deployer, cleanup):
    """Two VAs deployed at once: one with an automatic address, one with a static address."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    static = free_static_address()
    specs = [make_spec(where, "auto", vcpus=2, memory_mb=1536),
             make_spec(where, "static", addressing="static", address=static, vcpus=3, memory_mb=2048)]
    phases: list[list[tuple[str, int]]] = [[], []]
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(deployer.provision, spec, lambda p, n, i=i: phases[i].append((p, n)))
                   for i, spec in enumerate(specs)]
    results = []
    for future in futures:
        try:
            results.append(future.result())
        except DeployError:
            pass
    cleanup.extend(results)
    assert len(results) == 2, "a deployment failed"
    return list(zip(specs, results, strict=True)), phases, static


@needs_root
def test_two_vas_deployed_at_once_are_vm_records_and_real_hosts(pair, lab, where):
    deployed, phases, static = pair
    (auto_spec, auto), (static_spec, fixed) = deployed
    assert fixed.address == static
    assert auto.address != static and auto.address.startswith("10.231.") and int(auto.address.split(".")[3]) % 4 == 2
    inventory = {vm.moref: vm for vm in lab.fetch_inventory().vms}
    for spec, provisioned in deployed:
        vm = inventory[provisioned.vm_moref]
        assert (vm.name, vm.host, vm.datastores, vm.networks) == (spec.name, where["host"], [where["datastore"]],
                                                                 [where["network"]])
        assert (vm.num_cpu, vm.memory_mb, vm.power_state) == (spec.vcpus, spec.memory_mb, "poweredOn")
        assert provisioned.port == 22 and provisioned.handle["labhost"]
        host = LabHost.find(provisioned.handle["labhost"])
        assert host.info.vcpus == spec.vcpus and host.persistent
        assert scan_host_key(provisioned.address, 22, timeout=5) == provisioned.host_key
        with SSHTransport(provisioned.address, 22, "root", host_key=provisioned.host_key,
                          password=ROOT_PASSWORD) as t:
            assert t.run(["sh", "-c", "id -u; hostname"]).stdout.decode().split() == ["0", spec.hostname]
        with SSHTransport(provisioned.address, 22, spec.user_name, host_key=provisioned.host_key,
                          password=USER_PASSWORD) as t:
            assert t.run(["id", "-un"]).stdout.decode().strip() == spec.user_name
    assert auto.host_key != fixed.host_key
    for seen in phases:
        percents = [n for _, n in seen]
        assert percents == sorted(percents) and percents[-1] == 100


@needs_root
def test_disks_of_other_vms_hot_add_to_a_deployed_va(pair, lab):
    _, va = pair[0][0]
    db = lab.find_vm("db-01")  # on shared-nfs-01, which esx-02 mounts
    snapshot = lab.create_snapshot(db, "backup")
    try:
        key = lab.attach_disk(va.vm_moref, snapshot.disks[0]["file_name"])
        try:
            assert Path(lab.device(va.vm_moref, key)["path"]).is_file()
        finally:
            lab.detach_disk(va.vm_moref, key)
    finally:
        lab.remove_snapshot(db, snapshot.moref)


@needs_root
def test_static_address_outside_the_lab_range_or_taken_is_refused_and_nothing_is_left(pair, deployer, lab, where):
    _, _, static = pair
    vms, hosts = set(run_vms(lab)), {h.workdir.name for h in run_hosts()}
    for address, reason in (("192.168.1.10", "10.231.x.y where y % 4 == 2"),
                            ("10.231.0.5", "10.231.x.y where y % 4 == 2"),
                            (static, "already used by lab appliance")):
        spec = make_spec(where, "bad", addressing="static", address=address)
        with pytest.raises(DeployError, match=reason):
            deployer.provision(spec, lambda phase, percent: None)
        assert set(run_vms(lab)) == vms  # the VM record made before the taken address was found is gone
        assert {h.workdir.name for h in run_hosts()} == hosts
    with pytest.raises(DeployError, match="Host name 'bad name' is not valid"):
        deployer.provision(make_spec(where, "bad", hostname="bad name"), lambda phase, percent: None)
    assert set(run_vms(lab)) == vms


@needs_root
def test_a_deployed_va_outlives_its_deploying_process_and_cleanup_of_leftovers(lab, deployer, where, cleanup):
    spec = make_spec(where, "outlive")
    script = ("import dataclasses, json, os, sys; from appliances.deployers.base import ApplianceSpec; "
              "from appliances.deployers.lab import LabDeployer; "
              "from inventory.connectors.base import ConnectionParams; "
              "spec = ApplianceSpec(**json.loads(sys.argv[2])); "
              "p = LabDeployer(ConnectionParams(options={'root': sys.argv[1]})).provision(spec, lambda *a: None); "
              "print(json.dumps(dataclasses.asdict(p)), flush=True); os._exit(0)")
    out = subprocess.run(
        [sys.executable, "-c", script, str(lab.root), json.dumps(spec.__dict__)], capture_output=True, text=True,
        cwd=REPO_DIR, timeout=60,
        env={"PYTHONPATH": str(REPO_DIR), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "VAFLEET_VAR_DIR": str(var_dir())})
    assert out.returncode == 0, out.stderr
    provisioned = Provisioned(**json.loads(out.stdout))
    cleanup.append(provisioned)
    ident = provisioned.handle["labhost"]
    assert ident not in cleanup_leftovers()  # its creator is gone, but it belongs to the fleet
    host = LabHost.find(ident)
    assert host is not None and host.running
    with SSHTransport(provisioned.address, 22, "root", host_key=provisioned.host_key, password=ROOT_PASSWORD) as t:
        assert t.run(["hostname"]).stdout.decode().strip() == spec.hostname


@needs_root
def test_ensure_running_brings_back_a_va_after_its_sshd_died_or_a_reboot(deploy, deployer, where):
    spec = make_spec(where, "revive")
    provisioned = deploy(spec)
    host = LabHost.find(provisioned.handle["labhost"])
    assert deployer.ensure_running(provisioned.handle) is False  # running: nothing to do

    os.kill(host.state["sshd_pid"], signal.SIGKILL)
    assert not LabHost.find(host.info.id).running
    assert deployer.ensure_running(provisioned.handle) is True

    def check() -> None:
        with SSHTransport(provisioned.address, 22, "root", host_key=provisioned.host_key,
                          password=ROOT_PASSWORD) as t:  # the same host key, or this raises
            assert t.run(["hostname"]).stdout.decode().strip() == spec.hostname
        with SSHTransport(provisioned.address, 22, spec.user_name, host_key=provisioned.host_key,
                          password=USER_PASSWORD) as t:
            assert t.run(["id", "-un"]).stdout.decode().strip() == spec.user_name

    check()
    # a reboot of this machine: every process, the namespace and the veth are gone, the files stay
    host = LabHost.find(host.info.id)
    host._stop_processes()
    labnet.down(host.info.namespace, host.state["veth"])
    assert host.info.namespace not in namespaces()
    assert deployer.ensure_running(provisioned.handle) is True
    assert LabHost.find(host.info.id).info.address == provisioned.address
    check()
    assert deployer.ensure_running(provisioned.handle) is False


@needs_root
def test_remove_leaves_no_namespace_veth_process_or_vm_record(deploy, deployer, lab, where):
    provisioned = deploy(make_spec(where, "remove"))
    host = LabHost.find(provisioned.handle["labhost"])
    info, pid = host.info, host.state["sshd_pid"]
    assert info.namespace in namespaces() and link_exists(f"vf{info.id}h")
    deployer.remove(provisioned.vm_moref, provisioned.handle)
    assert info.namespace not in namespaces()
    assert not link_exists(f"vf{info.id}h")
    assert not Path(f"/proc/{pid}").exists() or info.workdir not in Path(f"/proc/{pid}/cmdline").read_text()
    assert not Path(info.workdir).exists() and LabHost.find(info.id) is None
    with pytest.raises(NotFound):
        lab.find_vm(provisioned.vm_moref)
    deployer.remove(provisioned.vm_moref, provisioned.handle)  # already gone: fine
    with pytest.raises(DeployError, match="no longer exists"):
        deployer.ensure_running(provisioned.handle)


def test_local_transport_makes_only_the_vm_record(deploy, deployer, lab, where):
    hosts = {p.name for p in lab_root().iterdir() if (p / "state.json").exists()}
    provisioned = deploy(make_spec(where, "local", transport="local", vcpus=2))
    assert provisioned.address == "" and "labhost" not in provisioned.handle
    vm = next(vm for vm in lab.fetch_inventory().vms if vm.moref == provisioned.vm_moref)
    assert (vm.host, vm.num_cpu, vm.power_state) == (where["host"], 2, "poweredOn")
    assert {p.name for p in lab_root().iterdir() if (p / "state.json").exists()} == hosts
    assert deployer.ensure_running(provisioned.handle) is False
    deployer.remove(provisioned.vm_moref, provisioned.handle)
    with pytest.raises(NotFound):
        lab.find_vm(provisioned.vm_moref)


def test_the_registry_gives_the_lab_deployer_and_its_transports(deployer, where):
    assert deployer_class("lab") is LabDeployer
    assert deployer.supports_transport("ssh") and deployer.supports_transport("local")
    assert not deployer.supports_transport("telnet")
    with pytest.raises(DeployError, match="'telnet' transport"):
        deployer.provision(make_spec(where, "odd", transport="telnet"), lambda phase, percent: None)
