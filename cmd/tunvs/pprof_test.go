package main

import (
	"bytes"
	"io"
	"net/http"
	"testing"
)

// TestPprofServes checks that --pprof's listener answers with the
// runtime's profiles: the heap profile, and the block profile that it
// turns on (a profile of zero records still comes back, so the test asks
// for the index, which lists it).
func TestPprofServes(t *testing.T) {
	a, err := servePprof("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap?debug=1"} {
		resp, err := http.Get("http://" + a.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", path, resp.Status)
		}
		want := []byte("block")
		if path != "/debug/pprof/" {
			want = []byte("heap profile")
		}
		if !bytes.Contains(b, want) {
			t.Fatalf("%s: no %q in %.200s", path, want, b)
		}
	}
	if _, err := servePprof(a.String()); err == nil {
		t.Fatal("a second listener on the same address: no error")
	}
}
