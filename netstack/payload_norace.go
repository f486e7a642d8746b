//go:build !race

package netstack

import "gvisor.dev/gvisor/pkg/buffer"

// stackPayload is the buffer a frame goes to the stack in: a pooled copy
// (see payload_race.go for race builds).
func (n *NIC) stackPayload(frame []byte) buffer.Buffer { return buffer.MakeWithData(frame) }

// forwardPayload is the buffer of a packet the stack is to forward: in
// release builds, a pooled copy too (see payload_race.go).
func forwardPayload(frame []byte) buffer.Buffer { return buffer.MakeWithData(frame) }
