package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

type shape struct {
	datacenters, clusters, clusterHosts, standalone, vms        int
	sharedDatastores, standardPortgroups, distributedPortgroups int
	folders, taskDelay                                          int
	localDatastores                                             bool
}

type built struct{ vms, hosts int }

const gib = int64(1) << 30

var guests = []string{"otherGuest64", "ubuntu64Guest", "windows9Server64Guest", "rhel8_64Guest", "debian11_64Guest"}

// dcParts is what VMs of one datacenter are spread over.
type dcParts struct {
	hosts    []*object.HostSystem
	pools    []*object.ResourcePool
	shared   []string          // datastore names mounted by every host
	local    map[string]string // host moref -> its own datastore name
	networks []types.BaseVirtualDeviceBackingInfo
	folders  []*object.Folder
}

func shapeInventory(ctx context.Context, c *vim25.Client, s shape, tracker *changeTracker) (built, error) {
	var total built
	finder := find.NewFinder(c, false)
	dcs, err := finder.DatacenterList(ctx, "*")
	if err != nil {
		return total, err
	}
	var fields *object.CustomFieldsManager // ESXi has no custom fields
	var policy int32
	if c.ServiceContent.CustomFieldsManager != nil {
		fields = object.NewCustomFieldsManager(c)
		def, err := fields.Add(ctx, "backup-policy", "VirtualMachine", nil, nil)
		if err != nil {
			return total, err
		}
		policy = def.Key
	}
	for _, dc := range dcs {
		finder.SetDatacenter(dc)
		parts, err := buildDatacenter(ctx, c, finder, dc, s)
		if err != nil {
			return total, fmt.Errorf("%s: %w", dc.Name(), err)
		}
		total.hosts += len(parts.hosts)
		if len(parts.hosts) == 0 {
			continue
		}
		for i := 0; i < s.vms; i++ {
			if err := createVM(ctx, dc, parts, i, s.vms, fields, policy, tracker); err != nil {
				return total, fmt.Errorf("VM %d: %w", i, err)
			}
			total.vms++
		}
	}
	markUplinks()
	return total, nil
}

func buildDatacenter(ctx context.Context, c *vim25.Client, finder *find.Finder, dc *object.Datacenter, s shape) (*dcParts, error) {
	parts := &dcParts{local: map[string]string{}}
	hosts, err := finder.HostSystemList(ctx, "*/*")
	if err != nil {
		return nil, err
	}
	parts.hosts = hosts
	for _, host := range hosts {
		pool, err := host.ResourcePool(ctx)
		if err != nil {
			return nil, err
		}
		parts.pools = append(parts.pools, pool)
	}
	dcName := dc.Name()
	for i := 0; i < s.sharedDatastores; i++ {
		name := fmt.Sprintf("%s_shared%d", dcName, i)
		if err := createDatastore(ctx, name, hosts); err != nil {
			return nil, err
		}
		parts.shared = append(parts.shared, name)
	}
	if s.localDatastores {
		for _, host := range hosts {
			name := host.Name() + "_local"
			if err := createDatastore(ctx, name, []*object.HostSystem{host}); err != nil {
				return nil, err
			}
			parts.local[host.Reference().Value] = name
		}
	}
	if err := addStandardPortgroups(ctx, c, dc, hosts, s.standardPortgroups); err != nil {
		return nil, err
	}
	nets, err := finder.NetworkList(ctx, "*")
	if err != nil {
		return nil, err
	}
	for _, n := range nets {
		if strings.Contains(n.GetInventoryPath(), "DVUplinks") {
			continue // uplink port groups carry no VM traffic
		}
		backing, err := n.EthernetCardBackingInfo(ctx)
		if err == nil {
			parts.networks = append(parts.networks, backing)
		}
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		return nil, err
	}
	parent := folders.VmFolder
	parts.folders = append(parts.folders, parent)
	for i := 0; i < s.folders; i++ {
		// the second folder nests inside the first, so folder paths have depth
		f, err := parent.CreateFolder(ctx, fmt.Sprintf("Folder%d", i))
		if err != nil {
			return nil, err
		}
		parts.folders = append(parts.folders, f)
		if i == 0 {
			parent = f
		}
	}
	return parts, nil
}

// createDatastore makes one datastore (a temporary directory) mounted by exactly these hosts.
func createDatastore(ctx context.Context, name string, hosts []*object.HostSystem) error {
	dir, err := os.MkdirTemp("", "vcsim-ds-")
	if err != nil {
		return err
	}
	var ref types.ManagedObjectReference
	for i, host := range hosts {
		dss, err := host.ConfigManager().DatastoreSystem(ctx)
		if err != nil {
			return err
		}
		if i == 0 {
			ds, err := dss.CreateLocalDatastore(ctx, name, dir)
			if err != nil {
				return err
			}
			ref = ds.Reference()
			continue
		}
		mountOn(ref, host.Reference())
	}
	return nil
}

// mountOn adds a host mount to a datastore inside the simulator (its API mounts one host per call).
func mountOn(dsRef, hostRef types.ManagedObjectReference) {
	ds := simulator.Map.Get(dsRef).(*simulator.Datastore)
	host := simulator.Map.Get(hostRef).(*simulator.HostSystem)
	ds.Host = append(ds.Host, types.DatastoreHostMount{
		Key: hostRef,
		MountInfo: types.HostMountInfo{
			AccessMode: string(types.HostMountModeReadWrite),
			Mounted:    types.NewBool(true),
			Accessible: types.NewBool(true),
		},
	})
	host.Datastore = append(host.Datastore, dsRef)
	if dss, ok := simulator.Map.Get(*host.ConfigManager.DatastoreSystem).(*simulator.HostDatastoreSystem); ok {
		dss.Datastore = append(dss.Datastore, dsRef)
	}
	if cr, ok := simulator.Map.Get(*host.Parent).(*simulator.ClusterComputeResource); ok {
		simulator.Map.AddReference(cr, &cr.Datastore, dsRef)
	}
}

// addStandardPortgroups adds port groups on vSwitch0 of every host of the datacenter.
func addStandardPortgroups(ctx context.Context, c *vim25.Client, dc *object.Datacenter, hosts []*object.HostSystem, n int) error {
	if len(hosts) == 0 {
		return nil
	}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%s_PG%d", dc.Name(), i)
		ns, err := hosts[0].ConfigManager().NetworkSystem(ctx)
		if err != nil {
			return err
		}
		spec := types.HostPortGroupSpec{Name: name, VlanId: int32(100 + i), VswitchName: "vSwitch0"}
		if err := ns.AddPortGroup(ctx, spec); err != nil {
			return err
		}
		folders, err := dc.Folders(ctx)
		if err != nil {
			return err
		}
		folder := simulator.Map.Get(folders.NetworkFolder.Reference()).(*simulator.Folder)
		network, ok := simulator.Map.FindByName(name, folder.ChildEntity).(*mo.Network)
		if !ok {
			return fmt.Errorf("port group %s was not created", name)
		}
		for _, h := range hosts {
			host := simulator.Map.Get(h.Reference()).(*simulator.HostSystem)
			host.Network = append(host.Network, network.Self)
			network.Host = append(network.Host, h.Reference())
			addToHostConfig(host, spec)
		}
	}
	return nil
}

func createVM(ctx context.Context, dc *object.Datacenter, p *dcParts, i, n int, fields *object.CustomFieldsManager, policy int32, tracker *changeTracker) error {
	host := p.hosts[i%len(p.hosts)]
	pool := p.pools[i%len(p.hosts)]
	name := fmt.Sprintf("%s_VM%03d", dc.Name(), i)
	ds := p.shared[i%len(p.shared)]
	if local, ok := p.local[host.Reference().Value]; ok && i%2 == 1 {
		ds = local
	}
	config := types.VirtualMachineConfigSpec{
		Name:                  name,
		GuestId:               guests[i%len(guests)],
		NumCPUs:               int32(1 + i%4),
		MemoryMB:              int64(512 * (1 + i%8)),
		ChangeTrackingEnabled: types.NewBool(i%3 == 0),
		Files:                 &types.VirtualMachineFileInfo{VmPathName: "[" + ds + "]"},
	}
	var devices object.VirtualDeviceList
	scsi, _ := devices.CreateSCSIController("pvscsi")
	devices = append(devices, scsi)
	disk := devices.CreateDisk(scsi.(types.BaseVirtualController), types.ManagedObjectReference{},
		fmt.Sprintf("[%s] %s/%s.vmdk", ds, name, name))
	disk.CapacityInKB = (int64(8+i%5) * gib) >> 10
	disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo).ThinProvisioned = types.NewBool(i%2 == 0)
	devices = append(devices, disk)
	if i%4 == 1 {
		// a second disk on a shared datastore, so some VMs span two datastores
		dir := fmt.Sprintf("[%s] %s", p.shared[0], name)
		if err := object.NewFileManager(dc.Client()).MakeDirectory(ctx, dir, dc, true); err != nil {
			return err
		}
		data := devices.CreateDisk(scsi.(types.BaseVirtualController), types.ManagedObjectReference{},
			fmt.Sprintf("[%s] %s/%s_1.vmdk", p.shared[0], name, name))
		data.CapacityInKB = (int64(100) * gib) >> 10
		if i%8 == 5 {
			data.Backing.(*types.VirtualDiskFlatVer2BackingInfo).DiskMode = string(types.VirtualDiskModeIndependent_persistent)
		}
		devices = append(devices, data)
	}
	if len(p.networks) > 0 {
		nic, err := devices.CreateEthernetCard("vmxnet3", p.networks[i%len(p.networks)])
		if err != nil {
			return err
		}
		devices = append(devices, nic)
	}
	var err error
	config.DeviceChange, err = devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
	if err != nil {
		return err
	}
	folder := p.folders[i%len(p.folders)]
	task, err := folder.CreateVM(ctx, config, pool, host)
	if err != nil {
		return err
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		return err
	}
	vm := object.NewVirtualMachine(folder.Client(), info.Result.(types.ManagedObjectReference))
	if i%3 == 0 {
		tracker.enable(simulator.Map.Get(vm.Reference()).(*simulator.VirtualMachine))
	}
	if i%5 == 0 && fields != nil {
		if err := fields.Set(ctx, vm.Reference(), policy, []string{"gold", "silver"}[i%2]); err != nil {
			return err
		}
	}
	if i == n-1 && n >= 10 {
		return vm.MarkAsTemplate(ctx) // one template per datacenter, powered off
	}
	if i%3 != 2 {
		task, err := vm.PowerOn(ctx)
		if err != nil {
			return err
		}
		return task.Wait(ctx)
	}
	return nil
}

// markUplinks reports each switch's uplink port group the way vCenter does (the simulator leaves it out).
func markUplinks() {
	for _, e := range simulator.Map.All("DistributedVirtualSwitch") {
		dvs, ok := e.(*simulator.DistributedVirtualSwitch)
		if !ok {
			continue
		}
		config := dvs.Config.GetDVSConfigInfo()
		for _, ref := range dvs.Portgroup {
			pg, ok := simulator.Map.Get(ref).(*simulator.DistributedVirtualPortgroup)
			if ok && strings.Contains(pg.Name, "DVUplinks") {
				config.UplinkPortgroup = append(config.UplinkPortgroup, ref)
				pg.Tag = append(pg.Tag, types.Tag{Key: "SYSTEM/DVS.UPLINKPG"})
			}
		}
	}
}

// addToHostConfig lists the port group (with its VLAN) in the host's config.network, as ESXi does.
func addToHostConfig(host *simulator.HostSystem, spec types.HostPortGroupSpec) {
	if host.Config == nil || host.Config.Network == nil {
		return
	}
	for _, pg := range host.Config.Network.Portgroup {
		if pg.Spec.Name == spec.Name {
			return // hosts may share one config object
		}
	}
	host.Config.Network.Portgroup = append(host.Config.Network.Portgroup, types.HostPortGroup{
		Key:  "key-vim.host.PortGroup-" + spec.Name,
		Spec: spec,
	})
}
