package main

import (
	"fmt"
	"strings"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/events"
	"github.com/containerd/typeurl"
)

func init() {
	register("events", "Subscribe with filters: task events of one run, in order, nothing else", runEvents)
}

const readyTopic = "/berthgo/ready"

// subscribe subscribes with filters (plus the ready topic) and returns once
// the subscription is live. The Go client's Subscribe returns before its
// stream reaches the daemon and gives no signal when it has, so events
// published right after it may be missed (by containerd as by berthd): it
// publishes an event on the ready topic until one comes back. Later copies
// of that event are skipped by the callers.
func (e *env) subscribe(filters ...string) (<-chan *events.Envelope, <-chan error, func(), error) {
	ctx, cancel := contextWithCancel(e.ctx)
	ch, errs := e.client.Subscribe(ctx, append(filters, `topic=="`+readyTopic+`"`)...)
	for {
		if err := e.client.EventService().Publish(e.ctx, readyTopic, &eventstypes.ContainerCreate{ID: "ready"}); err != nil {
			cancel()
			return nil, nil, nil, fmt.Errorf("Publish(%s): %w", readyTopic, err)
		}
		select {
		case env := <-ch:
			if env.Topic == readyTopic {
				return ch, errs, cancel, nil
			}
			cancel()
			return nil, nil, nil, fmt.Errorf("before the ready event came %s", env.Topic)
		case err := <-errs:
			cancel()
			return nil, nil, nil, fmt.Errorf("subscription: %w", err)
		case <-e.ctx.Done():
			cancel()
			return nil, nil, nil, fmt.Errorf("no event published on %s ever came back", readyTopic)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func runEvents(e *env, _ []string) error {
	img, err := e.pull()
	if err != nil {
		return err
	}
	tasks, tasksErrs, stopTasks, err := e.subscribe(`topic~="^/tasks/",namespace==` + e.namespace)
	if err != nil {
		return err
	}
	defer stopTasks()
	exits, exitErrs, stopExits, err := e.subscribe(`topic=="/tasks/exit"`)
	if err != nil {
		return err
	}
	defer stopExits()
	c, err := e.newContainer("events", img, []string{"sh", "-c", "exit 4"})
	if err != nil {
		return err
	}
	defer e.removeContainer(c)
	if code, _, _, err := e.runToExit(c); err != nil {
		return err
	} else if code != 4 {
		return fmt.Errorf("exit status %d, want 4", code)
	}
	var topics []string
	for len(topics) == 0 || topics[len(topics)-1] != "/tasks/delete" {
		select {
		case env := <-tasks:
			if env.Topic == readyTopic {
				continue // the other subscription's readiness check
			}
			if env.Namespace != e.namespace {
				return fmt.Errorf("event %s of namespace %q passed the filter", env.Topic, env.Namespace)
			}
			topics = append(topics, env.Topic)
			if env.Topic == "/tasks/exit" {
				v, err := typeurl.UnmarshalAny(env.Event)
				if err != nil {
					return fmt.Errorf("decoding /tasks/exit: %w", err)
				}
				exit, ok := v.(*eventstypes.TaskExit)
				if !ok {
					return fmt.Errorf("/tasks/exit carries %T", v)
				}
				if exit.ContainerID != "events" || exit.ID != "events" || exit.ExitStatus != 4 || exit.Pid == 0 {
					return fmt.Errorf("/tasks/exit: %+v", exit)
				}
			}
		case err := <-tasksErrs:
			return fmt.Errorf("subscription (events so far: %v): %w", topics, err)
		case <-e.ctx.Done():
			return fmt.Errorf("no /tasks/delete; events so far: %v", topics)
		}
	}
	if err := expect("task events", strings.Join(topics, " "), "/tasks/create /tasks/start /tasks/exit /tasks/delete"); err != nil {
		return err
	}
	select {
	case env := <-exits:
		for env.Topic == readyTopic {
			env = <-exits
		}
		if env.Topic != "/tasks/exit" {
			return fmt.Errorf("the /tasks/exit subscription got %s", env.Topic)
		}
	case err := <-exitErrs:
		return fmt.Errorf("subscription: %w", err)
	case <-e.ctx.Done():
		return fmt.Errorf("the /tasks/exit subscription got nothing")
	}
	return nil
}
