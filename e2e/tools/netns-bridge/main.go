// netns-bridge joins the host's loopback and the real node's network namespace,
// the only two networks the test bed may use, without giving the host an address
// in the namespace's range:
//
//   - --forward LISTEN=TARGET (repeatable) listens on LISTEN inside the namespace
//     and dials TARGET on the host: the kubelet, kube-proxy, CoreDNS and pods reach
//     the API server (and Cassandra) on the host's 127.0.0.1 this way.
//   - --connect-proxy SOCKET serves HTTP CONNECT on a Unix socket for the API
//     server's egress selector: it dials loopback targets (the aggregated
//     metrics-server, kwok) on the host and everything else (the kubelet, pods,
//     Services) inside the namespace, so logs, exec and port-forward work.
//
// Sockets belong to the namespace of the thread that creates them, so each one is
// created on a locked OS thread switched into the wanted namespace.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type forwards []string

func (f *forwards) String() string     { return strings.Join(*f, ",") }
func (f *forwards) Set(v string) error { *f = append(*f, v); return nil }

func main() {
	var fwd forwards
	netnsPath := flag.String("netns", "", "the node's network namespace, e.g. /run/netns/NAME")
	proxySocket := flag.String("connect-proxy", "", "Unix socket to serve HTTP CONNECT on")
	flag.Var(&fwd, "forward", "LISTEN=TARGET: listen inside the namespace, dial TARGET on the host (repeatable)")
	flag.Parse()
	if *netnsPath == "" {
		log.Fatal("--netns is required")
	}
	target, err := os.Open(*netnsPath)
	if err != nil {
		log.Fatalf("opening the namespace: %v", err)
	}
	host, err := os.Open("/proc/self/ns/net")
	if err != nil {
		log.Fatalf("opening the host namespace: %v", err)
	}
	b := &bridge{node: target, host: host}

	for _, f := range fwd {
		listen, dial, ok := strings.Cut(f, "=")
		if !ok {
			log.Fatalf("--forward %q: want LISTEN=TARGET", f)
		}
		var l net.Listener
		err := b.inNode(func() (err error) { l, err = net.Listen("tcp", listen); return })
		if err != nil {
			log.Fatalf("--forward %s: listening in the namespace: %v", f, err)
		}
		log.Printf("forwarding %s (node namespace) to %s (host)", listen, dial)
		go serve(l, func() (net.Conn, error) { return net.DialTimeout("tcp", dial, 10*time.Second) })
	}
	if *proxySocket != "" {
		os.Remove(*proxySocket)
		l, err := net.Listen("unix", *proxySocket)
		if err != nil {
			log.Fatalf("--connect-proxy %s: %v", *proxySocket, err)
		}
		log.Printf("HTTP CONNECT proxy on %s", *proxySocket)
		go b.serveConnect(l)
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	if *proxySocket != "" {
		os.Remove(*proxySocket)
	}
}

type bridge struct{ node, host *os.File }

// inNode runs f on an OS thread switched into the node's namespace; the thread is
// switched back before it is released, so no other goroutine ever runs there.
func (b *bridge) inNode(f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Setns(int(b.node.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("entering the namespace: %w", err)
	}
	ferr := f()
	if err := unix.Setns(int(b.host.Fd()), unix.CLONE_NEWNET); err != nil {
		// A thread stuck in the wrong namespace must not be reused: end the process.
		log.Fatalf("returning to the host namespace: %v", err)
	}
	return ferr
}

func serve(l net.Listener, dial func() (net.Conn, error)) {
	for {
		c, err := l.Accept()
		if err != nil {
			log.Printf("accept on %s: %v", l.Addr(), err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go func() {
			up, err := dial()
			if err != nil {
				log.Printf("dial for %s: %v", c.RemoteAddr(), err)
				c.Close()
				return
			}
			pipe(c, up)
		}()
	}
}

func (b *bridge) serveConnect(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			log.Printf("accept on %s: %v", l.Addr(), err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go b.connect(c)
	}
}

func (b *bridge) connect(c net.Conn) {
	reader := bufio.NewReader(c)
	req, err := http.ReadRequest(reader)
	if err != nil || req.Method != http.MethodConnect {
		fmt.Fprint(c, "HTTP/1.1 405 Method Not Allowed\r\n\r\n")
		c.Close()
		return
	}
	address := req.Host
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		fmt.Fprint(c, "HTTP/1.1 400 Bad Request\r\n\r\n")
		c.Close()
		return
	}
	var up net.Conn
	if isLoopback(host) {
		up, err = net.DialTimeout("tcp", address, 10*time.Second)
	} else {
		// Only the socket's creation needs the namespace; connecting (and the
		// timeout) happens on whatever thread the runtime picks.
		err = b.inNode(func() (err error) {
			up, err = net.DialTimeout("tcp", address, 10*time.Second)
			return
		})
	}
	if err != nil {
		log.Printf("CONNECT %s: %v", address, err)
		fmt.Fprint(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		c.Close()
		return
	}
	fmt.Fprint(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	// Bytes the client sent after its request are already in the reader's buffer.
	if n := reader.Buffered(); n > 0 {
		buffered, _ := reader.Peek(n)
		up.Write(buffered)
	}
	pipe(c, up)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func pipe(a, b net.Conn) {
	done := make(chan struct{}, 2)
	copyHalf := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if tcp, ok := dst.(interface{ CloseWrite() error }); ok {
			tcp.CloseWrite()
		}
		done <- struct{}{}
	}
	go copyHalf(a, b)
	go copyHalf(b, a)
	<-done
	<-done
	a.Close()
	b.Close()
}
