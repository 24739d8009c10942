package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/google/uuid"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// changeTracker adds changed block tracking, which the stock simulator lacks.
// Tests record guest writes with POST /vcsim/cbt/write; each write advances the disk's
// change id ("52 <uuid>/<sequence>"), which snapshots capture like vSphere does, and
// QueryChangedDiskAreas answers from the recorded extents, in windows so clients must page.
type changeTracker struct {
	self   types.ManagedObjectReference
	mu     sync.Mutex
	disks  map[string]*diskLog // "<vm moref>/<device key>"
	window int64               // bytes covered by one QueryChangedDiskAreas answer
}

type diskLog struct {
	id     string
	writes []types.DiskChangeExtent // write n has sequence n+1
}

// trackerRef is where QueryChangedDiskAreas calls are routed (the simulator dispatches by object).
// Its own type keeps it out of everything that walks the simulator's VMs.
var trackerRef = types.ManagedObjectReference{Type: "VcsimChangeTracker", Value: "vcsim-change-tracker"}

var thisElement = regexp.MustCompile(`<_this[^>]*>[^<]*</_this>`)

func newChangeTracker() *changeTracker {
	t := &changeTracker{self: trackerRef, disks: map[string]*diskLog{}, window: 4 << 30}
	simulator.Map.Put(t)
	return t
}

func (t *changeTracker) Reference() types.ManagedObjectReference { return t.self }

// enable gives every disk of a VM with change tracking on its first change id.
func (t *changeTracker) enable(vm *simulator.VirtualMachine) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, device := range vm.Config.Hardware.Device {
		if disk, ok := device.(*types.VirtualDisk); ok {
			log := &diskLog{id: "52 " + uuid.New().String()}
			t.disks[diskKey(vm.Self.Value, disk.Key)] = log
			setChangeID(vm, disk.Key, log.id+"/0")
		}
	}
}

func diskKey(vm string, key int32) string { return fmt.Sprintf("%s/%d", vm, key) }

// setChangeID gives the VM a new device list, so snapshots (which share the old one) keep their change id.
func setChangeID(vm *simulator.VirtualMachine, key int32, changeID string) {
	devices := make([]types.BaseVirtualDevice, len(vm.Config.Hardware.Device))
	copy(devices, vm.Config.Hardware.Device)
	for i, device := range devices {
		disk, ok := device.(*types.VirtualDisk)
		if !ok || disk.Key != key {
			continue
		}
		if backing, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
			diskCopy, backingCopy := *disk, *backing
			backingCopy.ChangeId = changeID
			diskCopy.Backing = &backingCopy
			devices[i] = &diskCopy
		}
	}
	vm.Config.Hardware.Device = devices
}

type writeRequest struct {
	VM     string `json:"vm"`
	Key    int32  `json:"key"`
	Start  int64  `json:"start"`
	Length int64  `json:"length"`
}

// record handles POST /vcsim/cbt/write: a guest wrote `length` bytes at `start` of a disk.
func (t *changeTracker) record(w http.ResponseWriter, r *http.Request) {
	var req writeRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Length <= 0 || req.Start < 0 {
		http.Error(w, "expected JSON {vm, key, start, length>0}", http.StatusBadRequest)
		return
	}
	vm, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachine", Value: req.VM}).(*simulator.VirtualMachine)
	if !ok {
		http.Error(w, "no such VM", http.StatusNotFound)
		return
	}
	t.mu.Lock()
	log, ok := t.disks[diskKey(req.VM, req.Key)]
	var changeID string
	if ok {
		log.writes = append(log.writes, types.DiskChangeExtent{Start: req.Start, Length: req.Length})
		changeID = fmt.Sprintf("%s/%d", log.id, len(log.writes))
	}
	t.mu.Unlock()
	if !ok {
		http.Error(w, "change tracking is off for this disk", http.StatusConflict)
		return
	}
	simulator.Map.WithLock(vm, func() { setChangeID(vm, req.Key, changeID) })
	_ = json.NewEncoder(w).Encode(map[string]string{"change_id": changeID})
}

// QueryChangedDiskAreas answers for the disk as it was when the snapshot was taken.
func (t *changeTracker) QueryChangedDiskAreas(ctx *simulator.Context, req *types.QueryChangedDiskAreas) soap.HasFault {
	body := &methods.QueryChangedDiskAreasBody{}
	fail := func(msg string, fault types.BaseMethodFault) soap.HasFault {
		body.Fault_ = simulator.Fault(msg, fault)
		return body
	}
	if req.Snapshot == nil {
		return fail("a snapshot is required", &types.InvalidArgument{InvalidProperty: "snapshot"})
	}
	snapshot, ok := simulator.Map.Get(*req.Snapshot).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return fail("", &types.ManagedObjectNotFound{Obj: *req.Snapshot})
	}
	var disk *types.VirtualDisk
	for _, device := range snapshot.Config.Hardware.Device {
		if d, ok := device.(*types.VirtualDisk); ok && d.Key == req.DeviceKey {
			disk = d
		}
	}
	if disk == nil {
		return fail("no such disk", &types.InvalidArgument{InvalidProperty: "deviceKey"})
	}
	backing, _ := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	if backing == nil || backing.ChangeId == "" {
		return fail("change tracking is not enabled for this disk", &types.FileFault{File: diskKey(snapshot.Vm.Value, disk.Key)})
	}
	t.mu.Lock()
	log := t.disks[diskKey(snapshot.Vm.Value, req.DeviceKey)]
	var writes []types.DiskChangeExtent
	if log != nil {
		writes = append(writes, log.writes...)
	}
	t.mu.Unlock()
	if log == nil {
		return fail("no change log for this disk", &types.FileFault{File: backing.FileName})
	}
	upto := sequence(backing.ChangeId, log.id)
	from := 0
	if req.ChangeId != "*" {
		from = sequence(req.ChangeId, log.id)
		if from < 0 || from > upto {
			return fail("unknown change id "+req.ChangeId, &types.FileFault{File: backing.FileName})
		}
	}
	capacity := disk.CapacityInBytes
	if capacity == 0 {
		capacity = disk.CapacityInKB * 1024
	}
	end := req.StartOffset + t.window
	if end > capacity {
		end = capacity
	}
	info := types.DiskChangeInfo{StartOffset: req.StartOffset, Length: end - req.StartOffset}
	info.ChangedArea = clip(merge(writes[from:upto]), req.StartOffset, end)
	body.Res = &types.QueryChangedDiskAreasResponse{Returnval: info}
	return body
}

// sequence returns N of a change id "<id>/N" of this disk, or -1.
func sequence(changeID, id string) int {
	prefix, n, ok := strings.Cut(changeID, "/")
	var seq int
	if !ok || prefix != id {
		return -1
	}
	if _, err := fmt.Sscanf(n, "%d", &seq); err != nil {
		return -1
	}
	return seq
}

func merge(extents []types.DiskChangeExtent) []types.DiskChangeExtent {
	sorted := append([]types.DiskChangeExtent(nil), extents...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Start < sorted[j].Start })
	var out []types.DiskChangeExtent
	for _, e := range sorted {
		if n := len(out); n > 0 && e.Start <= out[n-1].Start+out[n-1].Length {
			if end := e.Start + e.Length; end > out[n-1].Start+out[n-1].Length {
				out[n-1].Length = end - out[n-1].Start
			}
			continue
		}
		out = append(out, e)
	}
	return out
}

func clip(extents []types.DiskChangeExtent, start, end int64) []types.DiskChangeExtent {
	var out []types.DiskChangeExtent
	for _, e := range extents {
		s, f := e.Start, e.Start+e.Length
		if s < start {
			s = start
		}
		if f > end {
			f = end
		}
		if s < f {
			out = append(out, types.DiskChangeExtent{Start: s, Length: f - s})
		}
	}
	return out
}

// handler routes change tracking requests and passes everything else to the simulator.
func (t *changeTracker) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/vcsim/cbt/write" && r.Method == http.MethodPost {
			t.record(w, r)
			return
		}
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/sdk") {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if bytes.Contains(body, []byte("QueryChangedDiskAreas")) {
				this := fmt.Sprintf(`<_this type="%s">%s</_this>`, trackerRef.Type, trackerRef.Value)
				body = thisElement.ReplaceAll(body, []byte(this))
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
		}
		next.ServeHTTP(w, r)
	})
}
