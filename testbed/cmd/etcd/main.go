// Command etcd is upstream etcd's server main: the few lines of go.etcd.io/etcd/v3's main.go,
// so that the server builds from the go.etcd.io/etcd/server/v3 module alone.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
