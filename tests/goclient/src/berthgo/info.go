package main

import (
	"fmt"

	"github.com/containerd/containerd/defaults"
)

func init() {
	register("info", "Version, Server (UUID), IsServing, Plugins, namespace runtime label: what Docker and nerdctl ask at startup", runInfo)
}

func runInfo(e *env, _ []string) error {
	serving, err := e.client.IsServing(e.ctx)
	if err != nil || !serving {
		return fmt.Errorf("IsServing: %v, %v", serving, err)
	}
	v, err := e.client.Version(e.ctx)
	if err != nil {
		return fmt.Errorf("Version: %w", err)
	}
	if v.Version == "" || v.Revision == "" {
		return fmt.Errorf("Version: empty fields: %+v", v)
	}
	srv, err := e.client.Server(e.ctx)
	if err != nil {
		return fmt.Errorf("Server: %w", err)
	}
	if srv.UUID == "" {
		return fmt.Errorf("Server: no UUID")
	}
	again, err := e.client.Server(e.ctx)
	if err != nil || again.UUID != srv.UUID {
		return fmt.Errorf("Server: UUID changed between calls (%s, %v)", again.UUID, err)
	}
	label, err := e.client.GetLabel(e.ctx, defaults.DefaultRuntimeNSLabel)
	if err != nil {
		return fmt.Errorf("GetLabel(%s) of a namespace not created yet: %w", defaults.DefaultRuntimeNSLabel, err)
	}
	if label != "" {
		return fmt.Errorf("GetLabel: %q on a fresh namespace", label)
	}
	// nerdctl looks up snapshotters this way; the gRPC services must be listed.
	want := map[string][]string{
		"io.containerd.snapshotter.v1": {e.snapshotter},
		"io.containerd.grpc.v1": {"content", "snapshots", "images", "containers", "tasks",
			"leases", "namespaces", "events", "introspection", "diff", "version"},
	}
	for typ, ids := range want {
		for _, id := range ids {
			resp, err := e.client.IntrospectionService().Plugins(e.ctx, []string{`type=="` + typ + `",id=="` + id + `"`})
			if err != nil {
				return fmt.Errorf("Plugins: %w", err)
			}
			if len(resp.Plugins) != 1 {
				return fmt.Errorf("Plugins: no %s.%s", typ, id)
			}
			if p := resp.Plugins[0]; p.InitErr != nil {
				return fmt.Errorf("Plugins: %s.%s failed: %s", typ, id, p.InitErr.Message)
			}
		}
	}
	return nil
}
