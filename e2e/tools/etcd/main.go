// Command etcd is the test bed's etcd: upstream's server entry point, built
// from the Go module proxy in a module of its own so that etcd's dependency
// versions never constrain the Kubernetes build next door.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
