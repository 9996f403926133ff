package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
)

func init() {
	register("resize-no-tty", "Resize the pty of a task and an exec that have no terminal: accepted, as containerd does", runResizeNoTTY)
	register("exec-tty-large", "Exec with a terminal printing ~1 MB (seq): every line arrives", runExecTTYLarge)
}

// startSleeper creates and starts a task running `sleep 1000` with no IO.
func (e *env) startSleeper(id string) (containerd.Container, containerd.Task, error) {
	img, err := e.pull()
	if err != nil {
		return nil, nil, err
	}
	c, err := e.newContainer(id, img, []string{"sleep", "1000"})
	if err != nil {
		return nil, nil, err
	}
	task, err := c.NewTask(e.ctx, cio.NullIO)
	if err != nil {
		e.removeContainer(c)
		return nil, nil, fmt.Errorf("NewTask: %w", err)
	}
	if err := task.Start(e.ctx); err != nil {
		e.removeContainer(c)
		return nil, nil, fmt.Errorf("Start: %w", err)
	}
	return c, task, nil
}

func runResizeNoTTY(e *env, _ []string) error {
	c, task, err := e.startSleeper("resize")
	if err != nil {
		return err
	}
	defer e.removeContainer(c)
	if err := task.Resize(e.ctx, 100, 40); err != nil {
		return fmt.Errorf("Resize of a task without a terminal: %w", err)
	}
	spec, err := c.Spec(e.ctx)
	if err != nil {
		return fmt.Errorf("Spec: %w", err)
	}
	pspec := spec.Process
	pspec.Args = []string{"sleep", "1000"}
	p, err := task.Exec(e.ctx, "resize-exec", pspec, cio.NullIO)
	if err != nil {
		return fmt.Errorf("Exec: %w", err)
	}
	if err := p.Start(e.ctx); err != nil {
		return fmt.Errorf("exec Start: %w", err)
	}
	if err := p.Resize(e.ctx, 100, 40); err != nil {
		return fmt.Errorf("Resize of an exec without a terminal: %w", err)
	}
	return nil
}

func runExecTTYLarge(e *env, args []string) error {
	lines := 150000 // seq 1 150000 prints about 1 MB
	if len(args) > 0 {
		n, err := strconv.Atoi(args[0])
		if err != nil {
			return fmt.Errorf("line count %q: %w", args[0], err)
		}
		lines = n
	}
	c, task, err := e.startSleeper("ttyexec")
	if err != nil {
		return err
	}
	defer e.removeContainer(c)
	spec, err := c.Spec(e.ctx)
	if err != nil {
		return fmt.Errorf("Spec: %w", err)
	}
	pspec := spec.Process
	pspec.Terminal = true
	pspec.Args = []string{"seq", "1", strconv.Itoa(lines)}
	var out buffer
	p, err := task.Exec(e.ctx, "tty-exec", pspec,
		cio.NewCreator(cio.WithStreams(nil, &out, nil), cio.WithTerminal))
	if err != nil {
		return fmt.Errorf("Exec with a terminal: %w", err)
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
	if err := expect("exec exit status", code, 0); err != nil {
		return err
	}
	// Delete waits for the output copy to finish (cio's Wait).
	if _, err := p.Delete(e.ctx); err != nil {
		return fmt.Errorf("exec Delete: %w", err)
	}
	got := strings.Split(strings.TrimRight(strings.ReplaceAll(out.String(), "\r\n", "\n"), "\n"), "\n")
	if len(got) != lines {
		last := ""
		if len(got) > 0 {
			last = got[len(got)-1]
		}
		return fmt.Errorf("got %d lines (%d bytes, last %q), want %d", len(got), len(out.String()), last, lines)
	}
	for i, l := range got {
		if l != strconv.Itoa(i+1) {
			text := out.String()
			if len(text) > 200 {
				text = text[:200]
			}
			return fmt.Errorf("line %d is %q (output starts %q)", i+1, l, text)
		}
	}
	return nil
}
