//go:build !linux

package director

func availPages() int { return noMemInfo }
