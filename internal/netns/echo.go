package netns

import (
	"io"
	"net"
)

// ListenEcho listens on addr (network "tcp", "tcp4" or "tcp6") in the
// host, through Do, and sends every connection it accepts back what it
// receives, until either side closes. Closing the listener stops it.
func (h *Host) ListenEcho(network, addr string) (net.Listener, error) {
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
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln, nil
}
