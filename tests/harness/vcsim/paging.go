package main

import (
	"strconv"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// pagingCollector adds what the stock simulator lacks: RetrievePropertiesEx honours
// options.maxObjects and hands out a token; ContinueRetrievePropertiesEx returns the next page.
// Every session gets a zero value of this type (the simulator clones the singleton per session).
type pagingCollector struct {
	simulator.PropertyCollector

	pagesMu sync.Mutex
	next    int
	pages   map[string]pending
}

type pending struct {
	objects []types.ObjectContent
	max     int
}

func installPagingCollector(ref types.ManagedObjectReference) {
	pc := &pagingCollector{}
	pc.Self = ref
	simulator.Map.Put(pc)
}

func (pc *pagingCollector) RetrievePropertiesEx(ctx *simulator.Context, r *types.RetrievePropertiesEx) soap.HasFault {
	body := pc.PropertyCollector.RetrievePropertiesEx(ctx, r).(*methods.RetrievePropertiesExBody)
	if body.Fault_ != nil || body.Res == nil || body.Res.Returnval == nil {
		return body
	}
	page := pc.page(body.Res.Returnval.Objects, int(r.Options.MaxObjects))
	body.Res.Returnval = &page
	return body
}

func (pc *pagingCollector) ContinueRetrievePropertiesEx(ctx *simulator.Context, r *types.ContinueRetrievePropertiesEx) soap.HasFault {
	body := &methods.ContinueRetrievePropertiesExBody{}
	pc.pagesMu.Lock()
	rest, ok := pc.pages[r.Token]
	delete(pc.pages, r.Token)
	pc.pagesMu.Unlock()
	if !ok {
		body.Fault_ = simulator.Fault("unknown or finished token", &types.InvalidArgument{InvalidProperty: "token"})
		return body
	}
	body.Res = &types.ContinueRetrievePropertiesExResponse{Returnval: pc.page(rest.objects, rest.max)}
	return body
}

func (pc *pagingCollector) CancelRetrievePropertiesEx(ctx *simulator.Context, r *types.CancelRetrievePropertiesEx) soap.HasFault {
	pc.pagesMu.Lock()
	delete(pc.pages, r.Token)
	pc.pagesMu.Unlock()
	return &methods.CancelRetrievePropertiesExBody{Res: &types.CancelRetrievePropertiesExResponse{}}
}

// page returns the first max objects and keeps the rest under a new token.
func (pc *pagingCollector) page(objects []types.ObjectContent, max int) types.RetrieveResult {
	if max <= 0 || len(objects) <= max {
		return types.RetrieveResult{Objects: objects}
	}
	pc.pagesMu.Lock()
	defer pc.pagesMu.Unlock()
	if pc.pages == nil {
		pc.pages = map[string]pending{}
	}
	pc.next++
	token := strconv.Itoa(pc.next)
	pc.pages[token] = pending{objects: objects[max:], max: max}
	return types.RetrieveResult{Objects: objects[:max], Token: token}
}
