package director

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// availPages is si_meminfo's freeram + bufferram in 4 KiB pages, what
// update_defense_level compares with amemthresh: MemFree and Buffers of
// /proc/meminfo.
func availPages() int {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return noMemInfo
	}
	defer f.Close()
	kb, found := 0, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() && found < 2 {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 2 && (fs[0] == "MemFree:" || fs[0] == "Buffers:") {
			n, _ := strconv.Atoi(fs[1])
			kb += n
			found++
		}
	}
	if found == 0 {
		return noMemInfo
	}
	return kb / 4
}
