// Command vcsim-harness runs govmomi's vCenter simulator with an inventory shaped by flags.
//
// It prints one JSON line (url, host, port, user, password, thumbprint) once it serves,
// and exits when its standard input closes or it receives SIGTERM/SIGINT, so a test
// process that dies never leaves it running.
package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
)

type ready struct {
	URL        string `json:"url"`
	Host       string `json:"host"`
	Port       int    `json:"port"`
	User       string `json:"user"`
	Password   string `json:"password"`
	Thumbprint string `json:"thumbprint"`
	VMs        int    `json:"vms"`
	Hosts      int    `json:"hosts"`
}

func main() {
	var s shape
	listen := flag.String("listen", "127.0.0.1", "loopback address to listen on (port chosen by the kernel)")
	user := flag.String("user", "vcsim-admin", "user name accepted by the simulator")
	password := flag.String("password", "vcsim-Secret-1", "password accepted by the simulator")
	flag.IntVar(&s.datacenters, "dc", 1, "datacenters")
	flag.IntVar(&s.clusters, "clusters", 1, "clusters per datacenter")
	flag.IntVar(&s.clusterHosts, "cluster-hosts", 3, "hosts per cluster")
	flag.IntVar(&s.standalone, "standalone-hosts", 1, "standalone hosts per datacenter")
	flag.IntVar(&s.vms, "vms", 32, "VMs per datacenter, spread over all hosts")
	flag.IntVar(&s.sharedDatastores, "shared-ds", 2, "datastores mounted by every host of a datacenter")
	flag.BoolVar(&s.localDatastores, "local-ds", true, "one datastore per host, mounted by that host only")
	flag.IntVar(&s.standardPortgroups, "std-pg", 2, "standard port groups per datacenter (on every host)")
	flag.IntVar(&s.distributedPortgroups, "dv-pg", 2, "distributed port groups per datacenter")
	flag.IntVar(&s.folders, "folders", 2, "VM folders per datacenter (VMs are spread over them)")
	flag.IntVar(&s.taskDelay, "task-delay", 0, "milliseconds every *_Task call takes, to exercise progress")
	methodDelay := flag.String("method-delay", "", "extra delays, e.g. RetrievePropertiesEx=1500,Login=100 (ms)")
	esx := flag.Bool("esx", false, "act as a standalone ESXi host instead of vCenter (one host, no folders or switches)")
	flag.Parse()

	if ip := net.ParseIP(*listen); ip == nil || !ip.IsLoopback() {
		log.Fatalf("-listen %q: only loopback addresses are allowed", *listen)
	}

	model := simulator.VPX()
	model.Datacenter = s.datacenters
	model.Cluster = s.clusters
	model.ClusterHost = s.clusterHosts
	model.Host = s.standalone
	model.Portgroup = s.distributedPortgroups
	if *esx {
		model = simulator.ESX()
		s.folders, s.distributedPortgroups = 0, 0
	}
	model.Machine = 0   // VMs are created below, spread over hosts and datastores
	model.Datastore = 0 // shared and host-local datastores are created below
	model.Autostart = false
	if err := model.Create(); err != nil {
		log.Fatalf("creating the inventory: %v", err)
	}
	defer model.Remove()

	ctx := context.Background()
	client, err := vim25.NewClient(ctx, model.Service)
	if err != nil {
		log.Fatalf("in-process client: %v", err)
	}
	tracker := newChangeTracker()
	counts, err := shapeInventory(ctx, client, s, tracker)
	if err != nil {
		log.Fatalf("shaping the inventory: %v", err)
	}
	installPagingCollector(model.ServiceContent.PropertyCollector)

	cert, err := freshCertificate(*listen)
	if err != nil {
		log.Fatalf("certificate: %v", err)
	}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	model.Service.Listen = &url.URL{
		Host: net.JoinHostPort(*listen, "0"),
		User: url.UserPassword(*user, *password),
	}
	server := model.Service.NewServer()
	defer server.Close()
	server.Config.Handler = newFolderAuth().handler(tracker.handler(server.Config.Handler)) // before any client connects
	if err := applyDelays(model, s.taskDelay, *methodDelay); err != nil {
		log.Fatalf("-method-delay: %v", err)
	}

	port, _ := strconv.Atoi(server.URL.Port())
	sum := sha256.Sum256(server.Certificate().Raw)
	hexes := make([]string, len(sum))
	for i, b := range sum {
		hexes[i] = fmt.Sprintf("%02X", b)
	}
	endpoint := *server.URL
	endpoint.User = nil
	line, _ := json.Marshal(ready{
		URL: endpoint.String(), Host: *listen, Port: port, User: *user, Password: *password,
		Thumbprint: strings.Join(hexes, ":"), VMs: counts.vms, Hosts: counts.hosts,
	})
	fmt.Println(string(line))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin) // returns when the parent closes our stdin or dies
		stop <- syscall.SIGTERM
	}()
	<-stop
}

// applyDelays makes *_Task calls take taskMs and the named methods their own delay, in milliseconds.
func applyDelays(model *simulator.Model, taskMs int, methods string) error {
	delays := map[string]int{}
	if taskMs > 0 {
		for _, name := range []string{
			"CreateSnapshot_Task", "RemoveSnapshot_Task", "ReconfigVM_Task", "CreateVM_Task", "Destroy_Task",
		} {
			delays[name] = taskMs
		}
	}
	for _, item := range strings.Split(methods, ",") {
		if item == "" {
			continue
		}
		name, value, ok := strings.Cut(item, "=")
		ms, err := strconv.Atoi(value)
		if !ok || err != nil {
			return fmt.Errorf("%q is not Method=milliseconds", item)
		}
		delays[name] = ms
	}
	model.DelayConfig.MethodDelay = delays
	return nil
}
