//go:build linux

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

// topoOf is r's topology; results saved before there were two were all
// measured on the TUN topology.
func topoOf(r result) string {
	if r.Topology == "" {
		return topoTUN
	}
	return r.Topology
}

// byTopology splits the results by topology, in the order they came.
func byTopology(res []result) (names []string, groups map[string][]result) {
	groups = map[string][]result{}
	for _, r := range res {
		t := topoOf(r)
		if groups[t] == nil {
			names = append(names, t)
		}
		groups[t] = append(groups[t], r)
	}
	return names, groups
}

func renderTable(res []result, meta map[string]any) string {
	var b strings.Builder
	fmt.Fprintf(&b, "tunvs compare — %v, commit %v, %v, %vs per workload\n", meta["date"], meta["commit"], meta["machine"], meta["seconds"])
	if f, _ := meta["tunvs_flags"].(string); f != "" {
		fmt.Fprintf(&b, "\ntunvs ran with %s added to its command line.\n", f)
	}
	names, groups := byTopology(res)
	for _, t := range names {
		fmt.Fprintf(&b, "\n%s\n\n", topologyHeading(t))
		writeTable(&b, groups[t], meta)
	}
	if len(names) > 1 {
		writeAcross(&b, names, groups)
	}
	fmt.Fprintln(&b)
	if n, ok := meta["rounds"].(float64); ok && n > 1 {
		fmt.Fprintf(&b, "Each figure is the median of %.0f rounds, the directors taking turns in each (the flows workload ran once).\n", n)
	} else if n, ok := meta["rounds"].(int); ok && n > 1 {
		fmt.Fprintf(&b, "Each figure is the median of %d rounds, the directors taking turns in each (the flows workload ran once).\n", n)
	}
	if u, ok := meta["udp"]; ok {
		fmt.Fprintf(&b, "UDP: %v, one way to the real servers for the whole window; received is what the real servers read, loss is 1 - received/sent.\n", u)
	}
	if m, ok := meta["rss"]; ok {
		fmt.Fprintf(&b, "RSS: %v.\n", m)
	}
	if fl, ok := meta["flows"]; ok {
		fmt.Fprintf(&b, "Flows: %v.\n", fl)
	}
	for _, r := range res {
		where := r.Director
		if len(names) > 1 {
			where = topoOf(r) + "/" + r.Director
		}
		if r.Skipped != "" {
			fmt.Fprintf(&b, "- %s skipped: %s\n", where, r.Skipped)
		}
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s: %s\n", where, n)
		}
	}
	return b.String()
}

// topologyHeading is a topology's title line in the table.
func topologyHeading(t string) string {
	if title, ok := topologyTitle[t]; ok {
		return "**" + title + ".**"
	}
	return "**Topology " + t + ".**"
}

// writeTable writes one topology's table, with ratios to its baseline.
func writeTable(b *strings.Builder, res []result, meta map[string]any) {
	base := baseline(res)
	fmt.Fprintf(b, "| workload | unit |")
	for _, r := range res {
		fmt.Fprintf(b, " %s |", r.Director)
	}
	fmt.Fprintf(b, "\n|---|---|")
	for range res {
		fmt.Fprintf(b, "---|")
	}
	fmt.Fprintln(b)
	for _, w := range workloads {
		if (strings.HasPrefix(w.key, "flows_") || optionalRow[w.key]) && !anyHas(res, w.key) {
			continue // the flows workload was skipped (-flows 0), or results from before the row
		}
		label := w.label
		if g, ok := meta["flows_gogc"]; ok {
			label = strings.ReplaceAll(label, "GOGC=?", fmt.Sprintf("GOGC=%v", g))
		}
		fmt.Fprintf(b, "| %s | %s |", label, w.unit)
		for _, r := range res {
			v, ok := r.Figures[w.key]
			switch {
			case r.Skipped != "":
				fmt.Fprintf(b, " — |")
			case !ok:
				fmt.Fprintf(b, " n/a |")
			case base != nil && base.Director != r.Director && base.Figures[w.key] != 0 && !math.IsNaN(ratio(w.key, v, base.Figures[w.key])):
				fmt.Fprintf(b, " %.4g (%.2fx) |", v, ratio(w.key, v, base.Figures[w.key]))
			default:
				fmt.Fprintf(b, " %.4g |", v)
			}
		}
		fmt.Fprintln(b)
	}
	if base != nil {
		fmt.Fprintf(b, "\nRatios are to %s on the same topology, oriented so that above 1x is better than the kernel.\n", base.Director)
	}
}

// writeAcross compares the topologies: for each tunvs director measured
// on more than one, its ratio to the kernel on each, and the ratio of
// those ratios to the first topology's (the target: the article's
// topology within 10% of the TUN topology's).
func writeAcross(b *strings.Builder, names []string, groups map[string][]result) {
	for _, d := range directors {
		if !strings.HasPrefix(d.name, "tunvs") {
			continue
		}
		var rs []*result
		var bases []*result
		for _, t := range names {
			base := baseline(groups[t])
			for i := range groups[t] {
				if r := &groups[t][i]; r.Director == d.name && r.Skipped == "" && base != nil {
					rs = append(rs, r)
					bases = append(bases, base)
				}
			}
		}
		if len(rs) < 2 {
			continue
		}
		fmt.Fprintf(b, "\n%s on each topology, as a ratio to the kernel on the same topology:\n\n| workload |", d.name)
		for _, r := range rs {
			fmt.Fprintf(b, " %s |", topoOf(*r))
		}
		for _, r := range rs[1:] {
			fmt.Fprintf(b, " %s / %s |", topoOf(*r), topoOf(*rs[0]))
		}
		fmt.Fprintf(b, "\n|---|%s\n", strings.Repeat("---|", 2*len(rs)-1))
		for _, w := range workloads {
			if notCharted[w.key] || bases[0].Figures[w.key] == 0 {
				continue
			}
			rat := make([]float64, len(rs))
			for i, r := range rs {
				rat[i] = ratio(w.key, r.Figures[w.key], bases[i].Figures[w.key])
			}
			fmt.Fprintf(b, "| %s |", w.label)
			for _, v := range rat {
				fmt.Fprintf(b, " %.2fx |", v)
			}
			for _, v := range rat[1:] {
				fmt.Fprintf(b, " %.2f |", v/rat[0])
			}
			fmt.Fprintln(b)
		}
	}
}

// renderSVG draws the ratios to each topology's baseline as grouped bars,
// one panel per topology, one group per workload, a line at 1x.
func renderSVG(res []result) string {
	names, groups := byTopology(res)
	const w, ph = 900, 420
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", w, ph*len(names))
	for i, t := range names {
		fmt.Fprintf(&b, `<g transform="translate(0,%d)">`+"\n", i*ph)
		title := ""
		if len(names) > 1 {
			title = t + " topology: "
		}
		renderPanel(&b, groups[t], title)
		b.WriteString("</g>\n")
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// renderPanel draws one topology's bars.
func renderPanel(b *strings.Builder, res []result, title string) {
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
	colors := []string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1"}
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
	fmt.Fprintf(b, `<text x="%d" y="18" font-size="14">%sthroughput and latency as a ratio to %s (above 1 is better)</text>`+"\n", left, html.EscapeString(title), baseName(base))
	fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#888" stroke-dasharray="4"/>`+"\n", left, w-20, y(1), y(1))
	fmt.Fprintf(b, `<text x="5" y="%.1f">1x</text>`+"\n", y(1)+4)
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
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %.2fx</title></rect>`+"\n",
				x0+5+float64(ri)*barW, y(v), barW-1, y(0)-y(v), colors[ri%len(colors)], html.EscapeString(r.Director), html.EscapeString(wl.label), v)
		}
		fmt.Fprintf(b, `<text transform="translate(%.1f,%d) rotate(35)">%s</text>`+"\n", x0+8, h-bottom+14, html.EscapeString(wl.label))
	}
	for ri, r := range ran {
		fmt.Fprintf(b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			left+ri*110, h-14, colors[ri%len(colors)], left+ri*110+14, h-5, html.EscapeString(r.Director))
	}
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
