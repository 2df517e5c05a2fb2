package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// workerEnv marks the process that runs the demo; without it the process
// supervises one.
const workerEnv = "FLEETLB_DEMO_WORKER"

// supervise runs the demo in a child process and makes sure nothing it
// started outlives it. The control planes run in process groups of their own
// (envtest's Setpgid), so neither Ctrl-C nor a dying parent reaches them; a
// demo that died without stopping them (a closed pipe, a crash, SIGKILL)
// would leave kube-apiservers and etcds behind. So this process is a child
// subreaper: orphans of the worker become its children, and it kills them
// once the worker is gone. The worker gets SIGTERM if this process dies
// (Pdeathsig) and then stops everything in order.
func supervise() int {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "demo: becoming a subreaper:", err)
	}
	// A reader that went away (`| tee` on Ctrl-C) must not kill us: writes fail instead.
	signal.Ignore(syscall.SIGPIPE)
	sigs := make(chan os.Signal, 1)
	// Ctrl-C reaches the worker too (same process group): the worker stops in order.
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)

	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	worker := exec.Command(self, os.Args[1:]...)
	worker.Env = append(os.Environ(), workerEnv+"=1")
	worker.Stdin, worker.Stdout, worker.Stderr = os.Stdin, os.Stdout, os.Stderr
	worker.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := worker.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- worker.Wait() }()
	var werr error
	for waiting := true; waiting; {
		select {
		case werr = <-done:
			waiting = false
		case s := <-sigs:
			if s != os.Interrupt { // SIGINT already went to the worker's process group
				_ = worker.Process.Signal(syscall.SIGTERM)
			}
		}
	}
	if n := killOrphans(); n > 0 {
		fmt.Fprintf(os.Stderr, "demo: stopped %d processes the demo left behind\n", n)
	}
	var exit *exec.ExitError
	if errors.As(werr, &exit) {
		return max(exit.ExitCode(), 1)
	}
	return 0
}

// killOrphans kills (with their process groups) the processes that were
// reparented to this subreaper, and reaps them. It returns how many there were.
func killOrphans() int {
	killed := 0
	// Bounded: each round kills what is there now; a process that forks while
	// dying is caught by a later round.
	for range 10 {
		kids := children(os.Getpid())
		if len(kids) == 0 {
			break
		}
		for _, pid := range kids {
			_ = syscall.Kill(-pid, syscall.SIGKILL) // its group (envtest's processes lead one)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			killed++
		}
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if err != nil { // ECHILD: nothing left
				break
			}
			if pid == 0 {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	return killed
}

// children lists the processes whose parent is pid (from /proc).
func children(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) && fields[0] != "Z" {
			out = append(out, p)
		}
	}
	return out
}
