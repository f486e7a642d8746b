// Command tunvsadm is ipvsadm for the tunvs daemon: the same command line,
// the same output, sent over the daemon's control socket.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/tunvs/tunvs/admin"
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
		rest = append(rest, args[i])
	}
	// ipvsadm without arguments lists the table.
	if len(rest) == 0 {
		rest = []string{"-L"}
	}
	// Refuse a bad command line here, before bothering the daemon.
	c, err := admin.Parse(rest)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return 2
	}
	if c.Op == admin.OpHelp {
		fmt.Fprint(stdout, admin.Usage)
		return 0
	}
	req := admin.Request{Args: rest}
	if c.Op == admin.OpRestore {
		b, err := io.ReadAll(io.LimitReader(stdin, 8<<20))
		if err != nil {
			fmt.Fprintf(stderr, "read rules: %v\n", err)
			return 1
		}
		req.Stdin = string(b)
	}
	resp, err := admin.Call(socket, req)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		if errors.Is(err, admin.ErrNoDaemon) {
			// ipvsadm's "Can't initialize ipvs" ends with status 2.
			return 2
		}
		return 1
	}
	fmt.Fprint(stdout, resp.Output)
	if resp.Error != "" {
		fmt.Fprintf(stderr, "%s\n", resp.Error)
	}
	return resp.Exit
}
