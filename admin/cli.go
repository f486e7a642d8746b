package admin

import (
	"errors"
	"fmt"
	"io"
)

// CLI is tunvsadm's main, minus the socket: it parses args as ipvsadm
// does, refuses a bad command line itself, and sends the rest to the
// daemon through call. What it prints and the status it returns are
// ipvsadm 1.31's, to the letter where tunvs can (parity's cli_* scenarios
// check this against the real ipvsadm). prog is the program name that
// ipvsadm's messages print (its argv[0]).
func CLI(prog string, args []string, stdin io.Reader, stdout, stderr io.Writer, call func(Request) (Response, error)) int {
	// ipvsadm without arguments lists the table.
	if len(args) == 0 {
		args = []string{"-L"}
	}
	c, err := Parse(args)
	if err != nil {
		printUsageError(stderr, prog, err)
		return ExitCode(err)
	}
	switch c.Op {
	case OpHelp:
		fmt.Fprint(stdout, Usage+"\n"+ClientUsage)
		return 0
	case OpVersion:
		fmt.Fprint(stdout, Version)
		return 0
	}
	req := Request{V: ProtocolVersion, Args: args}
	if c.Op == OpRestore {
		b, err := io.ReadAll(io.LimitReader(stdin, 8<<20))
		if err != nil {
			fmt.Fprintf(stderr, "read rules: %v\n", err)
			return 1
		}
		req.Stdin = string(b)
	}
	resp, err := call(req)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		if errors.Is(err, ErrNoDaemon) {
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

// Version is what -v prints: ipvsadm 1.31's own line, since tunvsadm
// speaks that version's command line and scripts read the line to learn
// what they may ask.
const Version = "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\n"

// printUsageError prints a refused command line as ipvsadm does.
func printUsageError(w io.Writer, prog string, err error) {
	var u *usageError
	if errors.As(err, &u) && u.tryHelp {
		fmt.Fprintf(w, "Try `%s -h' or '%s --help' for more information.\n", prog, prog)
		return
	}
	fmt.Fprintf(w, "%v\n", err)
}

// Serve runs one request against env, as the daemon does for tunvsadm.
func Serve(env Env, req Request) Response {
	out, err := ExecuteWith(env, req.Args, req.Stdin)
	resp := Response{V: ProtocolVersion, Output: out}
	if err != nil {
		resp.Error = err.Error()
		resp.Exit = ExitCode(err)
	}
	return resp
}
