package tun

// The naive checksum helpers of offload_test.go, for the external test
// package (gso_test.go).
var (
	NaiveSum  = naiveSum
	NaiveFold = naiveFold
)
