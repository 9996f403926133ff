package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/runtime/v2/runc/options"
)

func init() {
	register("shim-cgroup", "-cgroup PATH: runc Options.ShimCgroup puts the task's shim into that (existing) cgroup", runShimCgroup)
}

// cgroupProcs lists the pids in cgroup path, on every hierarchy that has it.
func cgroupProcs(path string) ([]string, error) {
	var files []string
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		files = []string{filepath.Join("/sys/fs/cgroup", path, "cgroup.procs")}
	} else {
		files, _ = filepath.Glob(filepath.Join("/sys/fs/cgroup/*", path, "cgroup.procs"))
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("cgroup %s exists in no hierarchy: the test must create it", path)
	}
	var pids []string
	for _, f := range files {
		text, err := readFile(f)
		if err != nil {
			return nil, err
		}
		pids = append(pids, strings.Fields(text)...)
	}
	return pids, nil
}

func runShimCgroup(e *env, args []string) error {
	fs := flag.NewFlagSet("shim-cgroup", flag.ContinueOnError)
	cg := fs.String("cgroup", "", "the cgroup the shim goes into")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cg == "" {
		return fmt.Errorf("needs -cgroup")
	}
	img, err := e.pull()
	if err != nil {
		return err
	}
	const id = "shimcg"
	c, err := e.client.NewContainer(e.ctx, id,
		containerd.WithSnapshotter(e.snapshotter),
		containerd.WithNewSnapshot(id+"-snap", img),
		containerd.WithRuntime(e.runtime, &options.Options{ShimCgroup: *cg}),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("sleep", "1000")))
	if err != nil {
		return fmt.Errorf("NewContainer: %w", err)
	}
	defer e.removeContainer(c)
	task, err := c.NewTask(e.ctx, cio.NullIO)
	if err != nil {
		return fmt.Errorf("NewTask: %w", err)
	}
	defer task.Delete(e.ctx, containerd.WithProcessKill)
	pids, err := cgroupProcs(*cg)
	if err != nil {
		return err
	}
	for _, pid := range pids {
		cmd, _ := readFile("/proc/" + pid + "/cmdline")
		argv := strings.Split(cmd, "\x00")
		if strings.Contains(argv[0], "containerd-shim") && strings.Contains(cmd, "\x00-id\x00"+id+"\x00") {
			return nil
		}
	}
	return fmt.Errorf("no shim of task %s in cgroup %s (its processes: %v)", id, *cg, pids)
}
