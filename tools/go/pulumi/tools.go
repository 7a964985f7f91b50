//go:build tools

// Package tools records the Pulumi CLI main package as a dependency so that
// `go build github.com/pulumi/pulumi/pkg/v3/cmd/pulumi` run inside this
// module resolves every dependency from this module's go.mod/go.sum (pinned,
// reproducible) instead of pkg/v3's own replace-laden go.mod.
package tools

import (
	_ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
)
