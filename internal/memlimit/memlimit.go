// Package memlimit gives the Go runtime a soft memory limit below the
// container's: near it the garbage collector runs more often instead of the
// process being killed at a burst's high-water mark.
package memlimit

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// cgroupFiles hold the memory limit of the process's container: cgroup v2
// first, then v1.
var cgroupFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// unlimitedV1 is above any real limit: cgroup v1 reports "no limit" as a
// number near the largest int64, rounded to the page size.
const unlimitedV1 = 1 << 62

// Set sets the runtime's soft memory limit to fraction of the container's
// memory limit and returns it (0: not set). It does nothing when GOMEMLIMIT
// is set (the operator decided) or when no limit is found.
func Set(fraction float64) int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	limit := Container(cgroupFiles)
	if limit <= 0 {
		return 0
	}
	soft := int64(float64(limit) * fraction)
	debug.SetMemoryLimit(soft)
	return soft
}

// Container reads the first of files that holds a memory limit, in bytes;
// 0 when none does ("max", absent, unreadable or no limit).
func Container(files []string) int64 {
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n <= 0 || n >= unlimitedV1 {
			return 0 // "max" or no limit: the first file found decides
		}
		return n
	}
	return 0
}
