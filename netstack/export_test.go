package netstack

// ForwardPayload is forwardPayload, for the gVisor forwarding race tests.
var ForwardPayload = forwardPayload
