package main

// Man pages and shell completion, generated from the very flag sets the
// commands parse (`tunvs gen-docs DIR`, hidden; `make docs`): each command
// declares its flags and help text once, and setUsage hands them either to
// -h or to the generator. TestGeneratedDocs fails when the committed files
// differ from what the flags say now.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/pflag"

	"github.com/tunvs/tunvs/admin"
	"github.com/tunvs/tunvs/lab"
	"github.com/tunvs/tunvs/sched"
)

// Annotations on flags, for the generator.
const (
	// annDefault replaces a default that depends on where the program
	// runs (a socket path, a state directory) by its description.
	annDefault = "tunvs-doc-default"
	// annComplete is how a flag's value completes: "files", "dirs", or
	// the list of values.
	annComplete = "tunvs-complete"
)

// docDefault describes a flag's environment-dependent default.
func docDefault(fs *pflag.FlagSet, name, text string) {
	fs.SetAnnotation(name, annDefault, []string{text})
}

// completeWith says how a flag's value completes.
func completeWith(fs *pflag.FlagSet, name string, values ...string) {
	fs.SetAnnotation(name, annComplete, values)
}

// docsHook, when set, receives each command's flags and help instead of
// -h printing them.
var docsHook func(fs *pflag.FlagSet, help string)

func setUsage(fs *pflag.FlagSet, help string) {
	fs.Usage = func() {
		if docsHook != nil {
			docsHook(fs, help)
			return
		}
		fmt.Fprint(os.Stderr, help+fs.FlagUsages())
	}
}

// docCommand is one command as the generator sees it.
type docCommand struct {
	name string // "tunvs run", "tunvs lab exec", ...
	help string
	fs   *pflag.FlagSet
}

// docCommands asks every command for its flags, as -h would.
func docCommands() []docCommand {
	var cmds []docCommand
	var cur string
	docsHook = func(fs *pflag.FlagSet, help string) { cmds = append(cmds, docCommand{cur, help, fs}) }
	defer func() { docsHook = nil }()
	ctx := context.Background()
	for _, c := range []struct {
		name string
		run  func() error
	}{
		{"tunvs run", func() error { return cmdRun(ctx, []string{"--help"}) }},
		{"tunvs lab", func() error { return cmdLab(ctx, []string{"--help"}) }},
		{"tunvs lab exec", func() error { return cmdLab(ctx, []string{"exec", "--help"}) }},
		{"tunvs lab walk", func() error { return cmdLab(ctx, []string{"walk", "--help"}) }},
		{"tunvs lab capture", func() error { return cmdLab(ctx, []string{"capture", "--help"}) }},
		{"tunvs lab down", func() error { return cmdLab(ctx, []string{"down", "--help"}) }},
	} {
		cur = c.name
		c.run()
	}
	return cmds
}

func cmdGenDocs(_ context.Context, args []string) error {
	if len(args) != 1 {
		return usageError{fmt.Errorf("want one directory")}
	}
	files, err := genDocs()
	if err != nil {
		return err
	}
	for name, text := range files {
		p := filepath.Join(args[0], name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// genDocs returns the generated files by their path under docs/.
func genDocs() (map[string]string, error) {
	cmds := docCommands()
	if len(cmds) != 6 {
		return nil, fmt.Errorf("gen-docs: %d commands answered --help, want 6", len(cmds))
	}
	return map[string]string{
		"man/tunvs.8":              manTunvs(cmds),
		"man/tunvsadm.8":           manTunvsadm(),
		"completion/tunvs.bash":    bashTunvs(cmds),
		"completion/tunvsadm.bash": bashTunvsadm(),
		"completion/zsh/_tunvs":    zshTunvs(cmds),
		"completion/zsh/_tunvsadm": zshTunvsadm(),
	}, nil
}

// ---- roff

func roffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			l = `\&` + l
		}
		b.WriteString(l + "\n")
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// roffPre is help text as it is printed: no filling, no adjusting.
func roffPre(s string) string {
	return ".nf\n" + roffEscape(strings.TrimRight(s, "\n")) + "\n.fi\n"
}

func flagDefault(f *pflag.Flag) string {
	if d := f.Annotations[annDefault]; len(d) > 0 {
		return d[0]
	}
	switch f.Value.Type() {
	case "bool":
		if f.DefValue == "true" {
			return "true"
		}
		return ""
	case "stringArray", "stringSlice":
		return ""
	}
	if f.DefValue == "" || f.DefValue == "0" || f.DefValue == "0s" {
		return ""
	}
	return f.DefValue
}

func roffFlags(fs *pflag.FlagSet) string {
	var b strings.Builder
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		name := `\fB\-\-` + strings.ReplaceAll(f.Name, "-", `\-`) + `\fR`
		if f.Shorthand != "" {
			name = `\fB\-` + f.Shorthand + `\fR, ` + name
		}
		varname, usage := pflag.UnquoteUsage(f)
		if varname != "" && f.Value.Type() != "bool" {
			name += " " + `\fI` + varname + `\fR`
		}
		b.WriteString(".TP\n" + name + "\n" + roffEscape(usage))
		if d := flagDefault(f); d != "" {
			b.WriteString(" (default: " + roffEscape(d) + ")")
		}
		b.WriteString("\n")
	})
	return b.String()
}

func manTunvs(cmds []docCommand) string {
	var b strings.Builder
	b.WriteString(`.\" Generated by "tunvs gen-docs" from the flags tunvs parses: do not edit.
.TH TUNVS 8 "" "tunvs" "System Administration"
.SH NAME
tunvs \- a userspace IPVS director (NAT mode) on TUN and TAP devices
.SH SYNOPSIS
`)
	for _, c := range cmds {
		b.WriteString(".B " + c.name + "\n.RI [ flags ]\n.br\n")
	}
	b.WriteString(".B tunvs \\-\\-version\n.SH DESCRIPTION\n")
	b.WriteString(roffPre(usage))
	b.WriteString(".SH COMMANDS\n")
	for _, c := range cmds {
		b.WriteString(".SS \"" + c.name + "\"\n")
		b.WriteString(roffPre(strings.TrimSuffix(strings.TrimRight(c.help, "\n"), "Flags:")))
		b.WriteString(roffFlags(c.fs))
	}
	b.WriteString(`.SH SIGNALS
.TP
.B SIGHUP
.B tunvs run
rereads its \fB\-\-rules\fR file and applies only the difference; a bad file changes nothing.
.TP
.BR SIGINT ", " SIGTERM
stop the daemon (or the lab).
.SH ENVIRONMENT
.TP
.B TUNVS_SOCKET
the control socket, for \fBtunvs run\fR and \fBtunvsadm\fR(8).
.TP
.B XDG_RUNTIME_DIR
where the control socket and the namespace lab's state go when /run is not writable.
.SH SEE ALSO
.BR tunvsadm (8),
.BR ipvsadm (8),
.BR unshare (1)
`)
	return b.String()
}

// tunvsadmOptions are the options in tunvsadm's help texts, which are what
// its parser takes.
func tunvsadmOptions() []string {
	re := regexp.MustCompile(`(?:^|[\s|\[(])(--[a-z][a-z-]*|-[A-Za-z])\b`)
	seen := map[string]bool{}
	var opts []string
	for _, m := range re.FindAllStringSubmatch(admin.Usage+admin.ClientUsage, -1) {
		if o := m[1]; !seen[o] {
			seen[o] = true
			opts = append(opts, o)
		}
	}
	sort.Strings(opts)
	return opts
}

func manTunvsadm() string {
	var b strings.Builder
	b.WriteString(`.\" Generated by "tunvs gen-docs" from tunvsadm's help text: do not edit.
.TH TUNVSADM 8 "" "tunvs" "System Administration"
.SH NAME
tunvsadm \- ipvsadm's command line for the tunvs userspace director
.SH SYNOPSIS
.B tunvsadm
.RB [ \-\-socket
.IR PATH ]
.I ipvsadm-command
.SH DESCRIPTION
.B tunvsadm
takes
.BR ipvsadm (8)'s
command line, sends it to the daemon
.BR tunvs (8)
over its control socket and prints ipvsadm's tables byte for byte.
.SH OPTIONS
`)
	b.WriteString(roffPre(admin.Usage))
	b.WriteString(".SH TUNVSADM'S OWN OPTIONS\n")
	b.WriteString(roffPre(admin.ClientUsage))
	b.WriteString(`.SH EXIT STATUS
0 on success, 1 when the daemon refuses a command, 2 for a command line ipvsadm would refuse or when no daemon is running.
.SH SEE ALSO
.BR tunvs (8),
.BR ipvsadm (8)
`)
	return b.String()
}

// ---- bash

func flagWords(fs *pflag.FlagSet) (words []string, valued map[string]string) {
	valued = map[string]string{}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		names := []string{"--" + f.Name}
		if f.Shorthand != "" {
			names = append(names, "-"+f.Shorthand)
		}
		words = append(words, names...)
		if f.Value.Type() == "bool" || f.NoOptDefVal != "" {
			return
		}
		how := ""
		if c := f.Annotations[annComplete]; len(c) > 0 {
			how = strings.Join(c, " ")
		}
		for _, n := range names {
			valued[n] = how
		}
	})
	return words, valued
}

func bashCase(valued map[string]string) string {
	groups := map[string][]string{}
	for n, how := range valued {
		groups[how] = append(groups[how], n)
	}
	var keys []string
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("\t\tcase \"$prev\" in\n")
	for _, how := range keys {
		names := groups[how]
		sort.Strings(names)
		var act string
		switch how {
		case "files":
			act = `COMPREPLY=($(compgen -f -- "$cur"))`
		case "dirs":
			act = `COMPREPLY=($(compgen -d -- "$cur"))`
		case "":
			act = "COMPREPLY=()"
		default:
			act = `COMPREPLY=($(compgen -W "` + how + `" -- "$cur"))`
		}
		fmt.Fprintf(&b, "\t\t%s) %s; return ;;\n", strings.Join(names, "|"), act)
	}
	b.WriteString("\t\tesac\n")
	return b.String()
}

func bashTunvs(cmds []docCommand) string {
	var b strings.Builder
	b.WriteString(`# bash completion for tunvs. Generated by "tunvs gen-docs" from the flags tunvs parses: do not edit.
_tunvs() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
	local cmd="" i
	for ((i = 1; i < COMP_CWORD; i++)); do
		case "$cmd/${COMP_WORDS[i]}" in
		/run | /lab) cmd=${COMP_WORDS[i]} ;;
		lab/exec | lab/walk | lab/capture | lab/down) cmd="lab ${COMP_WORDS[i]}" ;;
		esac
	done
	case "$cmd" in
	"")
		COMPREPLY=($(compgen -W "run lab help --version" -- "$cur"))
		;;
`)
	hosts := lab.HostNamesFor(2)
	for _, c := range cmds {
		sub := strings.TrimPrefix(c.name, "tunvs ")
		words, valued := flagWords(c.fs)
		fmt.Fprintf(&b, "\t%q)\n", sub)
		b.WriteString(bashCase(valued))
		extra := ""
		switch sub {
		case "lab":
			extra = " exec walk capture down"
		case "lab exec", "lab capture":
			extra = " " + strings.Join(hosts, " ")
		}
		fmt.Fprintf(&b, "\t\tCOMPREPLY=($(compgen -W %q -- \"$cur\"))\n\t\t;;\n", strings.Join(words, " ")+extra)
	}
	b.WriteString("\tesac\n}\ncomplete -F _tunvs tunvs\n")
	return b.String()
}

func bashTunvsadm() string {
	valued := map[string]string{
		"-s": strings.Join(sched.Names(), " "), "--scheduler": strings.Join(sched.Names(), " "),
		"--socket": "files",
		"-t":       "", "-u": "", "-r": "", "-w": "", "-x": "", "-y": "", "-M": "", "-b": "",
		"--tcp-service": "", "--udp-service": "", "--real-server": "", "--weight": "",
	}
	var b strings.Builder
	b.WriteString(`# bash completion for tunvsadm. Generated by "tunvs gen-docs" from tunvsadm's help text: do not edit.
_tunvsadm() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
`)
	b.WriteString(strings.ReplaceAll(bashCase(valued), "\t\t", "\t"))
	fmt.Fprintf(&b, "\tCOMPREPLY=($(compgen -W %q -- \"$cur\"))\n}\ncomplete -F _tunvsadm tunvsadm\n", strings.Join(tunvsadmOptions(), " "))
	return b.String()
}

// ---- zsh

func zshEscape(s string) string {
	r := strings.NewReplacer(`'`, `'\''`, `[`, `\[`, `]`, `\]`, `:`, `\:`)
	// The first clause is the description.
	for _, sep := range []string{". ", "; ", " (", ": "} {
		if i := strings.Index(s, sep); i > 0 {
			s = s[:i]
		}
	}
	return r.Replace(s)
}

func zshSpecs(fs *pflag.FlagSet) []string {
	var specs []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		_, usage := pflag.UnquoteUsage(f)
		desc := "[" + zshEscape(usage) + "]"
		val := ""
		if f.Value.Type() != "bool" && f.NoOptDefVal == "" {
			how := f.Annotations[annComplete]
			switch {
			case len(how) == 0:
				val = ":" + f.Name + ": "
			case how[0] == "files":
				val = ":file:_files"
			case how[0] == "dirs":
				val = ":directory:_files -/"
			default:
				val = ":" + f.Name + ":(" + strings.Join(how, " ") + ")"
			}
		}
		rep := ""
		if strings.HasSuffix(f.Value.Type(), "Array") {
			rep = "*"
		}
		if f.Shorthand != "" {
			excl := "(-" + f.Shorthand + " --" + f.Name + ")"
			if rep != "" {
				excl = ""
			}
			specs = append(specs, fmt.Sprintf("'%s%s-%s%s%s'", excl, rep, f.Shorthand, desc, val),
				fmt.Sprintf("'%s%s--%s%s%s'", excl, rep, f.Name, desc, val))
			return
		}
		specs = append(specs, fmt.Sprintf("'%s--%s%s%s'", rep, f.Name, desc, val))
	})
	return specs
}

func zshTunvs(cmds []docCommand) string {
	var b strings.Builder
	b.WriteString(`#compdef tunvs
# zsh completion for tunvs. Generated by "tunvs gen-docs" from the flags tunvs parses: do not edit.
_tunvs() {
	if (( CURRENT == 2 )); then
		compadd run lab help --version
		return
	fi
	local sub=$words[2]
	if [[ $sub == lab && $words[3] == (exec|walk|capture|down) ]]; then
		sub="lab $words[3]"
		shift 2 words
		(( CURRENT -= 2 ))
	else
		shift words
		(( CURRENT-- ))
	fi
	case $sub in
`)
	hosts := strings.Join(lab.HostNamesFor(2), " ")
	for _, c := range cmds {
		sub := strings.TrimPrefix(c.name, "tunvs ")
		specs := zshSpecs(c.fs)
		switch sub {
		case "lab":
			specs = append(specs, "'1::subcommand:(exec walk capture down)'")
		case "lab exec":
			specs = append(specs, "'1:host:("+hosts+")'", "'*::command:_normal'")
		case "lab capture":
			specs = append(specs, "'1:host:("+hosts+")'", "'2:device: '")
		}
		fmt.Fprintf(&b, "\t%q)\n\t\t_arguments -s \\\n\t\t\t%s\n\t\t;;\n", sub, strings.Join(specs, " \\\n\t\t\t"))
	}
	b.WriteString("\tesac\n}\n_tunvs \"$@\"\n")
	return b.String()
}

func zshTunvsadm() string {
	var specs []string
	for _, o := range tunvsadmOptions() {
		switch o {
		case "-s", "--scheduler":
			specs = append(specs, fmt.Sprintf("'%s[scheduler]:scheduler:(%s)'", o, strings.Join(sched.Names(), " ")))
		case "--socket":
			specs = append(specs, "'--socket[the control socket]:file:_files'")
		default:
			specs = append(specs, "'"+o+"'")
		}
	}
	return `#compdef tunvsadm
# zsh completion for tunvsadm. Generated by "tunvs gen-docs" from tunvsadm's help text: do not edit.
_arguments \
	` + strings.Join(specs, " \\\n\t") + "\n"
}
