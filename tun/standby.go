package tun

// Standby is a queue of a multi-queue device that can be taken out of the
// device's set and put back (Config.Standby; Linux only).
type Standby interface {
	// Detach takes the queue out of the device's set: the kernel sends
	// it nothing more and drops what it held, and its reader waits
	// until Attach.
	Detach() error
	// Attach puts the queue back in the device's set.
	Attach() error
	// Attached says whether the queue is in the device's set.
	Attached() bool
}
