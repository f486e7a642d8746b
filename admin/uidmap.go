package admin

import (
	"fmt"
	"strings"
)

// mapUID translates uid through a uid_map's text (user_namespaces(7):
// lines of "ID-inside-ns ID-outside-ns length") to the parent namespace's
// uid; a uid the map does not cover is returned as is.
func mapUID(uidMap string, uid int) int {
	for _, l := range strings.Split(uidMap, "\n") {
		var in, out, n int64
		if c, _ := fmt.Sscan(strings.TrimSpace(l), &in, &out, &n); c != 3 {
			continue
		}
		if int64(uid) >= in && int64(uid) < in+n {
			return int(out + int64(uid) - in)
		}
	}
	return uid
}
