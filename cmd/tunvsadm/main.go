// Command tunvsadm is ipvsadm for the tunvs daemon: the same command line,
// the same output, sent over the daemon's control socket.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/tunvs/tunvs/admin"
	"github.com/tunvs/tunvs/internal/buildinfo"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	socket := admin.DefaultSocket()
	// --socket PATH is tunvsadm's own; everything else is ipvsadm's.
	var rest []string
	for i := 0; i < len(args); i++ {
		if args[i] == "--socket" && i+1 < len(args) {
			socket = args[i+1]
			i++
			continue
		}
		if args[i] == "--version" || args[i] == "-v" {
			fmt.Fprintln(stdout, buildinfo.String("tunvsadm"))
			return 0
		}
		rest = append(rest, args[i])
	}
	return admin.CLI(os.Args[0], rest, stdin, stdout, stderr, func(req admin.Request) (admin.Response, error) {
		// A listing arrives in parts, printed as they come (a
		// million connections are ~100 MB of text).
		return admin.CallTo(socket, req, stdout)
	})
}
