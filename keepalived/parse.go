// Package keepalived reads keepalived's configuration (keepalived.conf(5),
// keepalived 2.2) and maps its LVS part onto tunvs's rules and health
// checks: virtual_server and virtual_server_group, real_server, and the
// checkers. What tunvs does not have is said in a warning naming the file
// and line (VRRP, notification scripts, keywords it does not know);
// what cannot be honoured safely (a bad address, DR or TUN forwarding) is
// an error naming the file and line, and nothing is loaded.
//
// The reading follows keepalived's parser (lib/parser.c): `include` with
// glob patterns relative to the including file's directory, comments
// from '#' or '!', conditional lines (`@ID` and `@^ID` against the config
// id, keepalived's -i), and `$NAME=VALUE` parameters substituted as
// `$NAME` or `${NAME}`.
package keepalived

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Pos is where a statement is: file and line.
type Pos struct {
	File string
	Line int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Warning is something in the file tunvs reads but does not do.
type Warning struct {
	Pos
	Msg string
}

func (w Warning) String() string { return w.Pos.String() + ": " + w.Msg }

// Error is a configuration refused, at its place.
type Error struct {
	Pos
	Err error
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// ErrConfig wraps every refusal.
var ErrConfig = errors.New("keepalived.conf")

func errAt(p Pos, format string, a ...any) error {
	return &Error{Pos: p, Err: fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, a...))}
}

// stmt is a keyword, its arguments, and its block if it has one.
type stmt struct {
	Pos
	words    []string
	hasBlock bool
	block    []stmt
}

func (s stmt) key() string { return s.words[0] }

func (s stmt) arg(i int) string {
	if i < len(s.words) {
		return s.words[i]
	}
	return ""
}

// token is a word or a brace; eol ends a line.
type token struct {
	Pos
	text string
	eol  bool
}

// maxIncludeDepth bounds include's recursion (a file including itself).
const maxIncludeDepth = 16

// reader reads the files into tokens.
type reader struct {
	id     string
	params map[string]string
	toks   []token
	warn   []Warning
}

func (r *reader) file(path string, depth int, from Pos) error {
	if depth > maxIncludeDepth {
		return errAt(from, "include nested more than %d deep (does a file include itself?)", maxIncludeDepth)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if depth == 0 {
			return fmt.Errorf("%w: %v", ErrConfig, err)
		}
		return errAt(from, "include: %v", err)
	}
	for i, line := range strings.Split(string(data), "\n") {
		p := Pos{File: path, Line: i + 1}
		line = stripComment(strings.TrimRight(line, "\r"))
		t := strings.TrimSpace(line)
		if t == "" {
			continue
		}
		// Includes are found before conditions and parameters, as
		// keepalived's check_include does.
		if f := strings.Fields(t); isInclude(f[0]) {
			if len(f) < 2 {
				return errAt(p, "%s needs a file name", f[0])
			}
			pat := f[1]
			if !filepath.IsAbs(pat) {
				pat = filepath.Join(filepath.Dir(path), pat)
			}
			matches, err := filepath.Glob(pat)
			if err != nil {
				return errAt(p, "include %s: %v", f[1], err)
			}
			if len(matches) == 0 {
				r.warn = append(r.warn, Warning{p, fmt.Sprintf("include %s: no file matches", f[1])})
			}
			for _, m := range matches {
				if err := r.file(m, depth+1, p); err != nil {
					return err
				}
			}
			continue
		}
		if t[0] == '@' {
			word, rest := t[1:], ""
			if k := strings.IndexAny(word, " \t"); k >= 0 {
				word, rest = word[:k], word[k:]
			}
			match := word == r.id
			if strings.HasPrefix(word, "^") {
				match = word[1:] != r.id
			}
			if !match {
				continue
			}
			t = strings.TrimSpace(rest)
			if t == "" {
				continue
			}
		}
		if t[0] == '$' && strings.Contains(t, "=") {
			name, val, _ := strings.Cut(t[1:], "=")
			if validParam(name) {
				r.params[name] = strings.TrimSpace(val)
				continue
			}
		}
		t = r.substitute(t)
		for _, w := range splitWords(t) {
			r.toks = append(r.toks, token{Pos: p, text: w})
		}
		r.toks = append(r.toks, token{Pos: p, eol: true})
	}
	return nil
}

func isInclude(w string) bool {
	switch w {
	case "include", "includer", "includem", "includew", "includeb", "includea":
		return true
	}
	return false
}

func validParam(n string) bool {
	if n == "" || (n[0] >= '0' && n[0] <= '9') {
		return false
	}
	for _, c := range n {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// substitute replaces ${NAME}, and $NAME followed by white space or the
// end, with its value; again in what it put in, a bounded number of
// times. An undefined parameter is left as it is.
func (r *reader) substitute(t string) string {
	if len(r.params) == 0 {
		return t
	}
	for range 16 {
		changed := false
		for n, v := range r.params {
			if s := strings.ReplaceAll(t, "${"+n+"}", v); s != t {
				t, changed = s, true
			}
			var b strings.Builder
			for i := 0; i < len(t); {
				j := strings.Index(t[i:], "$"+n)
				if j < 0 {
					b.WriteString(t[i:])
					break
				}
				end := i + j + 1 + len(n)
				if end == len(t) || t[end] == ' ' || t[end] == '\t' {
					b.WriteString(t[i : i+j])
					b.WriteString(v)
					changed = true
				} else {
					b.WriteString(t[i:end])
				}
				i = end
			}
			t = b.String()
		}
		if !changed {
			break
		}
	}
	return t
}

// stripComment cuts a line at '#' or '!' outside double quotes.
func stripComment(l string) string {
	q := false
	for i := 0; i < len(l); i++ {
		switch l[i] {
		case '"':
			q = !q
		case '#', '!':
			if !q {
				return l[:i]
			}
		}
	}
	return l
}

// splitWords splits at white space, braces being words of their own;
// double quotes group a word.
func splitWords(l string) []string {
	var out []string
	var cur strings.Builder
	in, q := false, false
	flush := func() {
		if in {
			out = append(out, cur.String())
			cur.Reset()
			in = false
		}
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case c == '"':
			q = !q
			in = true
		case q:
			cur.WriteByte(c)
		case c == ' ' || c == '\t':
			flush()
		case c == '{' || c == '}':
			flush()
			out = append(out, string(c))
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	flush()
	return out
}

// parse builds the statements from the tokens: a keyword and its words to
// the end of the line; a '{' (on that line, or alone on the next) opens
// its block, which a '}' closes.
func parse(toks []token) ([]stmt, error) {
	i := 0
	var block func(depth int, open Pos) ([]stmt, error)
	block = func(depth int, open Pos) ([]stmt, error) {
		var out []stmt
		for {
			for i < len(toks) && toks[i].eol {
				i++
			}
			if i >= len(toks) {
				if depth > 0 {
					return nil, errAt(open, "'{' is never closed")
				}
				return out, nil
			}
			if toks[i].text == "}" {
				if depth == 0 {
					return nil, errAt(toks[i].Pos, "'}' without '{'")
				}
				i++
				return out, nil
			}
			if toks[i].text == "{" {
				// A block without a keyword (e.g. a stray one):
				// read and drop it.
				p := toks[i].Pos
				i++
				if _, err := block(depth+1, p); err != nil {
					return nil, err
				}
				continue
			}
			s := stmt{Pos: toks[i].Pos}
			for i < len(toks) && !toks[i].eol && toks[i].text != "{" && toks[i].text != "}" {
				s.words = append(s.words, toks[i].text)
				i++
			}
			j := i
			for j < len(toks) && toks[j].eol {
				j++
			}
			if j < len(toks) && toks[j].text == "{" && (i == j || (j+1 < len(toks) && toks[j+1].eol)) {
				i = j + 1
				b, err := block(depth+1, s.Pos)
				if err != nil {
					return nil, err
				}
				s.hasBlock, s.block = true, b
			}
			out = append(out, s)
		}
	}
	return block(0, Pos{})
}
