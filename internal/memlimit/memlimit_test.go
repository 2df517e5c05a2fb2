package memlimit

import (
	"os"
	"path/filepath"
	"testing"
)

func TestContainer(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	v2 := write("memory.max", "1073741824\n")
	v2max := write("memory.max.unlimited", "max\n")
	v1 := write("memory.limit_in_bytes", "536870912\n")
	v1none := write("memory.limit_in_bytes.unlimited", "9223372036854771712\n")
	absent := filepath.Join(dir, "absent")
	for _, c := range []struct {
		name  string
		files []string
		want  int64
	}{
		{"cgroup v2 limit", []string{v2, v1}, 1 << 30},
		{"cgroup v2 without limit", []string{v2max, v1}, 0},
		{"cgroup v1 limit", []string{absent, v1}, 512 << 20},
		{"cgroup v1 without limit", []string{absent, v1none}, 0},
		{"no cgroup files", []string{absent}, 0},
	} {
		if got := Container(c.files); got != c.want {
			t.Errorf("%s: Container = %d, want %d", c.name, got, c.want)
		}
	}
}

func TestSetLeavesGOMEMLIMIT(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "100MiB")
	if got := Set(0.9); got != 0 {
		t.Fatalf("Set with GOMEMLIMIT set = %d, want 0 (left to the runtime)", got)
	}
}
