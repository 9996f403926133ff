package main

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/remotes/docker"
)

// resolver reaches the local test registry.
func (e *env) resolver() containerd.RemoteOpt {
	hosts := docker.ConfigureDefaultRegistries()
	if e.plainHTTP {
		hosts = docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchAllHosts))
	}
	return containerd.WithResolver(docker.NewResolver(docker.ResolverOptions{Hosts: hosts}))
}

// pull pulls and unpacks the test image.
func (e *env) pull() (containerd.Image, error) {
	if e.image == "" {
		return nil, fmt.Errorf("this subcommand needs -image (the test image in a local registry)")
	}
	img, err := e.client.Pull(e.ctx, e.image, containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(e.snapshotter), e.resolver())
	if err != nil {
		return nil, fmt.Errorf("Pull(%s, WithPullUnpack): %w", e.image, err)
	}
	return img, nil
}

// newContainer creates container id from img running args, with a new
// snapshot and a spec from the image's config plus opts.
func (e *env) newContainer(id string, img containerd.Image, args []string, opts ...oci.SpecOpts) (containerd.Container, error) {
	specOpts := append([]oci.SpecOpts{oci.WithImageConfig(img), oci.WithProcessArgs(args...)}, opts...)
	c, err := e.client.NewContainer(e.ctx, id,
		containerd.WithSnapshotter(e.snapshotter),
		containerd.WithNewSnapshot(id+"-snap", img),
		containerd.WithRuntime(e.runtime, nil),
		containerd.WithNewSpec(specOpts...))
	if err != nil {
		return nil, fmt.Errorf("NewContainer(%s): %w", id, err)
	}
	return c, nil
}

// removeContainer deletes c's task (killing it) and c with its snapshot;
// for deferred cleanup, so errors are only reported.
func (e *env) removeContainer(c containerd.Container) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = withNamespace(ctx, e.namespace)
	if t, err := c.Task(ctx, nil); err == nil {
		_, _ = t.Delete(ctx, containerd.WithProcessKill)
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		fmt.Printf("cleanup: deleting container %s: %v\n", c.ID(), err)
	}
}

// buffer is a bytes.Buffer safe for the copy goroutines of cio.
type buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runToExit creates c's task with its output captured through FIFOs, waits
// (Wait before Start, as Docker does), starts it and returns the exit
// status, stdout and stderr once the task and its IO are done. The task is
// deleted.
func (e *env) runToExit(c containerd.Container) (uint32, string, string, error) {
	var stdout, stderr buffer
	task, err := c.NewTask(e.ctx, cio.NewCreator(cio.WithStreams(nil, &stdout, &stderr)))
	if err != nil {
		return 0, "", "", fmt.Errorf("NewTask: %w", err)
	}
	defer task.Delete(e.ctx, containerd.WithProcessKill)
	exitCh, err := task.Wait(e.ctx)
	if err != nil {
		return 0, "", "", fmt.Errorf("Wait before Start: %w", err)
	}
	if err := task.Start(e.ctx); err != nil {
		return 0, "", "", fmt.Errorf("Start: %w", err)
	}
	st := <-exitCh
	code, _, err := st.Result()
	if err != nil {
		return 0, "", "", fmt.Errorf("exit status: %w", err)
	}
	// Delete closes the IO after the copies drain.
	if _, err := task.Delete(e.ctx); err != nil {
		return 0, "", "", fmt.Errorf("Delete: %w", err)
	}
	return code, stdout.String(), stderr.String(), nil
}

// expect fails with what differed when got != want.
func expect(what string, got, want interface{}) error {
	if fmt.Sprint(got) != fmt.Sprint(want) {
		return fmt.Errorf("%s: got %q, want %q", what, fmt.Sprint(got), fmt.Sprint(want))
	}
	return nil
}

// signalKill is SIGKILL as the task API takes it.
const signalKill = syscall.SIGKILL

var (
	withProcessKill     = containerd.WithProcessKill
	withSnapshotCleanup = containerd.WithSnapshotCleanup
)

// cioStreams captures stdout and stderr of a process into out through FIFOs.
func cioStreams(out *buffer) cio.Creator {
	return cio.NewCreator(cio.WithStreams(nil, out, out))
}
