// Command berthgo drives a containerd-compatible daemon (berthd, or
// containerd itself) through containerd 1.6's Go client, the way Docker and
// nerdctl do. Each subcommand exercises one behaviour and exits non-zero
// with a message saying what differed.
//
// Usage:
//
//	berthgo -address SOCK -namespace NS [-image REF] SUBCOMMAND [ARGS...]
//
// Adding a subcommand: create a new .go file in this package and call
// register() from its init(); see core.go for examples.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
)

// env is what every subcommand gets: a connected client, a context in the
// test's namespace, and the global flags.
type env struct {
	client    *containerd.Client
	ctx       context.Context
	namespace string
	// image is the reference of the test image (in a local registry).
	image string
	// plainHTTP says the registry speaks HTTP, not HTTPS.
	plainHTTP bool
	// snapshotter to unpack into and prepare snapshots with.
	snapshotter string
	// runtime is the runtime name new containers get.
	runtime string
}

// command is one subcommand.
type command struct {
	help string
	run  func(e *env, args []string) error
}

var commands = map[string]command{}

// register adds a subcommand; call it from init().
func register(name, help string, run func(e *env, args []string) error) {
	if _, dup := commands[name]; dup {
		panic("berthgo: subcommand registered twice: " + name)
	}
	commands[name] = command{help: help, run: run}
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: berthgo [flags] SUBCOMMAND [ARGS...]\n\nflags:\n")
	flag.PrintDefaults()
	fmt.Fprintf(os.Stderr, "\nsubcommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-22s %s\n", n, commands[n].help)
	}
}

func main() {
	address := flag.String("address", "", "the daemon's gRPC socket (required)")
	namespace := flag.String("namespace", "berthgo", "namespace to work in")
	image := flag.String("image", "", "reference of the test image in the local registry")
	plainHTTP := flag.Bool("plain-http", true, "talk HTTP to the registry")
	snapshotter := flag.String("snapshotter", "overlayfs", "snapshotter to use")
	runtime := flag.String("runtime", "io.containerd.runc.v2", "runtime name of new containers")
	timeout := flag.Duration("timeout", 2*time.Minute, "give up (and fail) after this long")
	flag.Usage = usage
	flag.Parse()
	if flag.NArg() < 1 || *address == "" {
		usage()
		os.Exit(2)
	}
	name := flag.Arg(0)
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "berthgo: unknown subcommand %q\n", name)
		usage()
		os.Exit(2)
	}
	client, err := containerd.New(*address, containerd.WithDefaultNamespace(*namespace),
		containerd.WithTimeout(10*time.Second))
	if err != nil {
		fmt.Fprintf(os.Stderr, "berthgo %s: containerd.New(%s): %v\n", name, *address, err)
		os.Exit(1)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), *namespace), *timeout)
	defer cancel()
	e := &env{
		client:      client,
		ctx:         ctx,
		namespace:   *namespace,
		image:       *image,
		plainHTTP:   *plainHTTP,
		snapshotter: *snapshotter,
		runtime:     *runtime,
	}
	if err := cmd.run(e, flag.Args()[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "berthgo %s: FAILED: %v\n", name, err)
		os.Exit(1)
	}
	fmt.Printf("berthgo %s: ok\n", name)
}
