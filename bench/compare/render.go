package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// baseline is the kernel director the ratios are against: IPVS when it
// ran, else the kernel's nftables NAT.
func baseline(res []result) *result {
	for _, name := range []string{"ipvs", "nft"} {
		for i := range res {
			if res[i].Director == name && res[i].Skipped == "" {
				return &res[i]
			}
		}
	}
	return nil
}

// ratio is the figure relative to the baseline, oriented so that above 1
// is better than the kernel.
func ratio(k string, v, base float64) float64 {
	if base == 0 || v == 0 {
		return math.NaN()
	}
	if lowerBetter[k] {
		return base / v
	}
	return v / base
}

func renderTable(res []result, meta map[string]any) string {
	var b strings.Builder
	base := baseline(res)
	fmt.Fprintf(&b, "tunvs compare — %v, commit %v, %v, %vs per workload\n\n", meta["date"], meta["commit"], meta["machine"], meta["seconds"])
	fmt.Fprintf(&b, "| workload | unit |")
	for _, r := range res {
		fmt.Fprintf(&b, " %s |", r.Director)
	}
	fmt.Fprintf(&b, "\n|---|---|")
	for range res {
		fmt.Fprintf(&b, "---|")
	}
	fmt.Fprintln(&b)
	for _, w := range workloads {
		if strings.HasPrefix(w.key, "flows_") && !anyHas(res, w.key) {
			continue // the flows workload was skipped (-flows 0)
		}
		label := w.label
		if g, ok := meta["flows_gogc"]; ok {
			label = strings.ReplaceAll(label, "GOGC=?", fmt.Sprintf("GOGC=%v", g))
		}
		fmt.Fprintf(&b, "| %s | %s |", label, w.unit)
		for _, r := range res {
			v, ok := r.Figures[w.key]
			switch {
			case r.Skipped != "":
				fmt.Fprintf(&b, " — |")
			case !ok:
				fmt.Fprintf(&b, " n/a |")
			case base != nil && base.Director != r.Director && base.Figures[w.key] != 0 && !math.IsNaN(ratio(w.key, v, base.Figures[w.key])):
				fmt.Fprintf(&b, " %.4g (%.2fx) |", v, ratio(w.key, v, base.Figures[w.key]))
			default:
				fmt.Fprintf(&b, " %.4g |", v)
			}
		}
		fmt.Fprintln(&b)
	}
	if base != nil {
		fmt.Fprintf(&b, "\nRatios are to %s, oriented so that above 1x is better than the kernel.\n", base.Director)
	}
	if n, ok := meta["rounds"].(float64); ok && n > 1 {
		fmt.Fprintf(&b, "Each figure is the median of %.0f rounds, the directors taking turns in each (the flows workload ran once).\n", n)
	} else if n, ok := meta["rounds"].(int); ok && n > 1 {
		fmt.Fprintf(&b, "Each figure is the median of %d rounds, the directors taking turns in each (the flows workload ran once).\n", n)
	}
	if u, ok := meta["udp"]; ok {
		fmt.Fprintf(&b, "UDP: %v, one way to the real servers for the whole window; received is what the real servers read, loss is 1 - received/sent.\n", u)
	}
	if fl, ok := meta["flows"]; ok {
		fmt.Fprintf(&b, "Flows: %v.\n", fl)
	}
	for _, r := range res {
		if r.Skipped != "" {
			fmt.Fprintf(&b, "- %s skipped: %s\n", r.Director, r.Skipped)
		}
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s: %s\n", r.Director, n)
		}
	}
	return b.String()
}

// renderSVG draws the ratios to the baseline as grouped bars, one group
// per workload, a line at 1x.
func renderSVG(res []result) string {
	base := baseline(res)
	var ran []result
	for _, r := range res {
		if r.Skipped == "" {
			ran = append(ran, r)
		}
	}
	// Only workloads the baseline has a figure for can be drawn as ratios.
	var wls []struct{ key, label, unit string }
	for _, wl := range workloads {
		if base != nil && base.Figures[wl.key] != 0 && !notCharted[wl.key] {
			wls = append(wls, wl)
		}
	}
	const w, h, left, top, bottom = 900, 420, 60, 30, 110
	colors := []string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2"}
	groupW := float64(w-left-20) / float64(max(len(wls), 1))
	maxR := 1.5
	for _, r := range ran {
		for _, wl := range wls {
			if base != nil {
				if v := ratio(wl.key, r.Figures[wl.key], base.Figures[wl.key]); !math.IsNaN(v) && v > maxR {
					maxR = v
				}
			}
		}
	}
	y := func(v float64) float64 { return top + (1-v/maxR)*float64(h-top-bottom) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14">Throughput and latency as a ratio to %s (above 1 is better)</text>`+"\n", left, baseName(base))
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#888" stroke-dasharray="4"/>`+"\n", left, w-20, y(1), y(1))
	fmt.Fprintf(&b, `<text x="5" y="%.1f">1x</text>`+"\n", y(1)+4)
	for gi, wl := range wls {
		x0 := float64(left) + float64(gi)*groupW
		barW := (groupW - 10) / float64(max(len(ran), 1))
		for ri, r := range ran {
			if base == nil {
				continue
			}
			v := ratio(wl.key, r.Figures[wl.key], base.Figures[wl.key])
			if math.IsNaN(v) {
				continue
			}
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %.2fx</title></rect>`+"\n",
				x0+5+float64(ri)*barW, y(v), barW-1, y(0)-y(v), colors[ri%len(colors)], html.EscapeString(r.Director), html.EscapeString(wl.label), v)
		}
		fmt.Fprintf(&b, `<text transform="translate(%.1f,%d) rotate(35)">%s</text>`+"\n", x0+8, h-bottom+14, html.EscapeString(wl.label))
	}
	for ri, r := range ran {
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			left+ri*110, h-14, colors[ri%len(colors)], left+ri*110+14, h-5, html.EscapeString(r.Director))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// anyHas reports whether any director has figure k.
func anyHas(res []result, k string) bool {
	for _, r := range res {
		if _, ok := r.Figures[k]; ok {
			return true
		}
	}
	return false
}

func baseName(base *result) string {
	if base == nil {
		return "the kernel"
	}
	return "the kernel's " + map[string]string{"ipvs": "IPVS", "nft": "nftables NAT"}[base.Director]
}
