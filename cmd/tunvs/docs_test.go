package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The committed man pages and completions are what the flags say now:
// change a flag, run `make docs`.
func TestGeneratedDocs(t *testing.T) {
	files, err := genDocs()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join("../../docs", name))
		if err != nil {
			t.Errorf("%v (run make docs)", err)
			continue
		}
		if string(got) != want {
			t.Errorf("docs/%s differs from what the flags generate: run make docs", name)
		}
	}
	// Every flag of every command is in the man page and the completion.
	man, bash := files["man/tunvs.8"], files["completion/tunvs.bash"]
	for _, c := range docCommands() {
		words, _ := flagWords(c.fs)
		for _, w := range words {
			if !strings.Contains(bash, w) || !strings.Contains(man, strings.ReplaceAll(strings.TrimLeft(w, "-"), "-", `\-`)) {
				t.Errorf("%s %s is missing from the man page or the completion", c.name, w)
			}
		}
	}
}

// The bash completion works: what bash offers for a few command lines.
func TestBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	for _, c := range []struct {
		script, line string
		want         []string
	}{
		{"tunvs.bash", "tunvs ", []string{"run", "lab", "--version"}},
		{"tunvs.bash", "tunvs run --ru", []string{"--rules", "--rule"}},
		{"tunvs.bash", "tunvs lab -s w", []string{"wrr", "wlc"}},
		{"tunvs.bash", "tunvs lab --attach ", []string{"tap", "tun"}},
		{"tunvs.bash", "tunvs lab exec ", []string{"client", "director", "rs1", "--state-dir"}},
		{"tunvs.bash", "tunvs lab ", []string{"exec", "walk", "--netns", "-r"}},
		{"tunvsadm.bash", "tunvsadm --so", []string{"--socket", "--sort"}},
		{"tunvsadm.bash", "tunvsadm -A -t 10.0.0.1:80 -s l", []string{"lc", "lblc", "lblcr"}},
	} {
		script := `source "$1"; COMP_WORDS=($2); [[ "$2" == *" " ]] && COMP_WORDS+=(""); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); ` +
			`${3}; printf '%s\n' "${COMPREPLY[@]}"`
		fn := "_" + strings.TrimSuffix(c.script, ".bash")
		out, err := exec.Command(bash, "-c", script, "bash", filepath.Join("../../docs/completion", c.script), c.line, fn).CombinedOutput()
		if err != nil {
			t.Errorf("%q: %v\n%s", c.line, err, out)
			continue
		}
		got := strings.Fields(string(out))
		for _, w := range c.want {
			found := false
			for _, g := range got {
				found = found || g == w
			}
			if !found {
				t.Errorf("%q: %q not offered; got %q", c.line, w, got)
			}
		}
	}
}

// The zsh completion parses, and hands _arguments each command's flags
// (zsh's own functions replaced by ones that print their arguments).
func TestZshCompletion(t *testing.T) {
	zsh, err := exec.LookPath("zsh")
	if err != nil {
		t.Skip("no zsh")
	}
	for _, c := range []struct {
		file  string
		words []string
		want  []string
	}{
		{"_tunvs", []string{"tunvs", "run", ""}, []string{"*--rule[one ipvsadm command]:rule: ", "--rules[ipvsadm-save rules file]:file:_files"}},
		{"_tunvs", []string{"tunvs", "lab", ""}, []string{"(-s --scheduler)-s[scheduler ", "--attach[with --netns]:attach:(tap tun)", "1::subcommand:(exec walk capture down)"}},
		{"_tunvs", []string{"tunvs", "lab", "exec", ""}, []string{"1:host:(client router director lan rs1 rs2)", "--state-dir[the lab's state directory]:directory:_files -/"}},
		{"_tunvsadm", []string{"tunvsadm", ""}, []string{"-s[scheduler]:scheduler:(", "--socket[the control socket]:file:_files", "--persistent-conn"}},
	} {
		script := `words=("${(@)argv[2,-1]}"); CURRENT=$#words; _arguments(){ print -rl -- "$@" }; compadd(){ print -rl -- "$@" }; source "$1"`
		out, err := exec.Command(zsh, append([]string{"-fc", script, "zsh", filepath.Join("../../docs/completion/zsh", c.file)}, c.words...)...).CombinedOutput()
		if err != nil {
			t.Errorf("%v: %v\n%s", c.words, err, out)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("%v: no %q in:\n%s", c.words, w, out)
			}
		}
	}
}
