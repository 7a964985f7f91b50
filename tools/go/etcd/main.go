// Command etcd is upstream's etcd server entry point (go.etcd.io/etcd/v3's
// main.go), built from the server module so that the wrapper's go.mod pins
// every dependency.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
