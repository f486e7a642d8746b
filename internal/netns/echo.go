//go:build linux

package netns

import (
	"io"
	"net"
)

// Serve listens on addr (network "tcp", "tcp4" or "tcp6") in the host,
// through Do, and runs handle on a goroutine of its own for every
// connection it accepts; handle closes it. Closing the listener stops
// the accepting.
func (h *Host) Serve(network, addr string, handle func(net.Conn)) (net.Listener, error) {
	var ln net.Listener
	if err := h.Do(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	}); err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return ln, nil
}

// ListenEcho is Serve with an echo: each connection gets back what it
// sends, until either side closes.
func (h *Host) ListenEcho(network, addr string) (net.Listener, error) {
	return h.Serve(network, addr, func(c net.Conn) {
		defer c.Close()
		io.Copy(c, c)
	})
}
