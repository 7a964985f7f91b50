//go:build tools

// Package tools records the kwok command as a dependency so that building
// sigs.k8s.io/kwok/cmd/kwok inside this module uses this module's pinned
// go.mod/go.sum.
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
