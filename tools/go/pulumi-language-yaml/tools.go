//go:build tools

// Package tools pins the Pulumi YAML language host (cmd/pulumi-language-yaml of
// github.com/pulumi/pulumi-yaml), built by tools/setup-pulumi for the tests whose
// consumer is a Pulumi YAML program. Built from its Go module because Pulumi's
// release downloads are unreachable here.
package tools

import _ "github.com/pulumi/pulumi-yaml/cmd/pulumi-language-yaml"
