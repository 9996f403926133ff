package main

import (
	"fmt"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
)

func init() {
	register("run", "Pull+unpack, NewContainer, NewTask with FIFOs, Wait before Start, exit status, Delete", runRun)
	register("kill", "Kill a running task with SIGKILL: exit status 137, Delete reports it", runKill)
	register("exec", "Exec a process in a running task: its output, exit status, Delete", runExec)
}

func runRun(e *env, _ []string) error {
	img, err := e.pull()
	if err != nil {
		return err
	}
	c, err := e.newContainer("run", img, []string{"sh", "-c", "echo out; echo err >&2; exit 3"})
	if err != nil {
		return err
	}
	defer e.removeContainer(c)
	code, stdout, stderr, err := e.runToExit(c)
	if err != nil {
		return err
	}
	if err := expect("exit status", code, 3); err != nil {
		return err
	}
	if err := expect("stdout", stdout, "out\n"); err != nil {
		return err
	}
	if err := expect("stderr", stderr, "err\n"); err != nil {
		return err
	}
	if _, err := c.Task(e.ctx, nil); err == nil {
		return fmt.Errorf("the task still exists after Delete")
	}
	return nil
}

func runKill(e *env, _ []string) error {
	img, err := e.pull()
	if err != nil {
		return err
	}
	c, err := e.newContainer("kill", img, []string{"sleep", "1000"})
	if err != nil {
		return err
	}
	defer e.removeContainer(c)
	task, err := c.NewTask(e.ctx, cio.NullIO)
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
	st, err := task.Status(e.ctx)
	if err != nil {
		return fmt.Errorf("Status: %w", err)
	}
	if err := expect("status after Start", st.Status, containerd.Running); err != nil {
		return err
	}
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
	st, err = task.Status(e.ctx)
	if err != nil {
		return fmt.Errorf("Status after exit: %w", err)
	}
	if err := expect("status after exit", st.Status, containerd.Stopped); err != nil {
		return err
	}
	deleted, err := task.Delete(e.ctx)
	if err != nil {
		return fmt.Errorf("Delete: %w", err)
	}
	return expect("exit status from Delete", deleted.ExitCode(), 137)
}

func runExec(e *env, _ []string) error {
	img, err := e.pull()
	if err != nil {
		return err
	}
	c, err := e.newContainer("exec", img, []string{"sleep", "1000"})
	if err != nil {
		return err
	}
	defer e.removeContainer(c)
	task, err := c.NewTask(e.ctx, cio.NullIO)
	if err != nil {
		return fmt.Errorf("NewTask: %w", err)
	}
	if err := task.Start(e.ctx); err != nil {
		return fmt.Errorf("Start: %w", err)
	}
	spec, err := c.Spec(e.ctx)
	if err != nil {
		return fmt.Errorf("Spec: %w", err)
	}
	pspec := spec.Process
	pspec.Args = []string{"sh", "-c", "echo exec-out; echo exec-err >&2; exit 5"}
	var stdout, stderr buffer
	p, err := task.Exec(e.ctx, "exec1", pspec, cio.NewCreator(cio.WithStreams(nil, &stdout, &stderr)))
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
	code, _, err := (<-exitCh).Result()
	if err != nil {
		return fmt.Errorf("exec exit status: %w", err)
	}
	if err := expect("exec exit status", code, 5); err != nil {
		return err
	}
	deleted, err := p.Delete(e.ctx)
	if err != nil {
		return fmt.Errorf("exec Delete: %w", err)
	}
	if err := expect("exit status from exec Delete", deleted.ExitCode(), 5); err != nil {
		return err
	}
	if err := expect("exec stdout", stdout.String(), "exec-out\n"); err != nil {
		return err
	}
	if err := expect("exec stderr", stderr.String(), "exec-err\n"); err != nil {
		return err
	}
	if err := task.Kill(e.ctx, signalKill); err != nil {
		return fmt.Errorf("Kill: %w", err)
	}
	if _, err := task.Delete(e.ctx, containerd.WithProcessKill); err != nil {
		return fmt.Errorf("Delete: %w", err)
	}
	return nil
}
