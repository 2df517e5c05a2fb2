// Package version holds the version and revision a binary was built from.
// make images stamps them with the linker (-X); a plain go build leaves the defaults.
package version

var (
	// Version is the release (git describe) the binary was built from.
	Version = "dev"
	// Revision is the full commit hash the binary was built from.
	Revision = "unknown"
)

// String is "Version (Revision)", for --version flags and logs.
func String() string { return Version + " (" + Revision + ")" }
