//go:build linux

package netns

import (
	"fmt"
	"os"
	"slices"
)

// RemoveHost deletes a host while the topology goes on: the processes in
// its namespace are killed and its keeper stopped, so that the kernel
// destroys the namespace, and with it the devices in it, once nothing
// else holds it (a socket made there by Do holds it too). Tests use it to
// make a device disappear under the director.
func (t *Topology) RemoveHost(name string) error {
	t.mu.Lock()
	h := t.byName[name]
	if h == nil {
		t.mu.Unlock()
		return fmt.Errorf("netns: no host %s", name)
	}
	delete(t.byName, name)
	t.hosts = slices.DeleteFunc(t.hosts, func(o *Host) bool { return o == h })
	t.mu.Unlock()
	ours, _ := namespaceKeys([]*Host{h})
	killStrays(ours, map[int]bool{os.Getpid(): true, h.pid: true})
	return h.stop()
}
