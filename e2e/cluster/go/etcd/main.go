// Command etcd is etcd v3.6 built from the Go module proxy. The etcd server module carries relative replace
// directives, so `go install go.etcd.io/etcd/server/v3@...` is refused; a main of our own that calls etcdmain
// builds the same server.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
