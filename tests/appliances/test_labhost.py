"""Lab appliances are real hosts: own address, sshd, host key, users; nothing is left behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliances import REPO_DIR, var_dir
from appliances.labhost import LabHost, LabHostError, cleanup_leftovers
from appliances.transports.ssh import SSHTransport, scan_host_key
from tests.appliances.conftest import ROOT_PASSWORD, USER_PASSWORD, create_lab, needs_root

pytestmark = [pytest.mark.appliance, needs_root]


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_several_appliances_are_separate_hosts(fleet):
    infos = [host.info for host in fleet]
    assert len({i.address for i in infos}) == len(infos)
    assert len({i.host_key_fingerprint for i in infos}) == len(infos)
    for host in fleet:
        info = host.info
        assert scan_host_key(info.address, info.port, timeout=5) == info.host_key
        with SSHTransport(info.address, info.port, "root", host_key=info.host_key, password=ROOT_PASSWORD) as t:
            out = t.run(["sh", "-c", 'id -u; hostname; echo "$HOME"']).stdout.decode().split()
        assert out == ["0", info.name, f"{info.workdir}/home/root"]  # root's home is the VA's, not this machine's
        with SSHTransport(info.address, info.port, info.user, host_key=info.host_key, password=USER_PASSWORD) as t:
            assert t.run(["id", "-un"]).stdout.decode().strip() == info.user
    assert [h.info.vcpus for h in fleet] == [1, 2, 3]
    # the machine's own accounts are untouched: the VA users exist only inside each VA
    assert all(h.info.user not in Path("/etc/passwd").read_text().split(":") for h in fleet)


def test_the_machine_replacing_its_shadow_file_does_not_change_the_appliance_accounts(lab_va):
    """useradd renames a new /etc/shadow into place: an appliance must keep its own passwords."""
    info = lab_va.info
    shadow = Path("/etc/shadow")
    copy = shadow.with_name(".shadow.vafleet-test")
    subprocess.run(["cp", "-p", str(shadow), str(copy)], check=True)  # same content, new inode
    copy.replace(shadow)
    with SSHTransport(info.address, info.port, "root", host_key=info.host_key, password=ROOT_PASSWORD) as t:
        assert t.run(["id", "-u"]).stdout.decode().strip() == "0"


def test_destroy_removes_namespace_processes_and_files():
    (host,) = create_lab(1)
    info, pid = host.info, host.state["sshd_pid"]
    assert info.namespace in _namespaces()
    host.destroy()
    host.destroy()  # idempotent
    assert info.namespace not in _namespaces()
    assert not Path(f"/proc/{pid}").exists() or "sshd" not in Path(f"/proc/{pid}/cmdline").read_text()
    assert not Path(info.workdir).exists()
    assert subprocess.run(["ip", "link", "show", f"vf{info.id}h"], capture_output=True).returncode != 0


def test_leftovers_of_a_crashed_run_are_cleaned_up():
    script = ("import os; from appliances.labhost import LabHost; "
              "h = LabHost.create('crashed-va', 'Root-Pass-1', 'User-Pass-1', 1); "
              "print(h.info.namespace, h.state['sshd_pid'], h.info.workdir, flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_DIR, timeout=60,
                         env={"PYTHONPATH": str(REPO_DIR), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                              "VAFLEET_VAR_DIR": str(var_dir())})
    namespace, pid, workdir = out.stdout.split()
    assert namespace in _namespaces()  # the crashed run left it behind
    removed = cleanup_leftovers()
    assert Path(workdir).name in removed
    assert namespace not in _namespaces()
    assert not Path(workdir).exists()
    assert not Path(f"/proc/{pid}").exists() or "sshd" not in Path(f"/proc/{pid}/cmdline").read_text()


def test_bad_configuration_is_refused_with_a_sentence():
    with pytest.raises(LabHostError, match="Host name 'bad name!' is not valid"):
        LabHost.create("bad name!", ROOT_PASSWORD, USER_PASSWORD, 1)
    with pytest.raises(LabHostError, match="at least one vCPU"):
        LabHost.create("ok-name", ROOT_PASSWORD, USER_PASSWORD, 0)


def test_static_addresses_follow_the_lab_rule_and_ids_are_checked():
    for address in ("10.231.0.1", "10.231.0.4", "10.232.0.2", "192.168.1.2", "not-an-address"):
        with pytest.raises(LabHostError, match=r"10\.231\.x\.y where y % 4 == 2"):
            LabHost.create("ok-name", ROOT_PASSWORD, USER_PASSWORD, 1, address=address)
    assert LabHost.find("../../etc") is None and LabHost.find("000000") is None
