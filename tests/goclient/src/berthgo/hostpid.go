package main

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func init() {
	register("kill-host-pid", "Killing the init of a container in the host's PID namespace kills all of its processes", runKillHostPID)
}

// waitGone waits (without polling) until process pid has exited, through a
// pidfd, for at most timeout.
func waitGone(pid int, timeout time.Duration) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err == unix.ESRCH {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pidfd_open(%d): %w", pid, err)
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(timeout/time.Millisecond))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll on the pidfd of %d: %w", pid, err)
		}
		if n == 0 {
			cmd, _ := readFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			return fmt.Errorf("process %d (%s) still runs %v after its container's init was killed",
				pid, strings.ReplaceAll(cmd, "\x00", " "), timeout)
		}
		return nil
	}
}

func runKillHostPID(e *env, _ []string) error {
	img, err := e.pull()
	if err != nil {
		return err
	}
	c, err := e.newContainer("hostpid", img,
		[]string{"sh", "-c", "sleep 1001 & echo $!; sleep 1002 & echo $!; wait"},
		oci.WithHostNamespace(specs.PIDNamespace))
	if err != nil {
		return err
	}
	defer e.removeContainer(c)
	r, w := io.Pipe()
	task, err := c.NewTask(e.ctx, cio.NewCreator(cio.WithStreams(nil, w, io.Discard)))
	if err != nil {
		return fmt.Errorf("NewTask: %w", err)
	}
	exitCh, err := task.Wait(e.ctx)
	if err != nil {
		return fmt.Errorf("Wait: %w", err)
	}
	if err := task.Start(e.ctx); err != nil {
		return fmt.Errorf("Start: %w", err)
	}
	// The children print their (host) pids once they run.
	var children []int
	lines := bufio.NewScanner(r)
	for len(children) < 2 && lines.Scan() {
		pid, err := strconv.Atoi(strings.TrimSpace(lines.Text()))
		if err != nil {
			return fmt.Errorf("unexpected output %q", lines.Text())
		}
		children = append(children, pid)
	}
	if len(children) < 2 {
		return fmt.Errorf("the container printed %d child pids", len(children))
	}
	go io.Copy(io.Discard, r)
	if err := task.Kill(e.ctx, signalKill); err != nil {
		return fmt.Errorf("Kill: %w", err)
	}
	code, _, err := (<-exitCh).Result()
	if err != nil {
		return fmt.Errorf("exit status: %w", err)
	}
	if err := expect("exit status", code, 137); err != nil {
		return err
	}
	for _, pid := range children {
		if err := waitGone(pid, 10*time.Second); err != nil {
			return err
		}
	}
	if _, err := task.Delete(e.ctx); err != nil {
		return fmt.Errorf("Delete: %w", err)
	}
	return nil
}
