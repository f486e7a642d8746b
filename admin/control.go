package admin

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/internal/guard"
	"github.com/tunvs/tunvs/nat"
)

// ProtocolVersion is the control protocol's version. A request names the
// version it speaks; the daemon refuses others.
const ProtocolVersion = 1

// Request is one tunvsadm invocation: its arguments, and for -R the rules
// it read from standard input.
type Request struct {
	V     int      `json:"v"`
	Args  []string `json:"args"`
	Stdin string   `json:"stdin,omitempty"`
	// Stream: the client takes the answer in parts (Response.More). A
	// daemon that predates it ignores it and answers in one part, which
	// such a client reads the same way.
	Stream bool `json:"stream,omitempty"`
}

// Response carries what tunvsadm prints and its exit code. Asked to
// stream, the daemon sends a large answer as several Responses, each
// with the next part of the output and More set, then a last one with the
// rest, the error and the exit code.
type Response struct {
	V      int    `json:"v"`
	Output string `json:"output,omitempty"`
	Error  string `json:"error,omitempty"`
	Exit   int    `json:"exit"`
	More   bool   `json:"more,omitempty"`
}

// ErrNoDaemon means nothing listens on the control socket.
var ErrNoDaemon = errors.New("no tunvs daemon is running")

// Limits of the control socket. Requests are one at a time (mu), so a
// handful of connections is plenty; the cap keeps idle or stuck clients
// from taking the daemon's descriptors. A request must arrive whole
// within RequestTimeout; the largest (-R) is a rules file of a few MB.
const (
	MaxControlConns = 16
	MaxRequest      = 16 << 20
	RequestTimeout  = 30 * time.Second
	// replyTimeout bounds writing the answer to a client that stopped
	// reading.
	replyTimeout = 30 * time.Second
)

// maxRequest is MaxRequest, lowered by tests.
var maxRequest int64 = MaxRequest

// Server answers tunvsadm on a unix socket.
type Server struct {
	ln   *guard.Listener
	path string
	env  Env
	log  zerolog.Logger
	// mu serialises requests: each is validated as a whole and then
	// applied, with no other request in between (Env.Mu, when given,
	// so that the daemon's reloads take the same lock).
	mu         *sync.Mutex
	wg         sync.WaitGroup
	maxRequest int64
}

// Listen opens the control socket at path, mode 0600, owned by the
// daemon's user. A stale socket file nobody answers on is replaced.
func Listen(path string, t *nat.Table, log zerolog.Logger) (*Server, error) {
	return ListenEnv(path, Env{Table: t}, log)
}

// ListenEnv is Listen for commands run in env (the daemon passes its rate
// estimator and its event hook).
func ListenEnv(path string, env Env, log zerolog.Logger) (*Server, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another daemon is listening", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	// The umask makes the socket 0600 from its first moment; Chmod
	// below is for filesystems that ignore it.
	old := umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	gl := guard.New(ln, guard.Config{Name: "control", Max: MaxControlConns, Log: log})
	s := &Server{ln: gl, path: path, env: env, log: log, mu: env.Mu, maxRequest: maxRequest}
	if s.mu == nil {
		s.mu = new(sync.Mutex)
	}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Listener is the guarded listener, for its counters.
func (s *Server) Listener() *guard.Listener { return s.ln }

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Close stops listening and removes the socket file.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	_ = os.Remove(s.path)
	return err
}

// serve accepts until the listener is closed. Accept waits out running
// short of descriptors itself (guard.Listener), so an error here means
// the socket is closed.
func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
		}()
	}
}

func (s *Server) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(RequestTimeout))
	enc := json.NewEncoder(c)
	uc, _ := guard.Unwrap(c).(*net.UnixConn)
	if uid, ok := peerAllowed(uc); !ok {
		s.log.Warn().Int(FieldUID, uid).Msg("control: refused a client of another user")
		_ = enc.Encode(Response{V: ProtocolVersion, Error: "permission denied", Exit: 1})
		return
	}
	var req Request
	dec := json.NewDecoder(bufio.NewReader(guard.LimitReader(c, s.maxRequest)))
	err := dec.Decode(&req)
	_ = c.SetWriteDeadline(time.Now().Add(replyTimeout))
	if errors.Is(err, guard.ErrTooLarge) {
		s.ln.TooLarge(s.maxRequest)
		_ = enc.Encode(Response{V: ProtocolVersion, Error: fmt.Sprintf("request refused: larger than %d bytes", s.maxRequest), Exit: 2})
		return
	}
	if err != nil {
		_ = enc.Encode(Response{V: ProtocolVersion, Error: "bad request: " + err.Error(), Exit: 2})
		return
	}
	if req.V != ProtocolVersion {
		_ = enc.Encode(Response{V: ProtocolVersion, Error: fmt.Sprintf("protocol version %d not supported (daemon speaks %d)", req.V, ProtocolVersion), Exit: 2})
		return
	}
	if req.Stream && isConnList(req.Args) {
		// -Lc reads the table alone, which is safe to read beside
		// anything (no lock held while a slow client reads), and may
		// be a million lines: sent in parts as they are made, so
		// neither side holds the whole listing.
		s.stream(c, enc, req)
		return
	}
	s.mu.Lock()
	resp := Serve(s.env, req)
	s.mu.Unlock()
	if resp.Error != "" {
		s.log.Info().Strs(FieldArgs, req.Args).Str("error", resp.Error).Msg("control: command refused")
	} else if isChange(req.Args) {
		s.log.Info().Strs(FieldArgs, req.Args).Msg("control: table changed")
	}
	// A large -R (a rules file of megabytes, parsed into commands and a
	// diff) leaves a heap many times its size behind; the runtime would
	// keep it for minutes. Hand it back now, applied or refused.
	big := len(req.Stdin) >= bigRequest
	req.Stdin = ""
	if big {
		debug.FreeOSMemory()
	}
	_ = enc.Encode(resp)
	if len(resp.Output) >= bigRequest {
		resp.Output = ""
		debug.FreeOSMemory()
	}
}

// bigRequest is the size of a request or answer after which the memory
// it took is returned to the OS at once.
const bigRequest = 1 << 20

// streamPart is the size of the parts a streamed answer is sent in.
const streamPart = 64 << 10

// stream answers req in parts of streamPart bytes.
func (s *Server) stream(c net.Conn, enc *json.Encoder, req Request) {
	pw := &partWriter{c: c, enc: enc, buf: make([]byte, 0, streamPart+512)}
	resp := Response{V: ProtocolVersion}
	if err := ExecuteTo(s.env, req.Args, "", pw); err != nil && pw.err == nil {
		resp.Error = err.Error()
		resp.Exit = ExitCode(err)
	}
	if pw.err != nil {
		s.log.Info().Strs(FieldArgs, req.Args).Err(pw.err).Msg("control: client went away during a listing")
		return
	}
	resp.Output = string(pw.buf)
	_ = c.SetWriteDeadline(time.Now().Add(replyTimeout))
	_ = enc.Encode(resp)
	if pw.sent >= bigRequest {
		// The listing's order (16 bytes an entry) and its lines
		// are garbage now; hand the memory back, as after a large -R.
		pw.buf = nil
		debug.FreeOSMemory()
	}
}

// partWriter sends what is written to it as Responses with More set, a
// part each time streamPart bytes have gathered. After a failed send it
// fails every write, so the listing stops.
type partWriter struct {
	c    net.Conn
	enc  *json.Encoder
	buf  []byte
	err  error
	sent int // bytes sent in parts
}

func (p *partWriter) Write(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	p.buf = append(p.buf, b...)
	if len(p.buf) >= streamPart {
		// Each part has its own deadline: a listing may take longer
		// than one, a client that stops reading may not.
		_ = p.c.SetWriteDeadline(time.Now().Add(replyTimeout))
		if err := p.enc.Encode(Response{V: ProtocolVersion, Output: string(p.buf), More: true}); err != nil {
			p.err = err
			return 0, err
		}
		p.sent += len(p.buf)
		p.buf = p.buf[:0]
	}
	return len(b), nil
}

// isConnList reports whether args are a listing of the connections (-Lc).
func isConnList(args []string) bool {
	c, err := Parse(args)
	return err == nil && c.Op == OpList && c.Format&FmtConn != 0 && c.Format&(FmtSysctl|FmtTimeout|FmtDaemon) == 0
}

func isChange(args []string) bool {
	c, err := Parse(args)
	if err != nil {
		return false
	}
	switch c.Op {
	case OpList, OpSave, OpHelp, OpVersion:
		return false
	}
	return true
}

// Call sends one request to the daemon at path.
func Call(path string, req Request) (Response, error) {
	return CallTo(path, req, nil)
}

// CallTo is Call asking for the answer in parts: each part's output is
// written to out as it arrives, and the last part is returned. With out
// nil the parts are gathered into the Response returned.
func CallTo(path string, req Request, out io.Writer) (Response, error) {
	req.Stream = true
	req.V = ProtocolVersion
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return Response{}, fmt.Errorf("%w (nothing listens on %s; start one with `tunvs run`)", ErrNoDaemon, path)
		}
		return Response{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(callTimeout))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		// The daemon may have answered and closed before reading (a
		// refused peer): its answer is still there to read.
		var resp Response
		if json.NewDecoder(c).Decode(&resp) == nil && resp.Error != "" {
			return resp, nil
		}
		return Response{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	dec := json.NewDecoder(c)
	var all strings.Builder
	for {
		var resp Response
		if err := dec.Decode(&resp); err != nil {
			return Response{}, fmt.Errorf("control socket %s: bad response: %w", path, err)
		}
		if !resp.More {
			if out == nil && all.Len() > 0 {
				resp.Output = all.String() + resp.Output
			}
			return resp, nil
		}
		if out == nil {
			all.WriteString(resp.Output)
		} else if _, err := io.WriteString(out, resp.Output); err != nil {
			return Response{}, err
		}
		// A long listing goes on as long as parts keep coming.
		_ = c.SetDeadline(time.Now().Add(callTimeout))
	}
}

// callTimeout bounds a request and its answer, or the wait for the next
// part of a streamed one.
const callTimeout = 60 * time.Second
