package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// What a dead child left behind, even in a process group of its own (as
// envtest starts kube-apiserver and etcd), is reparented to the subreaper
// and killed by killOrphans.
func TestOrphansOfADeadChildAreKilled(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) }()
	// The shell starts two sleeps (one in a new process group) and exits at once.
	out, err := exec.Command("sh", "-c", "sleep 300 >/dev/null 2>&1 & setsid sleep 300 >/dev/null 2>&1 & echo $!; exit 0").Output()
	if err != nil {
		t.Fatal(err)
	}
	grouped, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	orphans := children(os.Getpid())
	if len(orphans) != 2 {
		t.Fatalf("children of the subreaper after the shell exited: %v, want the two sleeps", orphans)
	}
	if n := killOrphans(); n != 2 {
		t.Errorf("killed %d, want 2", n)
	}
	if left := children(os.Getpid()); len(left) != 0 {
		t.Errorf("left: %v", left)
	}
	if err := syscall.Kill(grouped, 0); err == nil {
		t.Errorf("the sleep in its own process group (%d) still runs", grouped)
	}
}
