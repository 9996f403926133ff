// gproxy: a transparent gRPC proxy on unix sockets that logs each call's
// method, start time and duration (and each streamed reply's time).
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

type raw struct{}

func (raw) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (raw) Unmarshal(d []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), d...)
	return nil
}
func (raw) String() string { return "proto" }
func (raw) Name() string   { return "proto" }

var t0 = time.Now()
var mu sync.Mutex
var topicRe = regexp.MustCompile(`/tasks/[a-z-]+|/containers/[a-z]+|/snapshot/[a-z]+`)

func logf(f string, a ...interface{}) {
	mu.Lock()
	defer mu.Unlock()
	fmt.Fprintf(os.Stderr, "%10.3f "+f+"\n", append([]interface{}{float64(time.Since(t0).Microseconds()) / 1000}, a...)...)
}

func main() {
	listen, target := os.Args[1], os.Args[2]
	os.Remove(listen)
	l, err := net.Listen("unix", listen)
	if err != nil {
		panic(err)
	}
	cc, err := grpc.Dial("unix://"+target, grpc.WithInsecure(), grpc.WithDefaultCallOptions(grpc.ForceCodec(raw{})))
	if err != nil {
		panic(err)
	}
	srv := grpc.NewServer(grpc.CustomCodec(raw{}), grpc.UnknownServiceHandler(func(_ interface{}, ss grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(ss)
		md, _ := metadata.FromIncomingContext(ss.Context())
		ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ss.Context(), md))
		defer cancel()
		start := time.Now()
		desc := &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
		cs, err := cc.NewStream(ctx, desc, method)
		if err != nil {
			return err
		}
		go func() {
			for {
				var m []byte
				if err := ss.RecvMsg(&m); err != nil {
					cs.CloseSend()
					return
				}
				cs.SendMsg(&m)
			}
		}()
		n := 0
		for {
			var m []byte
			err := cs.RecvMsg(&m)
			if err == io.EOF {
				break
			}
			if err != nil {
				logf("%-50s %8.3f ms ERR %v", method, float64(time.Since(start).Microseconds())/1000, err)
				return err
			}
			n++
			if method == "/containerd.services.events.v1.Events/Subscribe" {
				logf("EVENT %s", topicRe.FindString(string(m)))
			}
			if n == 1 {
				if h, err := cs.Header(); err == nil {
					ss.SendHeader(h)
				}
			}
			if err := ss.SendMsg(&m); err != nil {
				return err
			}
		}
		ss.SetTrailer(cs.Trailer())
		logf("%-50s %8.3f ms (started %.3f)", method, float64(time.Since(start).Microseconds())/1000, float64(start.Sub(t0).Microseconds())/1000)
		return nil
	}))
	srv.Serve(l)
}
