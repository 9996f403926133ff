package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/containerd/leases"
)

func init() {
	register("fd-leak", "-pid PID: a container+task+exec cycle leaves no fd open in the daemon", runFdLeak)
}

func readFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}

// openFds maps each fd of process pid to what it points at.
func openFds(pid int) (map[string]string, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	fds := map[string]string{}
	for _, ent := range entries {
		target, err := os.Readlink(filepath.Join(dir, ent.Name()))
		if err != nil {
			continue // closed while we looked
		}
		fds[ent.Name()] = target
	}
	return fds, nil
}

// cycle runs a container with captured output and an exec, then deletes
// everything.
func (e *env) cycle(id string) error {
	c, task, err := e.startSleeper(id)
	if err != nil {
		return err
	}
	defer e.removeContainer(c)
	spec, err := c.Spec(e.ctx)
	if err != nil {
		return fmt.Errorf("Spec: %w", err)
	}
	pspec := spec.Process
	pspec.Args = []string{"sh", "-c", "echo hi; echo there >&2"}
	var out buffer
	p, err := task.Exec(e.ctx, "x", pspec, cioStreams(&out))
	if err != nil {
		return fmt.Errorf("Exec: %w", err)
	}
	exitCh, err := p.Wait(e.ctx)
	if err != nil {
		return fmt.Errorf("exec Wait: %w", err)
	}
	if err := p.Start(e.ctx); err != nil {
		return fmt.Errorf("exec Start: %w", err)
	}
	<-exitCh
	if _, err := p.Delete(e.ctx); err != nil {
		return fmt.Errorf("exec Delete: %w", err)
	}
	if err := task.Kill(e.ctx, signalKill); err != nil {
		return fmt.Errorf("Kill: %w", err)
	}
	if _, err := task.Delete(e.ctx, withProcessKill); err != nil {
		return fmt.Errorf("Delete: %w", err)
	}
	if err := c.Delete(e.ctx, withSnapshotCleanup); err != nil {
		return fmt.Errorf("container Delete: %w", err)
	}
	return nil
}

// collectNow runs a garbage collection and waits for it (deleting a lease
// with SynchronousDelete), as containerd's clients do when they need the
// store settled. A removed snapshot's directory is deleted after
// Snapshots.Remove answers (containerd leaves it to its collector, berthd
// starts at once); a synchronous collection waits for that deletion, so the
// fds it holds meanwhile are not counted as leaks.
func (e *env) collectNow() error {
	lm := e.client.LeasesService()
	l, err := lm.Create(e.ctx, leases.WithRandomID())
	if err != nil {
		return fmt.Errorf("Leases.Create: %w", err)
	}
	if err := lm.Delete(e.ctx, l, leases.SynchronousDelete); err != nil {
		return fmt.Errorf("Leases.Delete (sync): %w", err)
	}
	return nil
}

func runFdLeak(e *env, args []string) error {
	fs := flag.NewFlagSet("fd-leak", flag.ContinueOnError)
	pid := fs.Int("pid", 0, "the daemon's pid")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pid == 0 {
		return fmt.Errorf("needs -pid (the daemon's pid)")
	}
	// A first cycle opens whatever the daemon keeps for good (pools, caches).
	if err := e.cycle("fd-warmup"); err != nil {
		return err
	}
	if err := e.collectNow(); err != nil {
		return err
	}
	before, err := openFds(*pid)
	if err != nil {
		return err
	}
	if err := e.cycle("fd-check"); err != nil {
		return err
	}
	if err := e.collectNow(); err != nil {
		return err
	}
	after, err := openFds(*pid)
	if err != nil {
		return err
	}
	var leaked []string
	for fd, target := range after {
		if before[fd] != target {
			leaked = append(leaked, fd+" -> "+target)
		}
	}
	sort.Strings(leaked)
	if len(leaked) > 0 {
		return fmt.Errorf("the daemon (pid %d) has %d more fds open after the container was deleted (%d before):\n  %s",
			*pid, len(leaked), len(before), strings.Join(leaked, "\n  "))
	}
	return nil
}
